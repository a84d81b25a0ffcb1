"""Which transformers is installed, for the cases whose reference behaviour changed between its releases.

genplug follows the newest transformers it supports where a release fixed a bug or changed documented
behaviour; a case that compares against transformers then holds only from that release on, and older
releases are checked against an independent oracle instead.
"""

from packaging.version import Version


def transformers_at_least(version: str) -> bool:
    """True when the installed transformers is ``version`` or newer (its pre-releases count as it)."""
    import transformers

    return Version(Version(transformers.__version__).base_version) >= Version(version)
