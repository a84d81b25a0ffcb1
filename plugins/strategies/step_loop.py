"""Options of the greedy/sampling step loop, declared as plugin-owned config fields."""

from genplug import hookimpl
from genplug.config.fields import ConfigField


def _positive_int(value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"must be an int >= 1 (steps between host checks of 'every row finished'), got {value!r}")


@hookimpl
def genplug_register_config_fields(register):
    register(ConfigField(
        "stop_check_interval", default=8, validator=_positive_int,
        help="decode steps between host reads of the stop flag; output is identical for every value",
    ))
