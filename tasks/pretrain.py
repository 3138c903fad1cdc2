"""Pretrain a small Transformer from scratch on plain Chinese text with one of four objectives.

    python tasks/pretrain.py --objective mlm --steps 300
    python tasks/pretrain.py --objective unilm --layers 2 --hidden-size 128 --steps 100
    python tasks/pretrain.py --train my_corpus.txt --dev my_heldout.txt

Objectives (see `bert4k.objectives`): `mlm` (15% whole-word masking, 80/10/10), `lm` (next token), `unilm`
(consecutive text pieces of a document as source → target), `plm` (permutation LM: predict the last K tokens of a
random factorisation order from the query stream). Documents are cut into sentences and packed into pieces of up
to `--maxlen` tokens; the last `--heldout-docs` documents are held out and scored at the start and the end.

Your data: `--train FILE` (plain text, one document a line; default the shared zh-plain-corpus) and `--dev FILE`
(the same format: the held-out documents, instead of the last `--heldout-docs` of --train).

Writes to `--out` (default runs/pretrain-<corpus>-<objective>-L<layers>-H<hidden>): `config.json` (BERT config, loadable by `build_transformer_model`), `model.safetensors` (HF BERT
names; load both with `build_transformer_model(out, out)`), `loss.csv` (step, train loss and accuracy over the
last `--log-every` steps, learning rate, seconds), `run.json` (arguments, held-out loss/accuracy before and after,
time).
"""
from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tasks"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import common
import keras
import numpy as np

from bert4k import TransformerConfig, build_transformer_model, objectives
from bert4k.data import chinese_word_spans, mlm_mask
from bert4k.models.checkpoint_io import export_checkpoint
from bert4k.padding import sequence_padding
from bert4k.tokenizers import Tokenizer

DATA = REPO.parent / "shared" / "data"
SENTENCE_END = re.compile(r"(?<=[。！？!?；;…\n])")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(task_name="pretrain")
    p.add_argument("--objective", choices=objectives.OBJECTIVES, default="mlm")
    common.add_data_arguments(p, "", "plain text, one document a line", test=False, predict=False,
                              train_default=str(DATA / "zh-plain-corpus" / "zh_corpus.txt"))
    p.add_argument("--vocab", default=str(DATA / "bert-chinese-vocab" / "vocab.txt"), help="WordPiece vocab.txt")
    p.add_argument("--out", default=None, help="output folder (default runs/pretrain-<corpus>-<objective>-L<layers>"
                   "-H<hidden>)")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate-size", type=int, default=None, help="default 4 × hidden size")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--maxlen", type=int, default=128, help="tokens per example, [CLS]/[SEP] included")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--log-every", type=int, default=10, help="steps per loss.csv row")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    p.add_argument("--warmup", type=float, default=0.1, help="warm-up steps as a fraction of --steps")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--mlm-rate", type=float, default=0.15, help="mlm: fraction of words masked")
    p.add_argument("--plm-predict", type=int, default=None, help="plm: tokens predicted per row, default maxlen//6")
    p.add_argument("--max-docs", type=int, default=0, help="read only the first N documents (0 = all)")
    p.add_argument("--heldout-docs", type=int, default=50, help="last N documents are held out for evaluation")
    p.add_argument("--eval-batches", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-eagerly", action="store_true", help="no graph tracing (debugging, tiny smoke runs)")
    return p.parse_args(argv)


# === data ===

def read_documents(path: str, max_docs: int = 0) -> list[str]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"corpus file not found: {path}")
    docs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                docs.append(line.strip())
            if max_docs and len(docs) >= max_docs:
                break
    if not docs:
        raise ValueError(f"{path}: no documents (expected one document per line)")
    return docs


def pieces_of(doc: str, size: int) -> list[str]:
    """Consecutive pieces of `doc` of at most `size` characters, cut at sentence ends where possible."""
    pieces, current = [], ""
    for sentence in SENTENCE_END.split(doc):
        sentence = sentence.strip()
        while len(sentence) > size:  # an over-long sentence is cut hard
            if current:
                pieces.append(current)
                current = ""
            pieces.append(sentence[:size])
            sentence = sentence[size:]
        if len(current) + len(sentence) > size:
            pieces.append(current)
            current = ""
        current += sentence
    if current:
        pieces.append(current)
    return [p for p in pieces if p]


