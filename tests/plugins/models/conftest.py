"""Fixtures for the native-model tests."""

from __future__ import annotations

import pytest

from native_llama_fixtures import transformers_model


@pytest.fixture
def make_checkpoint(tmp_path):
    """``make_checkpoint(family, max_shard_size=None, **config) -> (transformers_model, directory)``."""
    counter = iter(range(1000))

    def make(family: str = "llama", max_shard_size=None, seed: int = 0, **overrides):
        model = transformers_model(family, seed, **overrides)
        directory = tmp_path / f"{family}-{next(counter)}"
        kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
        model.save_pretrained(directory, **kwargs)
        return model, str(directory)

    return make

