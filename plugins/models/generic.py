"""The fallback model adapter: any module that follows genplug's model protocol.

Registered ``trylast`` so that adapters for specific model families (transformers, native) win.
"""

from genplug import hookimpl
from genplug.models import ModelAdapter


class GenericAdapterFactory:
    """Adapts any module with transformers' calling convention."""

    @staticmethod
    def claims(model) -> bool:
        return callable(model)

    @staticmethod
    def adapt(model) -> ModelAdapter:
        return ModelAdapter(model)


@hookimpl
def genplug_register_model_adapters(register):
    register("generic", GenericAdapterFactory, description="any module following docs/models.md")


@hookimpl(trylast=True)
def genplug_adapt_model(model):
    return GenericAdapterFactory.adapt(model)
