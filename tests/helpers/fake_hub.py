"""A stand-in for huggingface_hub's network functions: records every call and serves files from a folder.

``FakeHub(tmp_path).install(monkeypatch)`` replaces ``huggingface_hub.hf_hub_download``,
``snapshot_download`` and ``HfApi``. Repositories are folders ``<root>/<org>/<name>/``; a missing folder
raises huggingface_hub's RepositoryNotFoundError, a missing file its RemoteEntryNotFoundError, as the Hub
would. Setting ``fail_with`` makes the next downloads raise that error instead. Nothing reaches the network.
"""

from __future__ import annotations

import fnmatch
import shutil
from pathlib import Path
from types import SimpleNamespace


def hub_error(name: str, message: str = "from the fake hub", status: int = 404) -> Exception:
    """An instance of huggingface_hub.errors.<name>, built the way the client builds it."""
    from huggingface_hub import errors

    cls = getattr(errors, name)
    if issubclass(cls, errors.HfHubHTTPError):
        response = SimpleNamespace(headers={}, request=None, status_code=status)
        return cls(message, response=response)
    return cls(message)


class FakeHub:
    def __init__(self, root: Path):
        self.root = Path(root) / "served"
        self.root.mkdir(parents=True, exist_ok=True)
        self.calls = []  # (function name, positional args, keyword args)
        self.uploads = []  # {"repo_id", "path_in_repo", "content", **kwargs}, content read at upload time
        self.fail_with = None
        self.user = "me"

    def repository(self, repo_id: str) -> Path:
        path = self.root / repo_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def install(self, monkeypatch) -> "FakeHub":
        import huggingface_hub

        try:  # transformers binds huggingface_hub's names when first imported: let it bind the real ones
            import transformers.utils.hub  # noqa: F401
        except ImportError:
            pass

        monkeypatch.setattr(huggingface_hub, "hf_hub_download", self.hf_hub_download)
        monkeypatch.setattr(huggingface_hub, "snapshot_download", self.snapshot_download)
        monkeypatch.setattr(huggingface_hub, "HfApi", self.api_class())
        return self

    def names(self):
        return [call[0] for call in self.calls]

    # -------------------------------------------------------------------------------------- downloads

    def _repo(self, repo_id: str) -> Path:
        if self.fail_with is not None:
            raise self.fail_with
        path = self.root / repo_id
        if not path.is_dir():
            raise hub_error("RepositoryNotFoundError", f"404: {repo_id} not found")
        return path

    def hf_hub_download(self, repo_id, filename, **kwargs):
        self.calls.append(("hf_hub_download", (repo_id, filename), kwargs))
        path = self._repo(repo_id) / (kwargs.get("subfolder") or "") / filename
        if not path.is_file():
            raise hub_error("RemoteEntryNotFoundError", f"404: {filename} not in {repo_id}")
        return str(path)

    def snapshot_download(self, repo_id, **kwargs):
        self.calls.append(("snapshot_download", (repo_id,), kwargs))
        source = self._repo(repo_id)
        # Like the real client: the snapshot holds only the files the patterns allow.
        snapshot = self.root.parent / "snapshots" / repo_id.replace("/", "--")
        shutil.rmtree(snapshot, ignore_errors=True)
        for file in source.rglob("*"):
            relative = file.relative_to(source).as_posix()
            if file.is_file() and any(fnmatch.fnmatch(relative, p) for p in kwargs.get("allow_patterns") or ["*"]):
                (snapshot / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(file, snapshot / relative)
        snapshot.mkdir(parents=True, exist_ok=True)
        return str(snapshot)

    # -------------------------------------------------------------------------------------- uploads

    def api_class(self):
        fake = self

        class HfApi(_FakeApi):
            def __init__(self, token=None, **kwargs):
                fake.calls.append(("HfApi", (), dict(token=token, **kwargs)))
                self.hub = fake

        return HfApi


class _FakeApi:
    hub: FakeHub

    def create_repo(self, repo_id, **kwargs):
        self.hub.calls.append(("create_repo", (repo_id,), kwargs))
        return SimpleNamespace(repo_id=repo_id if "/" in repo_id else f"{self.hub.user}/{repo_id}")

    def create_branch(self, repo_id, **kwargs):
        self.hub.calls.append(("create_branch", (repo_id,), kwargs))

    def upload_file(self, *, path_or_fileobj, path_in_repo, repo_id, **kwargs):
        self.hub.calls.append(("upload_file", (), dict(path_or_fileobj=path_or_fileobj, path_in_repo=path_in_repo,
                                                       repo_id=repo_id, **kwargs)))
        content = Path(path_or_fileobj).read_text(encoding="utf-8")
        self.hub.uploads.append(dict(repo_id=repo_id, path_in_repo=path_in_repo, content=content, **kwargs))
        return f"https://huggingface.co/{repo_id}/commit/0123abcd"
