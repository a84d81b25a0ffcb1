"""Loads ``custom_generate`` from a local directory (``<dir>/custom_generate/generate.py``) or a Hub repository id."""

from genplug import hookimpl


@hookimpl(trylast=True)
def genplug_load_custom_generate(spec, trust_remote_code, hub_options):
    from genplug.custom_generate import load_local_repository

    return load_local_repository(spec, trust_remote_code, **(hub_options or {}))
