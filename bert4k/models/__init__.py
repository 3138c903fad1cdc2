"""Model classes. `bert4k.models.build_transformer_model` is bert4keras' builder (`bert4k.compat.models`, resolved
lazily so native imports never load the compatibility layer); the native one is `bert4k.build_transformer_model`."""
from bert4k.models.transformer import Transformer

__all__ = ["Transformer", "build_transformer_model"]


def __getattr__(name: str):
    if name == "build_transformer_model":
        from bert4k.compat.models import build_transformer_model

        return build_transformer_model
    raise AttributeError(f"module 'bert4k.models' has no attribute {name!r}")