def examples_of(docs: list[str], objective: str, maxlen: int) -> list:
    """Texts (or (source, target) pairs for unilm) sized to fit `maxlen` tokens."""
    if objective == "unilm":
        return [pair for doc in docs for pair in itertools.pairwise(pieces_of(doc, (maxlen - 3) // 2))]
    return [piece for doc in docs for piece in pieces_of(doc, maxlen - 2)]


def encode_batch(objective: str, batch: list, tokenizer: Tokenizer, args, rng: np.random.Generator):
    """`(inputs, labels)` for one batch of examples; inputs are `(token_ids, segment_ids[, perm_ranks])`."""
    token_ids, segment_ids, labels = [], [], []
    special = [tokenizer.token_to_id(t) for t in ("[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]")]
    for example in batch:
        if objective == "mlm":
            tokens = tokenizer.tokenize(example, maxlen=args.maxlen)
            spans = chinese_word_spans(example, tokens, tokenizer.rematch(example, tokens))
            ids, mlm = mlm_mask(tokenizer.tokens_to_ids(tokens), tokenizer.vocab_size, tokenizer.token_to_id("[MASK]"),
                                special, args.mlm_rate, rng, spans)
            labels.append(mlm)
            segments = [0] * len(ids)
        elif objective == "unilm":
            ids, segments = tokenizer.encode(example[0], example[1], maxlen=args.maxlen)
        else:
            ids, segments = tokenizer.encode(example, maxlen=args.maxlen)
        token_ids.append(ids)
        segment_ids.append(segments)
    token_ids, segment_ids = sequence_padding(token_ids), sequence_padding(segment_ids)
    if objective == "mlm":
        return (token_ids, segment_ids), sequence_padding(labels)
    if objective == "lm":
        return (token_ids, segment_ids), objectives.lm_labels(token_ids)
    if objective == "unilm":
        return (token_ids, segment_ids), objectives.unilm_labels(token_ids, segment_ids)
    ranks = objectives.sample_perm_ranks(token_ids, rng)
    return (token_ids, segment_ids, ranks), objectives.plm_labels(token_ids, ranks, args.plm_predict)


def batches(examples: list, tokenizer: Tokenizer, args, seed: int) -> Iterator:
    """Endless shuffled batches (masks and orders drawn anew on every pass)."""
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(examples))
        for start in range(0, len(order) - args.batch_size + 1, args.batch_size):
            chunk = [examples[i] for i in order[start:start + args.batch_size]]
            yield encode_batch(args.objective, chunk, tokenizer, args, rng)


def dataset(examples: list, tokenizer: Tokenizer, args, seed: int):
    import tensorflow as tf

    if len(examples) < args.batch_size:
        raise ValueError(f"only {len(examples)} training examples for batch size {args.batch_size}: use more documents")
    spec = tf.TensorSpec([None, None], tf.int32)
    inputs = (spec,) * (3 if args.objective == "plm" else 2)
    ds = tf.data.Dataset.from_generator(lambda: batches(examples, tokenizer, args, seed),
                                        output_signature=(inputs, spec))
    return ds.prefetch(2)


# === model ===

def model_config(args, vocab_size: int) -> TransformerConfig:
    return TransformerConfig(
        vocab_size=vocab_size, hidden_size=args.hidden_size, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, intermediate_size=args.intermediate_size or 4 * args.hidden_size,
        hidden_act="gelu", max_position_embeddings=max(args.maxlen, 16), type_vocab_size=2,
        hidden_dropout_prob=args.dropout, attention_probs_dropout_prob=args.dropout, layer_norm_eps=1e-12)


def bert_config_json(cfg: TransformerConfig) -> dict:
    """The config as an HF/Google BERT `config.json`."""
    return {"model_type": "bert", "architectures": ["BertForMaskedLM"], "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_hidden_layers,
            "num_attention_heads": cfg.num_attention_heads, "intermediate_size": cfg.intermediate_size,
            "hidden_act": "gelu", "max_position_embeddings": cfg.max_position_embeddings,
            "type_vocab_size": cfg.type_vocab_size, "hidden_dropout_prob": cfg.hidden_dropout_prob,
            "attention_probs_dropout_prob": cfg.attention_probs_dropout_prob, "layer_norm_eps": cfg.layer_norm_eps,
            "initializer_range": cfg.initializer_range, "pad_token_id": cfg.pad_token_id}


def optimizer(args) -> keras.optimizers.Optimizer:
    """AdamW, linear warm-up to `--lr` then cosine decay to 0; no decay on biases and norm parameters."""
    warmup = int(args.warmup * args.steps)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0, decay_steps=max(args.steps - warmup, 1), warmup_target=args.lr,
        warmup_steps=warmup)
    opt = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=args.weight_decay, clipnorm=1.0)
    opt.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return opt


