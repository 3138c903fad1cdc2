"""Pretrain bert4k's small Chinese BERT with masked language modelling, on CPU, in well under an hour.

Corpus: `zh-plain-corpus/zh_corpus.txt` plus the CSL discipline training titles, minus every text a task script
evaluates on (the held-out ChnSentiCorp reviews and CSL abstracts of tasks/common.py's splits, and the
CMRC 2018 trial contexts). Vocabulary: the Chinese BERT WordPiece tokens seen at least `--min-count` times in
that corpus (in their original order), written as `vocab.txt`. Model: BERT, 4 layers, hidden 256, 4 heads,
FFN 1024, 256 positions, whole-word masking (jieba) with 80/10/10 replacement, the MLM head run only at the
masked positions, AdamW with warmup and linear decay, mixed bfloat16 with XLA (2× faster than float32 here).

    python pretrained/train_small_bert.py --steps 1000            # writes pretrained/bert4k-small-zh/

Output folder: config.json (HF BERT config), vocab.txt, model.safetensors (HF names, with the MLM head;
`build_transformer_model(config, checkpoint)` and `transformers.BertForMaskedLM` both load it), training.json,
log.csv, learning_curve.png.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tasks"))
import common
import keras
import numpy as np

from bert4k import build_transformer_model, objectives, training
from bert4k.data import mlm_dataset
from bert4k.models.checkpoint_io import export_checkpoint
from bert4k.tokenizers import Tokenizer

ARCHITECTURE = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
                    max_position_embeddings=256, type_vocab_size=2, hidden_act="gelu",
                    hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, initializer_range=0.02,
                    layer_norm_eps=1e-12, pad_token_id=0)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(common.PRETRAINED), help="output folder (default: %(default)s)")
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--maxlen", type=int, default=256, help="tokens per sequence, [CLS]/[SEP] included")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--min-count", type=int, default=3, help="keep vocab tokens seen this often")
    p.add_argument("--eval-every", type=int, default=100, help="steps per logged 'epoch' (held-out MLM loss)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fp32", action="store_true", help="float32 without XLA instead of mixed bfloat16 + XLA")
    p.add_argument("--data-dir", default=str(common.DATA))
    return p.parse_args(argv)


def _clean(text: str) -> str:
    return " ".join(text.split())


def pretraining_texts() -> tuple[list[str], dict]:
    """Corpus documents minus everything a task evaluates on, plus the CSL training titles."""
    excluded = set()
    with open(common.data_path("cmrc2018", "cmrc2018_trial.json"), encoding="utf-8") as f:
        excluded |= {_clean(p["context"]) for a in json.load(f)["data"] for p in a["paragraphs"]}
    with open(common.data_path("chnsenticorp", "train.tsv"), encoding="utf-8") as f:
        next(f)
        excluded |= {_clean(t) for t in (line.rstrip("\n").partition("\t")[2] for line in f)
                     if common.held_out(t, common.SPLITS["chnsenticorp"])}
    with open(common.data_path("csl-title", "dev.tsv"), encoding="utf-8") as f:
        excluded |= {_clean(a) for a in (line.split("\t")[1] for line in f if line.strip())
                     if common.held_out(a, common.SPLITS["csl-title"])}
    texts, dropped = [], 0
    with open(common.data_path("zh-plain-corpus", "zh_corpus.txt"), encoding="utf-8") as f:
        for line in f:
            text = _clean(line)
            if not text:
                continue
            if text in excluded:
                dropped += 1
            else:
                texts.append(text)
    with open(common.data_path("csl-category", "train.tsv"), encoding="utf-8") as f:
        titles = [line.split("\t")[1] for line in f if line.strip()]
    return texts + titles, {"corpus_documents": len(texts), "excluded_eval_documents": dropped,
                            "csl_train_titles": len(titles)}


def trimmed_vocab(texts: list[str], full_vocab: str, min_count: int) -> list[str]:
    """The full vocab's tokens seen ≥ `min_count` times in `texts` (plus the specials), in vocab order."""
    tokenizer = Tokenizer(full_vocab, do_lower_case=True)
    counts = Counter(t for text in texts for t in tokenizer.tokenize(text))
    specials = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}
    with open(full_vocab, encoding="utf-8") as f:
        tokens = [line.rstrip("\n") for line in f]
    return [t for t in tokens if t in specials or counts[t] >= min_count]


def chunks(texts: list[str], size: int, rng: np.random.Generator) -> list[str]:
    """Texts cut into pieces of ≤ `size` chars, short neighbours packed together (space-separated), shuffled."""
    pieces = [text[i:i + size] for text in texts for i in range(0, len(text), size)]
    packed, current = [], ""
    for piece in pieces:
        if current and len(current) + 1 + len(piece) > size:
            packed.append(current)
            current = ""
        current = f"{current} {piece}" if current else piece
    if current:
        packed.append(current)
    return [packed[i] for i in rng.permutation(len(packed))]


