"""Multinomial sampling: draw each token from the softmax of the processed scores."""

from genplug import hookimpl
from genplug.loop import decode


def sample(model, input_ids, logits_processor, stopping_criteria, generation_config,
           synced_gpus=False, streamer=None, **model_kwargs):
    """Run the step loop drawing one token per row with ``torch.multinomial`` (one RNG call per step)."""
    return decode(model, input_ids, logits_processor, stopping_criteria, generation_config,
                  synced_gpus=synced_gpus, streamer=streamer, do_sample=True, **model_kwargs)


@hookimpl
def genplug_register_strategies(register):
    register("sample", sample, requires=frozenset(), description="multinomial sampling")