class LossLog(keras.callbacks.Callback):
    """One `loss.csv` row per epoch (= `--log-every` steps): the mean train loss/accuracy of that window."""

    def __init__(self, path: Path, steps_per_epoch: int):
        super().__init__()
        self.path, self.steps_per_epoch = path, steps_per_epoch
        with open(path, "w", newline="") as f:
            csv.writer(f).writerow(["step", "loss", "accuracy", "learning_rate", "seconds"])

    def on_train_begin(self, logs=None):
        self.t0 = time.time()

    def on_epoch_end(self, epoch, logs=None):
        step = (epoch + 1) * self.steps_per_epoch
        lr = float(self.model.optimizer.learning_rate)
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([step, f"{logs['loss']:.5f}", f"{logs['accuracy']:.5f}", f"{lr:.3g}",
                                    f"{time.time() - self.t0:.1f}"])
        print(f"step {step:5d}  loss {logs['loss']:.4f}  acc {logs['accuracy']:.4f}  lr {lr:.2e}"
              f"  {time.time() - self.t0:.0f} s", flush=True)


def run(args) -> dict:
    """Train and save; returns the summary also written to `run.json`."""
    if args.plm_predict is None:
        args.plm_predict = max(args.maxlen // 6, 1)
    out = common.output_folder(args, f"{args.objective}-L{args.layers}-H{args.hidden_size}")
    keras.utils.set_random_seed(args.seed)
    tokenizer = Tokenizer(args.vocab, do_lower_case=True)

    docs = read_documents(args.train, args.max_docs)
    if args.dev:
        train_docs, heldout_docs = docs, read_documents(args.dev)
    elif len(docs) <= args.heldout_docs:
        raise ValueError(f"{args.train}: {len(docs)} documents, need more than --heldout-docs {args.heldout_docs}")
    else:
        train_docs, heldout_docs = docs[:-args.heldout_docs], docs[-args.heldout_docs:]
    train = examples_of(train_docs, args.objective, args.maxlen)
    heldout = examples_of(heldout_docs, args.objective, args.maxlen)
    if not heldout:
        raise ValueError(f"{args.dev or args.train}: the held-out documents give no example")
    rng = np.random.default_rng(args.seed + 1)
    eval_batches = [encode_batch(args.objective, heldout[i:i + args.batch_size], tokenizer, args, rng)
                    for i in range(0, min(len(heldout), args.eval_batches * args.batch_size), args.batch_size)]

    cfg = model_config(args, tokenizer.vocab_size)
    model = build_transformer_model(cfg, application=args.objective, logits=True,
                                    mask_token_id=tokenizer.token_to_id("[MASK]"))
    model.compile(optimizer(args), run_eagerly=args.run_eagerly,
                  **objectives.compile_kwargs(args.objective, from_logits=True))

    def evaluate() -> tuple[float, float]:
        """Held-out loss and accuracy over the same fixed batches (fixed masks and orders)."""
        losses = [model.evaluate(x, y, verbose=0, return_dict=True) for x, y in eval_batches]
        return float(np.mean([r["loss"] for r in losses])), float(np.mean([r["accuracy"] for r in losses]))

    print(f"{args.objective}: {len(train)} training examples, {model.count_params():,} parameters", flush=True)
    start_loss, start_acc = evaluate()
    print(f"held-out at step 0: loss {start_loss:.4f}  acc {start_acc:.4f}", flush=True)
    log_every = min(args.log_every, args.steps)
    t0 = time.time()
    model.fit(dataset(train, tokenizer, args, args.seed), epochs=args.steps // log_every, steps_per_epoch=log_every,
              callbacks=[LossLog(out / "loss.csv", log_every)], verbose=0)
    seconds = time.time() - t0
    end_loss, end_acc = evaluate()
    print(f"held-out at step {args.steps}: loss {end_loss:.4f}  acc {end_acc:.4f}  ({seconds:.0f} s)", flush=True)

    export_checkpoint(model, out / "model.safetensors")
    (out / "config.json").write_text(json.dumps(bert_config_json(cfg), indent=2))
    summary = {"args": vars(args), "train_documents": len(train_docs), "heldout_documents": len(heldout_docs),
               "train_examples": len(train), "parameters": model.count_params(),
               "heldout_loss_start": start_loss, "heldout_loss_end": end_loss, "heldout_accuracy_start": start_acc,
               "heldout_accuracy_end": end_acc, "train_seconds": seconds, "steps": args.steps // log_every * log_every}
    (out / "run.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    return summary


def main(argv=None) -> dict:
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
