"""transformers' rules for picking the decoding strategy from a config (``get_generation_mode``).

``trylast``: a plugin that owns a config field can claim the configs that set it before these run.
"""

from genplug import hookimpl


@hookimpl(trylast=True)
def genplug_resolve_strategy(generation_config, assistant_model):
    return generation_config.get_generation_mode(assistant_model).value
