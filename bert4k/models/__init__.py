"""Model builders. `build_transformer_model` is the entry point (bert4keras name kept)."""
from bert4k.models.builder import build_transformer_model
from bert4k.models.transformer import Transformer

__all__ = ["Transformer", "build_transformer_model"]
