"""Title generation with UniLM: CSL paper abstract → title, one Transformer with the `unilm` mask.

`[CLS] abstract [SEP] title [SEP]`: the abstract (segment 0) attends bidirectionally, the title (segment 1)
causally and to the whole abstract; the loss is next-token cross-entropy on the title. Titles are decoded with
the shared KV-cached decoder (`bert4k.generation.generate`, beam search by default) and scored with character
ROUGE-L (F) and BLEU-4 against the reference, with distinct-1/2 and the fraction of distinct titles (repetition
shows there), beside the "first 20 characters of the abstract" baseline. Decoding uses a repetition penalty on
the generated tokens, no repeated character trigram (`--no-repeat-ngram`) and length-normalised beam scores; `--copy-only` lets a title use only the abstract's tokens
(`generate(allowed_ids=...)`). A dev cut of the training part (`--dev-fraction`) is decoded every `--dev-every`
epochs, free and copy-only; training ends with the weights of the best dev ROUGE-L (of the chosen decoding).

Data: csl-title/dev.tsv (1000 papers; the official train split is absent), a deterministic 20% held out by MD5
of the abstract.

    python tasks/seq2seq.py                          # from our pretrained model
    python tasks/seq2seq.py --decode greedy --epochs 5
    python tasks/seq2seq.py --config C --checkpoint K --vocab V

Your data: --train FILE [--test FILE], TSV with a header row or JSONL, fields `source` (the abstract) and `target`
(the title); without --test a deterministic 20% of --train is held out. `--predict FILE --saved DIR` generates a
target for each `source` of FILE with a saved model (and scores them when FILE has `target`).

Writes to --out: predictions.tsv, metrics.json, log.csv, learning_curve.png, model.keras + vocab.txt.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import common
import numpy as np
from lm import visible_text

from bert4k import objectives, training
from bert4k.generation import generate
from bert4k.metrics import corpus_bleu, corpus_rouge_l

HELD_OUT = common.SPLITS["csl-title"]
DEV_FRACTION = 0.1
LEAD = 20


def parse_args(argv=None):
    p = common.task_parser(__doc__, out="seq2seq", epochs=16, batch_size=16, maxlen=256, lr=5e-4,
                           columns="source, target", dev=False)
    p.add_argument("--max-title-tokens", type=int, default=40)
    p.add_argument("--decode", choices=("beam", "greedy"), default="beam")
    p.add_argument("--beams", type=int, default=5)
    p.add_argument("--repetition-penalty", type=float, default=1.2,
                   help="CTRL-style, on the generated tokens only (UniLM: not the abstract); 1 = off (default: 1.2)")
    p.add_argument("--no-repeat-ngram", type=int, default=3,
                   help="no character n-gram of this size twice in a title (0 = off; chosen on dev ROUGE-L; "
                        "default: %(default)s)")
    p.add_argument("--length-penalty", type=float, default=1.0,
                   help="beam score = sum log p / length ** this (default: %(default)s)")
    p.add_argument("--copy-only", action=argparse.BooleanOptionalAction, default=True,
                   help="generate only tokens of the source (a copy constraint, chosen on dev ROUGE-L; default: on)")
    p.add_argument("--dev-fraction", type=float, default=None,
                   help="the deterministic part of the training data scored every --dev-every epochs; the weights "
                        f"of the best dev ROUGE-L are kept (default: {DEV_FRACTION} on the shared data, 0 with --train)")
    p.add_argument("--dev-every", type=int, default=2)
    args = p.parse_args(argv)
    if args.dev_fraction is not None and not 0 <= args.dev_fraction < 1:
        p.error(f"--dev-fraction must be in [0, 1), got {args.dev_fraction}")
    return args


def load(limit: int = 0):
    """`(train, test)` lists of `(abstract, title)`."""
    path = common.data_path("csl-title", "dev.tsv")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3:
                raise ValueError(f"{path}:{n}: expected 3 tab-separated columns, got {len(parts)}")
            rows.append((parts[1], parts[2]))
    train = [r for r in rows if not common.held_out(r[0], HELD_OUT)]
    test = [r for r in rows if common.held_out(r[0], HELD_OUT)]
    return common.limited(train, limit), common.limited(test, limit)


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct character n-grams over all n-grams of all texts (Li et al. 2016's distinct-n); 0 if none."""
    grams = [t[i:i + n] for t in texts for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def load_files(args):
    """`(train, test)` lists of `(source, target)` from --train/--test."""
    train, test = common.split_records(args, ("source", "target"), "source", HELD_OUT)
    return ([(r["source"], r["target"]) for r in common.limited(train, args.limit)],
            [(r["source"], r["target"]) for r in common.limited(test, args.limit)])


def predict_file(args) -> dict:
    """Generate a target for each `source` of --predict FILE with the model saved in --saved."""
    model, tokenizer = common.load_saved(args.saved)
    rows = common.read_records(args.predict, ("source",))
    generated = decode_titles(model, tokenizer, [r["source"] for r in rows], args)
    out = Path(args.out)
    with open(out / "predictions.tsv", "w", encoding="utf-8") as f:
        f.write("generated\tsource\n")
        f.writelines(f"{g}\t{r['source']}\n" for r, g in zip(rows, generated))
    result = {"predicted": len(rows), "file": args.predict, "saved": args.saved}
    if all("target" in r for r in rows):
        result.update(scores(generated, [r["target"] for r in rows]))
    print(result)
    print(f"wrote {out / 'predictions.tsv'}")
    return result


def scores(candidates: list[str], references: list[str]) -> dict:
    """Character ROUGE-L (F), BLEU-4, distinct-1/2 and the fraction of distinct outputs."""
    return {"rouge_l": corpus_rouge_l(candidates, references)[0],
            "bleu": corpus_bleu(candidates, [[r] for r in references]),
            "distinct_1": distinct_n(candidates, 1), "distinct_2": distinct_n(candidates, 2),
            "unique_outputs": len(set(candidates)) / max(len(candidates), 1)}


def decode_titles(model, tokenizer, abstracts: list[str], args, copy_only: bool | None = None) -> list[str]:
    """Generate a title per abstract, in batches (`copy_only`: from the abstract's tokens only; default
    `args.copy_only`)."""
    copy_only = args.copy_only if copy_only is None else copy_only
    sep = tokenizer.token_to_id("[SEP]")
    source_len = args.maxlen - args.max_title_tokens
    titles = []
    for start in range(0, len(abstracts), args.batch_size):
        batch = [tokenizer.encode(a, maxlen=source_len) for a in abstracts[start:start + args.batch_size]]
        ids = generate(model, ([b[0] for b in batch], [b[1] for b in batch]), args.max_title_tokens,
                       method=args.decode, num_beams=args.beams, stop_ids=sep,
                       repetition_penalty=args.repetition_penalty, length_penalty=args.length_penalty,
                       no_repeat_ngram_size=args.no_repeat_ngram,
                       allowed_ids=[sorted(set(b[0][1:-1])) for b in batch] if copy_only else None)
        for row in ids:
            row = [int(i) for i in row]
            titles.append(visible_text(tokenizer, row[:row.index(sep)] if sep in row else row))
    return titles


def dev_scores(model, tokenizer, dev: list[tuple[str, str]], args) -> dict[str, float]:
    """Dev ROUGE-L of free and copy-only decoding."""
    abstracts, references = [a for a, _ in dev], [t for _, t in dev]
    return {f"dev_rouge_l{suffix}": scores(decode_titles(model, tokenizer, abstracts, args, copy), references)["rouge_l"]
            for suffix, copy in (("", False), ("_copy", True))}


def main(argv=None) -> dict:
    return common.run_task(argv, parse_args, predict_file, run_training)


def run_training(args: argparse.Namespace, out: Path, started: float) -> dict:
    """Train on the run's training data, score its held-out part and save the model into `out`."""
    train, test = load_files(args) if args.train else load(args.limit)
    dataset = args.train or "csl-title"
    fraction = args.dev_fraction if args.dev_fraction is not None else 0.0 if args.train else DEV_FRACTION
    train, dev = common.dev_split(train, lambda pair: pair[0], fraction)
    print(f"{dataset}: {len(train)} train, {len(dev)} dev, {len(test)} held-out")
    references = [t for _, t in test]
    metrics = {"task": "seq2seq", "dataset": dataset, "train_examples": len(train), "eval_examples": len(test),
               "baselines": {f"lead{LEAD}": scores([a[:LEAD] for a, _ in test], references)}}
    print("baseline:", metrics["baselines"])

    source = common.model_source(args)
    tokenizer = source.tokenizer()
    encoded = [tokenizer.encode(a, t, maxlen=args.maxlen) for a, t in train]
    ids, segments = [e[0] for e in encoded], [e[1] for e in encoded]
    labels = [[i if s == 1 else 0 for i, s in zip(row, seg)] for row, seg in zip(ids, segments)]
    model = source.build(args.model, application="unilm", logits=True)
    print(f"model: {source.name}, {model.count_params():,} parameters")
    data = common.dataset([ids, segments], labels, args.batch_size, shuffle=True, seed=args.seed)
    keep_best = training.BestWeights(str(out / "best.weights.h5"), "dev_rouge_l_copy" if args.copy_only
                                     else "dev_rouge_l")
    dev_rouge = training.EpochEvaluation(lambda: dev_scores(model, tokenizer, dev, args), args.dev_every)
    _, train_seconds = common.timed(common.fit, model, args, out, data, len(train),
                                    **objectives.compile_kwargs("unilm", from_logits=True),
                                    title=f"{dataset} title generation ({source.name})",
                                    before=[dev_rouge, keep_best] if dev else [])
    common.save_model(model, source.vocab, out)
    if dev:
        metrics["dev"] = {**keep_best.best(), **dev_scores(model, tokenizer, dev, args)}
        print("dev (best epoch):", metrics["dev"])

    titles, decode_seconds = common.timed(decode_titles, model, tokenizer, [a for a, _ in test], args)
    with open(out / "predictions.tsv", "w", encoding="utf-8") as f:
        f.write("reference\tgenerated\tabstract\n")
        f.writelines(f"{r}\t{g}\t{a}\n" for (a, r), g in zip(test, titles))
    metrics.update(scores(titles, references), train_seconds=train_seconds, decode_seconds=decode_seconds,
                   decode=args.decode if args.decode == "greedy" else f"beam{args.beams}",
                   mean_title_chars=float(np.mean([len(t) for t in titles])), parameters=model.count_params())
    return common.finish(out, metrics, args, started, source)


if __name__ == "__main__":
    main()