class GatherPositions(keras.layers.Layer):
    """Rows `positions` `[batch, k]` of a sequence `[batch, seq, hidden]`."""

    def call(self, x, positions):
        return keras.ops.take_along_axis(x, keras.ops.expand_dims(positions, -1), axis=1)

    def compute_output_shape(self, x_shape, positions_shape):
        return (*positions_shape, x_shape[-1])


def masked_positions_model(mlm: keras.Model) -> keras.Model:
    """The MLM model with its head applied only at `k` given positions per row (a third input): the head's
    `hidden × vocab` product is ~40% of the work when run on every position. Shares every layer with `mlm`."""
    positions = keras.Input(shape=(None,), dtype="int32", name="Input-MLM-Positions")
    gathered = GatherPositions(name="MLM-Gather")(mlm.blocks[-1].output, positions)
    return keras.Model([*mlm.inputs, positions], mlm.head(gathered), name="mlm_at_positions")


def fixed_shapes(dataset, maxlen: int, max_predictions: int):
    """Pad every batch to `[batch, maxlen]` (one compiled shape for XLA) and keep the first `max_predictions`
    masked positions of each row with their labels (label 0 = padding, ignored by the loss)."""
    import tensorflow as tf

    def convert(x, y):
        def to_len(t):
            return tf.pad(t, [[0, 0], [0, maxlen - tf.shape(t)[1]]])

        y = to_len(y)
        positions = tf.argsort(tf.cast(y > 0, tf.int32), axis=1, direction="DESCENDING", stable=True)
        positions = positions[:, :max_predictions]
        return (to_len(x[0]), to_len(x[1]), positions), tf.gather(y, positions, batch_dims=1)

    return dataset.map(convert)


def main(argv=None) -> dict:
    args = parse_args(argv)
    common.DATA = Path(args.data_dir)
    started = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    training.set_seed(args.seed)
    if not args.fp32:
        training.use_mixed_precision("mixed_bfloat16")

    texts, corpus_stats = pretraining_texts()
    vocab = trimmed_vocab(texts, str(common.data_path(*common.FULL_VOCAB)), args.min_count)
    (out / "vocab.txt").write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
    tokenizer = Tokenizer(str(out / "vocab.txt"), do_lower_case=True)
    rng = np.random.default_rng(args.seed)
    pieces = chunks(texts, args.maxlen - 2, rng)
    n_val = max(args.batch_size, len(pieces) // 100)
    val_pieces, train_pieces = pieces[:n_val], pieces[n_val:]
    print(f"corpus: {corpus_stats}, {len(train_pieces)} training sequences, vocab {len(vocab)}")

    config = {**ARCHITECTURE, "vocab_size": len(vocab), "model_type": "bert", "architectures": ["BertForMaskedLM"]}
    model = build_transformer_model(dict(config), application="mlm", logits=True)
    trainer = masked_positions_model(model)
    k = int(np.ceil(0.2 * args.maxlen))
    train = fixed_shapes(mlm_dataset(train_pieces, tokenizer, args.maxlen, args.batch_size, seed=args.seed),
                         args.maxlen, k).repeat()
    val = fixed_shapes(mlm_dataset(val_pieces, tokenizer, args.maxlen, args.batch_size, seed=args.seed + 1),
                       args.maxlen, k)
    optimizer = training.create_optimizer(trainer, args.lr, total_steps=args.steps, warmup=0.06, weight_decay=0.01)
    trainer.compile(optimizer=optimizer, jit_compile=not args.fp32,
                    **objectives.compile_kwargs("mlm", from_logits=True))
    epochs = -(-args.steps // args.eval_every)
    callbacks = training.training_callbacks(str(out / "run"), title="MLM pretraining")
    history = trainer.fit(train, validation_data=val, epochs=epochs, steps_per_epoch=args.eval_every,
                          validation_steps=len(val_pieces) // args.batch_size, callbacks=callbacks,
                          verbose=1 if sys.stdout.isatty() else 2)

    export_checkpoint(model, out / "model.safetensors")
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    for name in ("log.csv", "learning_curve.png"):
        if (out / "run" / name).exists():
            os.replace(out / "run" / name, out / name)
    shutil.rmtree(out / "run", ignore_errors=True)
    record = {"steps": epochs * args.eval_every, "batch_size": args.batch_size, "maxlen": args.maxlen,
              "tokens_seen": epochs * args.eval_every * args.batch_size * args.maxlen, "lr": args.lr,
              "precision": "float32" if args.fp32 else "mixed_bfloat16 + XLA", "vocab_size": len(vocab),
              "min_count": args.min_count, **corpus_stats, "train_sequences": len(train_pieces),
              "val_sequences": len(val_pieces), "parameters": model.count_params(),
              "final": {k: round(float(v[-1]), 4) for k, v in history.history.items()},
              "wall_seconds": round(time.time() - started), "cpu_seconds": round(time.process_time())}
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(record))
    return record


if __name__ == "__main__":
    main()
