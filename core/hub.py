"""The Hugging Face Hub, reached only when the user names a repository id explicitly.

genplug's default path never touches the network: a string that is a local path is read locally, and only
a string that is not one, and has the shape of a Hub repository id (``"org/name"`` or ``"name"``), comes
here. ``huggingface_hub`` is not a dependency of genplug; it is imported on these paths only, and its errors
are turned into OSErrors that name the repository, the file and the revision. huggingface_hub itself
honours ``HF_HUB_OFFLINE``, ``HF_HUB_CACHE`` and ``local_files_only``.
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from typing import Any, Iterable, Optional

# huggingface_hub's own rule (validate_repo_id): an optional namespace and a name of ASCII letters, digits,
# "-", "_" and ".", neither starting nor ending with "-" or ".", at most 96 characters each.
_REPO_ID_PART = r"(?![-.])[A-Za-z0-9_.-]{1,96}(?<![-.])"
_REPO_ID = re.compile(rf"^(?:{_REPO_ID_PART}/)?{_REPO_ID_PART}$")

HUB_URL = "https://huggingface.co"


def looks_like_repo_id(text: Any) -> bool:
    """Whether ``text`` has the shape of a Hub repository id and is not an existing local path."""
    if not isinstance(text, str) or not _REPO_ID.match(text):
        return False
    if "--" in text or ".." in text or text.endswith(".git"):
        return False
    return not os.path.exists(text)


def cached_snapshot(repo_id: str, revision: Optional[str] = None,
                    cache_dir: "str | os.PathLike | None" = None) -> Optional[Path]:
    """The snapshot of a model repository already in the Hugging Face cache, or None; no network, no client.

    Reads the cache layout directly (``<cache>/models--org--name/{refs/<branch>, snapshots/<commit>}``) so
    that a repository fetched earlier loads without huggingface_hub. ``revision`` is a branch or tag (looked
    up in ``refs/``) or a commit id; with None, ``refs/main`` is preferred, then the newest snapshot.
    """
    repo = Path(cache_dir or default_cache_dir()) / ("models--" + repo_id.replace("/", "--"))
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    for ref in ([revision] if revision else ["main"]):
        ref_file = repo / "refs" / ref
        commit = ref_file.read_text().strip() if ref_file.is_file() else ref
        if commit and (snapshots / commit).is_dir():
            return snapshots / commit
    if revision:
        return None
    candidates = sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime)
    return candidates[-1] if candidates else None


def default_cache_dir() -> str:
    """The Hub cache huggingface_hub uses: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``."""
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
    return os.path.expandvars(os.path.expanduser(cache))


# ---------------------------------------------------------------------------------------------- downloads


def download_file(repo_id: str, filename: str, *, subfolder: str = "", revision: Optional[str] = None,
                  cache_dir: "str | os.PathLike | None" = None, force_download: bool = False,
                  proxies: Optional[dict] = None, token: "str | bool | None" = None,
                  local_files_only: bool = False) -> str:
    """The local path of ``subfolder/filename`` in the Hub repository ``repo_id``, downloaded if not cached.

    Only for strings that are not local paths. Raises FileNotFoundError when the repository, revision or
    file does not exist, or is neither cached nor downloadable (offline); PermissionError for a gated
    repository; OSError for other Hub failures.
    """
    what = "/".join(p for p in (subfolder.strip("/"), filename) if p)
    hf = _client(repo_id, f"reading {what} from it")
    options = dict(subfolder=subfolder or None, revision=revision, cache_dir=cache_dir,
                   force_download=force_download, token=token, local_files_only=local_files_only)
    if proxies is not None:  # huggingface_hub >= 1.0 ignores it with a warning (it reads HTTPS_PROXY)
        options["proxies"] = proxies
    try:
        return hf.hf_hub_download(repo_id, filename, **options)
    except Exception as exc:
        _raise_explained(exc, repo_id, what, revision, cache_dir, local_files_only)
        raise


def download_snapshot(repo_id: str, allow_patterns: Iterable[str], *, revision: Optional[str] = None,
                      cache_dir: "str | os.PathLike | None" = None, force_download: bool = False,
                      token: "str | bool | None" = None, local_files_only: bool = False) -> str:
    """The local snapshot directory of ``repo_id`` holding the files matching ``allow_patterns``.

    Only for strings that are not local paths; raises like :func:`download_file`.
    """
    allow_patterns = list(allow_patterns)
    what = " ".join(allow_patterns)
    hf = _client(repo_id, f"downloading {what} from it")
    try:
        return hf.snapshot_download(repo_id, allow_patterns=allow_patterns, revision=revision, cache_dir=cache_dir,
                                    force_download=force_download, token=token, local_files_only=local_files_only)
    except Exception as exc:
        _raise_explained(exc, repo_id, what, revision, cache_dir, local_files_only)
        raise


# ---------------------------------------------------------------------------------------------- uploads


def upload_file(local_path: "str | os.PathLike", repo_id: str, *, path_in_repo: str, commit_message: str,
                commit_description: Optional[str] = None, private: Optional[bool] = None,
                token: "str | bool | None" = None, create_pr: bool = False, revision: Optional[str] = None):
    """Upload one file to the Hub repository ``repo_id`` (created if missing); return huggingface_hub's CommitInfo.

    As transformers does, ``revision`` names a branch that is created when missing (except ``refs/pr/...``),
    and ``private`` only applies to a repository created here.
    """
    try:
        hf = importlib.import_module("huggingface_hub")
    except ImportError:
        raise ImportError(
            f"uploading {path_in_repo} to the Hub repository {repo_id!r} needs huggingface_hub, which is not "
            "installed: pip install huggingface_hub, or upload the file yourself"
        ) from None
    api = hf.HfApi(token=token)
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
    repo_id = getattr(repo_url, "repo_id", None) or repo_id  # "name" becomes "<user>/name"
    if revision is not None and not revision.startswith("refs/pr"):
        try:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        except Exception as exc:  # without write access a PR can still target an existing branch
            if not (create_pr and getattr(getattr(exc, "response", None), "status_code", None) == 403):
                raise
    return api.upload_file(path_or_fileobj=os.fspath(local_path), path_in_repo=path_in_repo, repo_id=repo_id,
                           commit_message=commit_message, commit_description=commit_description,
                           create_pr=create_pr, revision=revision)


# ---------------------------------------------------------------------------------------------- internals


def _client(repo_id: str, doing: str):
    try:
        return importlib.import_module("huggingface_hub")
    except ImportError:
        raise FileNotFoundError(
            f"{repo_id!r} is not a local path; as a Hugging Face Hub repository id, {doing} needs huggingface_hub, "
            f"which is not installed: pip install huggingface_hub, or download the repository yourself "
            f"(git clone {HUB_URL}/{repo_id}) and pass its local directory"
        ) from None


def _raise_explained(exc: Exception, repo_id: str, what: str, revision: Optional[str],
                     cache_dir: "str | os.PathLike | None", local_files_only: bool) -> None:
    """Raise an OSError saying what went wrong with ``what`` in ``repo_id``; return if ``exc`` is unknown."""
    explained = _explanation(exc, repo_id, what, revision, cache_dir, local_files_only)
    if explained is not None:
        raise explained from exc


def _explanation(exc: Exception, repo_id: str, what: str, revision: Optional[str],
                 cache_dir: "str | os.PathLike | None", local_files_only: bool) -> Optional[OSError]:
    errors = importlib.import_module("huggingface_hub.errors")
    at = f"{what} of the Hub repository {repo_id!r} (revision {revision or 'main'!r})"
    if isinstance(exc, errors.GatedRepoError):
        return PermissionError(
            f"{repo_id!r} is a gated Hub repository: request access at {HUB_URL}/{repo_id}, then log in "
            "(hf auth login) or pass token=..."
        )
    if isinstance(exc, errors.RepositoryNotFoundError):
        return FileNotFoundError(
            f"{repo_id!r} is not a local path, and the Hugging Face Hub has no repository {repo_id!r} that you can "
            "read: check the id, or for a private repository log in (hf auth login) or pass token=..."
        )
    if isinstance(exc, errors.RevisionNotFoundError):
        return FileNotFoundError(
            f"revision {revision!r} does not exist in the Hub repository {repo_id!r}: pass a branch, tag or "
            f"commit id listed at {HUB_URL}/{repo_id}/tree/main"
        )
    if isinstance(exc, errors.LocalEntryNotFoundError):
        cache = os.fspath(cache_dir) if cache_dir else _client_cache_dir()
        if local_files_only:
            why = "local_files_only=True forbids downloading it: pass local_files_only=False"
        elif getattr(importlib.import_module("huggingface_hub.constants"), "HF_HUB_OFFLINE", False):
            why = "HF_HUB_OFFLINE is set, which forbids downloading it: unset it, or download it once while online"
        else:
            why = "the Hub could not be reached to download it: check the connection or the proxy settings"
        return FileNotFoundError(f"{repo_id!r} is not a local path, and {at} is not in the Hugging Face cache "
                                 f"({cache}); {why}")
    if isinstance(exc, errors.EntryNotFoundError):
        return FileNotFoundError(f"{at} does not exist: the repository has no such file")
    if isinstance(exc, errors.HFValidationError):
        return FileNotFoundError(f"{repo_id!r} is neither a local path nor a valid Hub repository id: {exc}")
    if isinstance(exc, errors.HfHubHTTPError):
        return OSError(f"fetching {at} failed: {exc}")
    return None


def _client_cache_dir() -> str:
    return getattr(importlib.import_module("huggingface_hub.constants"), "HF_HUB_CACHE", None) or default_cache_dir()
