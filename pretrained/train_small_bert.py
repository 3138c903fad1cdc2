"""Pre-train bert4k's small Chinese encoder on CPU: masked LM or ELECTRA replaced-token detection, resumable.

Corpus and vocabulary: `pretrained/corpus.py` (all the shared Chinese text no task evaluates on; the Chinese BERT
WordPiece tokens it uses plus the characters BERT lacks). Documents are tokenized once, grouped into jieba words and
packed into rows of `--maxlen` tokens (`pretrained/batches.py`); 1% of the rows are held out for validation.

- `--objective mlm`: BERT (4 layers, hidden 256, 4 heads, FFN 1024), whole-word masking 15 % (80/10/10), the MLM
  head run only at the masked positions. `--neighbour-init 1.7 --unigram-bias` start each head attending to one
  neighbour and the output at the unigram distribution: without them a small model spends thousands of steps
  predicting from the bag of context tokens, blind to their order (`pretrained/context_order.py` measures it).
- `--objective electra`: the same BERT as the discriminator (per-token replaced/original head) and a generator of
  the same `Transformer` class (hidden `--generator-hidden`, embeddings tied to the discriminator's through
  `Embedding-Mapping`), masks all `[MASK]`, loss = MLM + 50 × replaced-token detection (`bert4k.pretraining`).

Training resumes where it stopped: `BackupAndRestore` in `--out/run/backup` every `--eval-every` steps, and each
batch is a function of (seed, step) only, so a resumed run sees the same data as an uninterrupted one. The learning
rate schedule spans `--steps`; stop any time (kill) and rerun the same command to continue.

    python pretrained/train_small_bert.py --objective electra --steps 6000 --out runs/pretrain_electra
    python pretrained/train_small_bert.py --objective electra --steps 6000 --out runs/pretrain_electra --export

`--export` (also done at the end of training) writes into `--out`, from the latest backup: `config.json` (HF BERT),
`model.safetensors` (HF `BertForMaskedLM` names; for `electra` the discriminator with an untrained MLM head, and
`electra/` + `electra_generator/` in HF ELECTRA layout: `export_electra`), `vocab.txt`, `training.json`, `log.csv`,
`learning_curve.png`.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tasks"))
import batches
import common
import corpus
import keras
import numpy as np
from safetensors.numpy import load_file

from bert4k import build_transformer_model, training
from bert4k.checkpoints.bert import bert_specs
from bert4k.checkpoints.electra import electra_specs
from bert4k.checkpoints.specs import export_tensors, linear_spec
from bert4k.checkpoints.writers import save_safetensors
from bert4k.models.checkpoint_io import export_checkpoint
from bert4k.pretraining import MaskedLMAtPositions, ReplacedTokenDetection, tie_embeddings
from bert4k.tokenizers import Tokenizer

ARCHITECTURE = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
                    max_position_embeddings=512, type_vocab_size=2, hidden_act="gelu",
                    hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, initializer_range=0.02,
                    layer_norm_eps=1e-12, pad_token_id=0)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--objective", choices=("mlm", "electra"), default="electra")
    p.add_argument("--out", default=str(common.PRETRAINED), help="output folder (default: %(default)s)")
    p.add_argument("--steps", type=int, default=6000, help="length of the learning-rate schedule, in steps")
    p.add_argument("--stop-at", type=int, default=0, help="stop after this many steps (0: --steps)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--maxlen", type=int, default=256, help="tokens per row, [CLS]/[SEP] included")
    p.add_argument("--lr", type=float, default=5e-4, help="peak learning rate")
    p.add_argument("--warmup", type=float, default=0.05, help="warmup fraction of --steps")
    p.add_argument("--generator-hidden", type=int, default=64, help="electra generator hidden size")
    p.add_argument("--rtd-weight", type=float, default=50.0)
    p.add_argument("--min-count", type=int, default=2, help="keep tokens/characters used this often")
    p.add_argument("--eval-every", type=int, default=50, help="steps per logged 'epoch' (backup + validation)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fp32", action="store_true", help="float32 instead of mixed bfloat16")
    p.add_argument("--no-xla", action="store_true", help="run the train step without XLA")
    p.add_argument("--hidden", type=int, default=ARCHITECTURE["hidden_size"], help="hidden size (heads: hidden / 64)")
    p.add_argument("--layers", type=int, default=ARCHITECTURE["num_hidden_layers"])
    p.add_argument("--masking", choices=("word", "token"), default="word",
                   help="mask whole jieba words, or single tokens (intra-word neighbours stay visible)")
    p.add_argument("--dropout", type=float, default=ARCHITECTURE["hidden_dropout_prob"],
                   help="hidden and attention dropout while pre-training (the exported config keeps 0.1)")
    p.add_argument("--neighbour-init", type=float, default=0.0, metavar="ALPHA",
                   help="start each head attending to one neighbour (-1, +1, -2, +2, ...) with strength ALPHA "
                        "(0: off; `neighbour_attention_init`)")
    p.add_argument("--unigram-bias", action="store_true",
                   help="start the MLM output bias at the log frequency of each token in the training rows, so "
                        "training begins at the unigram solution instead of spending its first steps finding it")
    p.add_argument("--train-rows", type=int, default=0, help="train on the first N training rows only (0: all); "
                   "the overfitting check of the recipe")
    p.add_argument("--export", action="store_true", help="only export the latest backup")
    p.add_argument("--data-dir", default=str(common.DATA))
    p.add_argument("--cache", default=str(common.REPO / "runs" / "pretrain_cache"), help="tokenized corpus cache")
    return p.parse_args(argv)


def prepare(args, run: Path) -> tuple[Tokenizer, list, list, dict]:
    """Vocabulary and packed rows, computed once and cached in `--cache` (they depend on the data, maxlen and
    min-count only); the vocabulary is copied into `run/`."""
    cache_dir = Path(args.cache)
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache = cache_dir / f"rows_{args.maxlen}_{args.min_count}.npz"
    vocab_file = cache_dir / f"vocab_{args.min_count}.txt"
    if not vocab_file.exists() or not cache.exists():
        docs, sources = corpus.documents()
        vocab, vocab_stats = corpus.cut_vocab(docs, str(common.data_path(*common.FULL_VOCAB)), args.min_count)
        tmp = vocab_file.with_suffix(".tmp")
        tmp.write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
        os.replace(tmp, vocab_file)
        tokenizer = Tokenizer(str(vocab_file), do_lower_case=True)
        rows, words = batches.pack(docs, tokenizer, args.maxlen)
        stats = {"sources": sources, "documents": len(docs), "characters": sum(map(len, docs)), **vocab_stats,
                 "vocab_size": len(vocab), "rows": len(rows), "tokens": int(sum(map(len, rows)))}
        lengths = np.cumsum([0, *map(len, rows)])
        with open(cache_dir / "cache.tmp.npz", "wb") as f:
            np.savez(f, ids=np.concatenate(rows), words=np.concatenate(words), lengths=lengths,
                     stats=json.dumps(stats))
        os.replace(cache_dir / "cache.tmp.npz", cache)
    shutil.copy(vocab_file, run / "vocab.txt")
    with np.load(cache) as data:
        bounds, ids, word_ids, stats = data["lengths"], data["ids"], data["words"], json.loads(str(data["stats"]))
    rows = np.split(ids, bounds[1:-1])
    words = np.split(word_ids, bounds[1:-1])
    return Tokenizer(str(run / "vocab.txt"), do_lower_case=True), rows, words, stats


def neighbour_attention_init(model, alpha: float, std: float, seed: int = 0) -> None:
    """Start every head looking at one neighbour: head h of each layer attends from position i to i + d_h
    (d = -1, +1, -2, +2, ...), so masked-LM training need not first discover position-based attention.

    The position table becomes pairs (cos ωp, sin ωp) with ω ~ U(0, π) per pair (scaled to `std`): rows p + d and q
    then have a dot product Σ cos(ω (p + d − q)), peaked at q = p + d and near 0 elsewhere, and the shift by d is
    the per-pair rotation A_d. Each head's slice of the query kernel gets α·A_d, the key kernel α·I, on top of
    the random initialisation; token content meets a rotation with a random angle, which averages out."""
    table = model.get_layer("Embedding-Position").embeddings
    positions, size = table.shape
    rng = np.random.default_rng(seed)
    omega = rng.uniform(0, np.pi, size // 2)
    angles = np.arange(positions)[:, None] * omega[None]
    pairs = np.stack([np.cos(angles), np.sin(angles)], -1).reshape(positions, size)
    table.assign((pairs * std / pairs.std()).astype("float32"))
    heads = model.config.num_attention_heads
    offsets = [(-1) ** (h + 1) * (h // 2 + 1) for h in range(heads)]  # -1, +1, -2, +2, ...
    width = size // heads
    shift = np.zeros((size, size))
    for h, d in enumerate(offsets):
        for k in range(h * width // 2, (h + 1) * width // 2):
            c, s = np.cos(omega[k] * d), np.sin(omega[k] * d)
            shift[2 * k:2 * k + 2, 2 * k:2 * k + 2] = [[c, s], [-s, c]]
    for block in model.blocks:
        query, key = block.attention.query.kernel, block.attention.key.kernel
        query.assign((query.numpy() + alpha * shift).astype("float32"))
        key.assign((key.numpy() + alpha * np.eye(size)).astype("float32"))


def start_at_unigram(mlm_model, rows: list, vocab_size: int) -> None:
    """Set the MLM output bias to the log frequency (add-one) of each token in `rows`: the logits then start at
    the unigram distribution, and the first steps need not push every prediction there — which otherwise
    turns attention away from the neighbours `neighbour_attention_init` points it at."""
    counts = np.bincount(np.concatenate(rows), minlength=vocab_size) + 1.0
    bias = next(v for v in mlm_model.weights if v.path.endswith("MLM-Bias/bias"))
    bias.assign(np.log(counts / counts.sum()).astype("float32"))


def build(args, vocab_size: int):
    """`(trainer, exported model, config)` for the objective."""
    config = {**ARCHITECTURE, "hidden_size": args.hidden, "num_attention_heads": max(1, args.hidden // 64),
              "intermediate_size": 4 * args.hidden, "num_hidden_layers": args.layers, "vocab_size": vocab_size,
              "model_type": "bert"}
    dropout = {"hidden_dropout_prob": args.dropout, "attention_probs_dropout_prob": args.dropout}
    if args.objective == "mlm":
        config["architectures"] = ["BertForMaskedLM"]
        model = build_transformer_model({**config, **dropout}, application="mlm", logits=True)
        return MaskedLMAtPositions(model, name="mlm_pretrainer"), model, config, None
    config["architectures"] = ["BertModel"]
    discriminator = build_transformer_model({**config, **dropout}, application="encoder")
    hidden = args.generator_hidden
    generator_config = {**config, "hidden_size": hidden, "embedding_size": config["hidden_size"],
                        "num_attention_heads": max(1, hidden // 64), "intermediate_size": 4 * hidden,
                        "architectures": ["BertForMaskedLM"]}
    generator = build_transformer_model({**generator_config, **dropout}, application="mlm", logits=True)
    tie_embeddings(generator, discriminator)
    trainer = ReplacedTokenDetection(generator, discriminator, rtd_weight=args.rtd_weight, seed=args.seed,
                                     name="electra_pretrainer")
    return trainer, discriminator, config, generator


class CpuClock(keras.callbacks.Callback):
    """Adds `cpu_seconds` and `wall_seconds` (cumulative over resumed sessions, kept in `state`) to the logs."""

    def __init__(self, state: Path):
        super().__init__()
        self.state = state
        saved = json.loads(state.read_text()) if state.exists() else {"cpu": 0.0, "wall": 0.0}
        self.cpu0, self.wall0 = saved["cpu"] - time.process_time(), saved["wall"] - time.time()

    def on_epoch_end(self, epoch, logs=None):
        cpu, wall = self.cpu0 + time.process_time(), self.wall0 + time.time()
        if logs is not None:
            logs["cpu_seconds"], logs["wall_seconds"] = round(cpu), round(wall)
        tmp = self.state.with_suffix(".tmp")
        tmp.write_text(json.dumps({"cpu": cpu, "wall": wall}))
        os.replace(tmp, self.state)


def export(args, out: Path, run: Path, trainer, model, generator, config, stats, steps: int) -> dict:
    """Write the model files and `training.json` into `out` from the trainer's current weights."""
    if generator is None:
        export_checkpoint(model, out / "model.safetensors")
    else:
        export_electra(trainer, model, generator, config, out)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    for folder in (out, out / "electra", out / "electra_generator"):
        if folder == out or generator is not None:
            keep_trained_positions(folder, args.maxlen)
    shutil.copy(run / "vocab.txt", out / "vocab.txt")
    for name in ("log.csv", "learning_curve.png"):
        if (run / name).exists():
            shutil.copy(run / name, out / name)
    log = training.read_log(str(run / "log.csv")) if (run / "log.csv").exists() else []
    record = {"objective": args.objective, "steps": steps, "schedule_steps": args.steps,
              "batch_size": args.batch_size, "maxlen": args.maxlen, "tokens_seen": steps * args.batch_size * args.maxlen,
              "lr": args.lr, "warmup": args.warmup, "precision": ("float32" if args.fp32 else "mixed_bfloat16") + ("" if args.no_xla else " + XLA"),
              "train_rows": args.train_rows or None, "masking": args.masking, "dropout": args.dropout,
              "neighbour_init": args.neighbour_init, "unigram_bias": args.unigram_bias,
              "generator_hidden": args.generator_hidden if generator is not None else None,
              "parameters": model.count_params(), **stats, "last": log[-1] if log else None}
    (out / "training.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return record


def keep_trained_positions(folder: Path, positions: int) -> None:
    """Cut the position table of `folder`'s model.safetensors + config.json to the `positions` rows pre-training
    used (the rest were never trained): a longer input then fails loudly instead of using random positions."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if config["max_position_embeddings"] <= positions:
        return
    tensors = load_file(str(folder / "model.safetensors"))
    for name in [n for n in tensors if n.endswith("embeddings.position_embeddings.weight")]:
        tensors[name] = tensors[name][:positions]
    save_safetensors(tensors, folder / "model.safetensors")
    config["max_position_embeddings"] = positions
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def export_electra(trainer, discriminator, generator, config: dict, out: Path) -> None:
    """`model.safetensors`: the discriminator as HF `BertForMaskedLM` (its MLM head freshly initialised:
    ELECTRA trains none), so every task script loads it as `bert`; `electra/`: HF `ElectraForPreTraining`
    (discriminator + its replaced-token head; `transformers` and `build_electra_discriminator` load it);
    `electra_generator/`: HF `ElectraForMaskedLM` (the generator)."""
    mlm = build_transformer_model(dict(config), application="mlm")
    tensors = export_tensors(bert_specs(mlm))
    tensors.update(export_tensors(bert_specs(discriminator)))
    save_safetensors(tensors, out / "model.safetensors")
    electra = {**config, "model_type": "electra", "embedding_size": config["hidden_size"],
               "architectures": ["ElectraForPreTraining"]}
    body = export_tensors(electra_specs(discriminator) + linear_spec(trainer.rtd_dense, "discriminator_predictions.dense")
                          + linear_spec(trainer.rtd_output, "discriminator_predictions.dense_prediction"))
    (out / "electra").mkdir(exist_ok=True)
    save_safetensors({(k if k.startswith("discriminator_") else "electra." + k): v for k, v in body.items()},
                     out / "electra" / "model.safetensors")
    (out / "electra" / "config.json").write_text(json.dumps(electra, indent=2) + "\n", encoding="utf-8")
    gen_config = {**electra, "hidden_size": generator.config.hidden_size,
                  "num_attention_heads": generator.config.num_attention_heads,
                  "intermediate_size": generator.config.intermediate_size, "architectures": ["ElectraForMaskedLM"]}
    (out / "electra_generator").mkdir(exist_ok=True)
    save_safetensors({"electra." + k if not k.startswith(("generator_", "discriminator_")) else k: v
                      for k, v in export_tensors(electra_specs(generator)).items()},
                     out / "electra_generator" / "model.safetensors")
    (out / "electra_generator" / "config.json").write_text(json.dumps(gen_config, indent=2) + "\n", encoding="utf-8")


def main(argv=None) -> dict:
    args = parse_args(argv)
    common.DATA = Path(args.data_dir)
    out = Path(args.out)
    run = out / "run"
    run.mkdir(parents=True, exist_ok=True)
    training.set_seed(args.seed)
    if not args.fp32:
        training.use_mixed_precision("mixed_bfloat16")
    tokenizer, rows, words, stats = prepare(args, run)
    n_val = max(4 * args.batch_size, len(rows) // 100)
    specials = tokenizer.tokens_to_ids(corpus.SPECIALS)
    kwargs = dict(batch_size=args.batch_size, maxlen=args.maxlen, k=int(np.ceil(0.2 * args.maxlen)),
                  vocab_size=tokenizer.vocab_size, cls_id=specials[2], sep_id=specials[3], mask_id=specials[4],
                  first_normal_id=max(specials) + 1,
                  **({"mask_prob": 1.0, "random_prob": 0.0} if args.objective == "electra" else {}))
    end = n_val + args.train_rows if args.train_rows else len(rows)
    if args.masking == "token":  # every token its own "word"
        words = [np.arange(len(r)) for r in rows]
    train = batches.StepBatches(rows[n_val:end], words[n_val:end], seed=args.seed, **kwargs)
    val = batches.StepBatches(rows[:n_val], words[:n_val], seed=args.seed + 1, **kwargs)
    trainer, model, config, generator = build(args, tokenizer.vocab_size)
    if args.neighbour_init:
        neighbour_attention_init(model, args.neighbour_init, config["initializer_range"], args.seed)
    if args.unigram_bias:
        start_at_unigram(generator or model, rows[n_val:end], tokenizer.vocab_size)
    stop = args.stop_at or args.steps
    epochs = -(-stop // args.eval_every)
    optimizer = training.create_optimizer(trainer, args.lr, total_steps=args.steps, warmup=args.warmup,
                                          weight_decay=0.01)
    trainer.compile(optimizer=optimizer, jit_compile=not args.no_xla)
    val_batches = [val.batch(i) for i in range(min(8, n_val // args.batch_size))]
    trainer.predict_on_batch(val_batches[0])  # build
    metadata = run / "backup" / "training_metadata.json"
    first_epoch = json.loads(metadata.read_text())["epoch"] if metadata.exists() else 0
    if args.export:  # the finished run, else the latest backup of a run in progress
        trainer.optimizer.build(trainer.trainable_variables)
        final = run / "final.weights.h5"
        trainer.load_weights(final if final.exists() else run / "backup" / "latest.weights.h5")
        if final.exists():
            first_epoch = -(-(args.stop_at or args.steps) // args.eval_every)
        return export(args, out, run, trainer, model, generator, config, stats, first_epoch * args.eval_every)
    if (run / "final.weights.h5").exists():
        raise SystemExit(f"{run} holds a finished run (final.weights.h5); use --export or another --out")
    print(f"corpus: {stats['documents']} documents, {stats['rows']} rows, vocab {stats['vocab_size']}; "
          f"{args.objective}, {model.count_params():,} parameters; from step {first_epoch * args.eval_every}")
    import tensorflow as tf

    val_data = tf.data.Dataset.from_tensor_slices(
        (tuple(np.concatenate([b[i] for b in val_batches]) for i in range(4)),)).batch(args.batch_size)
    callbacks = training.training_callbacks(str(run), title=f"{args.objective} pre-training",
                                            before=[CpuClock(run / "clock.json")])
    trainer.fit(train.dataset(first_epoch * args.eval_every), validation_data=val_data, epochs=epochs,
                steps_per_epoch=args.eval_every, callbacks=callbacks, verbose=2)
    trainer.save_weights(run / "final.weights.h5")  # BackupAndRestore deletes its backup at the end
    record = export(args, out, run, trainer, model, generator, config, stats, epochs * args.eval_every)
    print(json.dumps(record, ensure_ascii=False))
    return record


if __name__ == "__main__":
    main()
