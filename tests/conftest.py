"""Shared test fixtures: paths to the real data in ../shared/data."""
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BERT4K_DATA", REPO.parent / "shared" / "data"))
VOCAB = DATA / "bert-chinese-vocab" / "vocab.txt"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def vocab_path() -> Path:
    return VOCAB
