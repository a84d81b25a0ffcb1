"""Greedy search: pick the highest-scoring token at every step."""

from genplug import hookimpl
from genplug.loop import decode


def greedy_search(model, input_ids, logits_processor, stopping_criteria, generation_config,
                  synced_gpus=False, streamer=None, **model_kwargs):
    """Run the step loop choosing ``argmax`` of the processed scores."""
    return decode(model, input_ids, logits_processor, stopping_criteria, generation_config,
                  synced_gpus=synced_gpus, streamer=streamer, do_sample=False, **model_kwargs)


@hookimpl
def genplug_register_strategies(register):
    register("greedy_search", greedy_search, requires=frozenset(), description="argmax at every step")
