"""Tokenizers with the bert4keras API: BERT WordPiece (`Tokenizer`) and SentencePiece (`SpTokenizer`)."""
from .sentencepiece import SpTokenizer, load_keep_tokens
from .vocab import load_vocab, save_vocab
from .wordpiece import Tokenizer

__all__ = ["SpTokenizer", "Tokenizer", "load_keep_tokens", "load_vocab", "save_vocab"]
