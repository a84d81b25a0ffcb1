"""A repository that brings its own genplug plugin for the duration of its generate() call."""

import genplug
from genplug.config.fields import ConfigField


class BanTokenLogitsProcessor(genplug.LogitsProcessor):
    """Never lets one token id be chosen."""

    def __init__(self, token_id):
        self.token_id = token_id

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        scores[:, self.token_id] = -float("inf")
        return scores


@genplug.hookimpl
def genplug_register_config_fields(register):
    register(ConfigField("banned_token_id", default=None, help="token id this repository never generates"))


@genplug.hookimpl
def genplug_register_logits_processors(register):
    register("ban_token", lambda config, context: (
        None if config.banned_token_id is None else BanTokenLogitsProcessor(config.banned_token_id)
    ), stage="constraint", fields=("banned_token_id",))


def generate(model, inputs=None, **kwargs):
    return genplug.generate(model, inputs, **kwargs)
