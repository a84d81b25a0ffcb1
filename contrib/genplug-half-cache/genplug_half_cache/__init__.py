"""A KV-cache backend that keeps keys and values in 16-bit floats, as a genplug plugin."""

import genplug

__version__ = "0.1.0"

STORAGE_DTYPES = ("bfloat16", "float16")


class HalfPrecisionCache(genplug.Cache):
    """Grows like the dynamic cache, but stores in ``storage_dtype`` and returns the caller's dtype.

    Trades one cast of the visible keys/values per step for half the memory of an fp32 cache.
    """

    capabilities = frozenset({"crop", "reorder", "select", "repeat"})
    is_compileable = False

    def __init__(self, storage_dtype):
        self.storage_dtype = storage_dtype
        self.keys, self.values = [], []

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        import torch

        keys, values = key_states.to(self.storage_dtype), value_states.to(self.storage_dtype)
        if layer_idx == len(self.keys):
            self.keys.append(keys)
            self.values.append(values)
        else:
            self.keys[layer_idx] = torch.cat([self.keys[layer_idx], keys], dim=-2)
            self.values[layer_idx] = torch.cat([self.values[layer_idx], values], dim=-2)
        return self.keys[layer_idx].to(key_states.dtype), self.values[layer_idx].to(value_states.dtype)

    def get_seq_length(self, layer_idx=0):
        return self.keys[layer_idx].shape[-2] if layer_idx < len(self.keys) else 0

    def get_mask_sizes(self, query_length, layer_idx=0):
        return self.get_seq_length(layer_idx) + query_length, 0

    def __len__(self):
        return len(self.keys)

    def _apply(self, change):
        self.keys = [change(k) for k in self.keys]
        self.values = [change(v) for v in self.values]

    def crop(self, max_length):
        """transformers' semantics: a negative value removes that many tokens, a positive one keeps that many."""
        seen = self.get_seq_length()
        keep = seen + max_length if max_length < 0 else min(max_length, seen)
        if keep < 0:
            raise ValueError(f"crop({max_length}) removes more than the {seen} cached tokens")
        self._apply(lambda t: t[..., :keep, :])

    def reorder_cache(self, beam_idx):
        self._apply(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_select_indices(self, indices):
        self._apply(lambda t: t[indices])

    def batch_repeat_interleave(self, repeats):
        self._apply(lambda t: t.repeat_interleave(repeats, dim=0))

    def reset(self):
        self.keys, self.values = [], []


def build(request):
    import torch

    name = request.cache_config.get("dtype", "bfloat16")
    if name not in STORAGE_DTYPES:
        raise genplug.GenerationConfigError(
            f"cache_config dtype={name!r} is not a 16-bit float type: use one of {', '.join(STORAGE_DTYPES)}"
        )
    return HalfPrecisionCache(getattr(torch, name))


@genplug.hookimpl
def genplug_register_cache_backends(register):
    register("half_precision", build, capabilities=HalfPrecisionCache.capabilities, config_keys=("dtype",),
             description="keys and values stored in bfloat16/float16 (half an fp32 cache's memory)")
