"""bert4k: Keras 3 Transformers for Chinese NLP — one builder for BERT/RoBERTa, GPT-2 and T5 families.

The names below (and the submodules, `bert4k.models` ...) are imported on first use, so `import bert4k` and the
`bert4k` command's `--help` do not load Keras or TensorFlow. Before `keras.saving.load_model` of a saved bert4k model,
import `bert4k.models` (it registers the layers), or use `bert4k.load_model`.
"""
import importlib

__version__ = "0.1.0"
_LAZY = {
    "TransformerConfig": "bert4k.config",
    "generate": "bert4k.generation",
    "build_transformer_model": "bert4k.models.builder",
    "SpTokenizer": "bert4k.tokenizers",
    "Tokenizer": "bert4k.tokenizers",
    "load_vocab": "bert4k.tokenizers",
    "from_pretrained": "bert4k.pretrained",
    "load_model": "bert4k.pretrained",
    "fill_mask": "bert4k.pipelines",
    "encode": "bert4k.pipelines",
    "generate_text": "bert4k.pipelines",
}
__all__ = ["SpTokenizer", "Tokenizer", "TransformerConfig", "build_transformer_model", "encode", "fill_mask",
           "from_pretrained", "generate", "generate_text", "load_model", "load_vocab"]


def __getattr__(name: str):
    if name not in _LAZY:
        try:
            return importlib.import_module(f"bert4k.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"bert4k.{name}":
                raise
            raise AttributeError(f"module 'bert4k' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
