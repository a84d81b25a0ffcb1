"""The one error a local checkpoint that cannot be used raises."""

from __future__ import annotations


class CheckpointError(OSError, ValueError):
    """A checkpoint directory cannot be loaded: a file is missing or corrupt, or its content does not fit.

    It is both an ``OSError`` (what transformers raises for missing files) and a ``ValueError`` (what it
    raises for an unsupported ``model_type`` or mismatched shapes), so either ``except`` clause a caller
    already has catches it. The message names the file, what was wrong and how to fix it.
    """
