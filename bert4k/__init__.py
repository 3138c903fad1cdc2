"""bert4k: Keras 3 Transformers for Chinese NLP — one builder for BERT/RoBERTa, GPT-2 and T5 families."""
from bert4k.config import TransformerConfig
from bert4k.generation import generate
from bert4k.models.builder import build_transformer_model
from bert4k.tokenizers import SpTokenizer, Tokenizer, load_vocab

__version__ = "0.1.0"
__all__ = ["SpTokenizer", "Tokenizer", "TransformerConfig", "build_transformer_model", "generate", "load_vocab"]
