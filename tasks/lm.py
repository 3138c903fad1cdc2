"""GPT-style language model on Tang poems: one Transformer with the causal (`lm`) mask.

Each poem is `[CLS] poem [SEP]` (its lines joined; Traditional script as stored). The model learns next-token
prediction; the script reports the per-token perplexity on held-out poems (a deterministic 5% by MD5 of the poem
id, [SEP] included, [CLS] not predicted) beside an add-one-smoothed unigram model, and writes samples from the
prompts taken from held-out poems: nucleus sampling constrained to the prompt poem's form (5 or 7 characters per
clause, punctuation exactly at clause ends, as many clauses as the poem), or free (`--free-form`, the shared
KV-cached decoder `bert4k.generation.generate`). `samples_in_form` is the fraction of samples with equal 5- or
7-character clauses; a generated `[UNK]` is written as "□", never dropped.

The vocabulary is cut to the tokens seen in the training poems (`keep_tokens`), so a checkpoint with a large
vocabulary (ours, or a public BERT/GPT-2 with a BERT vocab) is trimmed on load.

    python tasks/lm.py                               # from our pretrained model, 8000 training poems
    python tasks/lm.py --from-scratch --train-poems 0 --epochs 2
    python tasks/lm.py --config C --checkpoint K --vocab V --model gpt2

Your data: --train FILE [--test FILE], TSV with a header row or JSONL, field `text` (one document each); without
--test a deterministic 5% of --train (by MD5 of the text) is held out. `--predict FILE --saved DIR` reports the
perplexity of a saved model on the texts of FILE.

Writes to --out: samples.txt, metrics.json, log.csv, learning_curve.png, model.keras + vocab.txt (the cut
vocabulary, in the model's ids).
"""
from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from pathlib import Path

import common
import numpy as np

from bert4k import objectives
from bert4k.generation import generate
from bert4k.tokenizers.vocab import is_cjk

HELD_OUT = common.SPLITS["tang-poems"]


def parse_args(argv=None):
    p = common.task_parser(__doc__, out="lm", epochs=1, batch_size=32, maxlen=80, lr=5e-4, columns="text",
                           dev=False)
    p.add_argument("--train-poems", type=int, default=8000, help="training poems (0: all; default: %(default)s)")
    p.add_argument("--samples", type=int, default=20, help="poems to sample (default: %(default)s)")
    p.add_argument("--prompt-chars", type=int, default=2, help="chars of a held-out poem used as prompt")
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--min-count", type=int, default=1, help="keep tokens seen this often in training poems")
    p.add_argument("--free-form", action="store_true",
                   help="sample without the poem-form constraint (clause length and punctuation)")
    return p.parse_args(argv)


CLAUSE_ENDS = "，。？！；"
UNK_MARK = "□"  # how a generated [UNK] is shown (never dropped)


def poem_form(poem: str) -> tuple[int, int] | None:
    """`(characters per clause, clauses)` when every clause of `poem` has the same length 5 or 7, else None."""
    clauses, current = [], 0
    for ch in poem:
        if ch in CLAUSE_ENDS:
            clauses.append(current)
            current = 0
        else:
            current += 1
    if current or not clauses or len(set(clauses)) != 1 or clauses[0] not in (5, 7):
        return None
    return clauses[0], len(clauses)


def visible_text(tokenizer, ids: list[int]) -> str:
    """`tokenizer.decode` with every `[UNK]` shown as `UNK_MARK` instead of dropped."""
    tokens = [UNK_MARK if t == "[UNK]" else t for t in tokenizer.ids_to_tokens(ids)]
    return tokenizer.decode(ids, tokens=tokens)


def sample_in_form(model, prompts: list[list[int]], forms: list[tuple[int, int]], allowed_chars: np.ndarray,
                   end_ids: np.ndarray, top_p: float, seed: int) -> list[list[int]]:
    """Nucleus sampling that keeps each poem's form: at clause ends only `end_ids` (punctuation), elsewhere only
    `allowed_chars` (boolean mask over the vocabulary: characters, no specials or punctuation). `prompts` are
    `[CLS] + first chars` (no punctuation inside); returns the new ids of each poem (form complete)."""
    rng = np.random.default_rng(seed)
    rows = [list(p) for p in prompts]
    lengths = [(n + 1) * k for n, k in forms]  # chars + one punctuation per clause
    while True:
        active = [i for i, r in enumerate(rows) if len(r) - 1 < lengths[i]]
        if not active:
            break
        width = max(len(rows[i]) for i in active)
        ids = np.zeros((len(active), width), "int32")
        for j, i in enumerate(active):
            ids[j, :len(rows[i])] = rows[i]
        inputs = ids if len(model.inputs) == 1 else [ids, np.zeros_like(ids)]
        logits = np.asarray(model.predict_on_batch(inputs), dtype=np.float64)
        for j, i in enumerate(active):
            position = len(rows[i]) - 1  # index of the next char inside the poem
            at_end = (position + 1) % (forms[i][0] + 1) == 0
            allowed = np.zeros(logits.shape[-1], bool)
            if at_end:
                allowed[end_ids] = True
            else:
                allowed = allowed_chars
            row = np.where(allowed, logits[j, len(rows[i]) - 1], -np.inf)
            p = np.exp(row - row.max())
            p /= p.sum()
            order = np.argsort(-p)
            keep = order[:max(1, int(np.searchsorted(np.cumsum(p[order]), top_p)) + 1)]
            q = p[keep] / p[keep].sum()
            rows[i].append(int(rng.choice(keep, p=q)))
    return [r[len(p):] for r, p in zip(rows, prompts)]


def load(train_poems: int, limit: int = 0):
    """`(train, test)` poem texts."""
    path = common.data_path("tang-poems", "tang_poems_train.jsonl")
    train, test = [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            record = json.loads(line)
            if "paragraphs" not in record or "id" not in record:
                raise ValueError(f"{path}:{n}: expected a record with 'paragraphs' and 'id'")
            (test if common.held_out(record["id"], HELD_OUT) else train).append("".join(record["paragraphs"]))
    train = common.limited(train, limit or train_poems)
    return train, common.limited(test, limit)


def load_files(args):
    """`(train, test)` texts from --train/--test."""
    train, test = common.split_records(args, ("text",), "text", HELD_OUT)
    return ([r["text"] for r in common.limited(train, args.limit)],
            [r["text"] for r in common.limited(test, args.limit)])


def predict_file(args) -> dict:
    """Perplexity of the model saved in --saved on the texts of --predict FILE."""
    model, tokenizer = common.load_saved(args.saved)
    rows = [tokenizer.encode(r["text"], maxlen=args.maxlen)[0] for r in common.read_records(args.predict, ("text",))]
    result = {"perplexity": perplexity(model, rows, 2 * args.batch_size), "texts": len(rows), "file": args.predict,
              "saved": args.saved}
    print(json.dumps(result, ensure_ascii=False))
    return result


def perplexity(model, rows: list[list[int]], batch_size: int) -> float:
    """exp(mean next-token negative log-likelihood) over every token after the first of each row."""
    total, count = 0.0, 0
    order = np.argsort([len(r) for r in rows], kind="stable")
    for start in range(0, len(order), batch_size):
        batch = [rows[i] for i in order[start:start + batch_size]]
        ids = np.zeros((len(batch), max(len(r) for r in batch)), "int32")
        for i, r in enumerate(batch):
            ids[i, :len(r)] = r
        logits = np.asarray(model.predict_on_batch(ids if len(model.inputs) == 1 else [ids, np.zeros_like(ids)]),
                            dtype=np.float64)[:, :-1]
        targets = ids[:, 1:]
        log_z = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
        nll = log_z - np.take_along_axis(logits, targets[..., None], -1)[..., 0]
        real = targets != 0
        total += float(nll[real].sum())
        count += int(real.sum())
    return math.exp(total / count)


def unigram_perplexity(train_rows: list[list[int]], test_rows: list[list[int]], vocab_size: int) -> float:
    """The same quantity for an add-one-smoothed unigram model of the training tokens."""
    counts = Counter(i for r in train_rows for i in r[1:])
    total = sum(counts.values())
    nll = [-math.log((counts[i] + 1) / (total + vocab_size)) for r in test_rows for i in r[1:]]
    return math.exp(sum(nll) / len(nll))


def main(argv=None) -> dict:
    return common.run_task(argv, parse_args, predict_file, run_training)


def run_training(args: argparse.Namespace, out: Path, started: float) -> dict:
    """Train on the run's training data, score its held-out part and save the model into `out`."""
    train, test = load_files(args) if args.train else load(args.train_poems, args.limit)
    source = common.model_source(args)
    tokenizer = source.tokenizer()
    full_train = [tokenizer.encode(p, maxlen=args.maxlen)[0] for p in train]
    vocab = common.CompactVocab(tokenizer, full_train, args.min_count)
    train_rows = [vocab.to_compact[r].tolist() for r in full_train]
    test_rows = [vocab.to_compact[tokenizer.encode(p, maxlen=args.maxlen)[0]].tolist() for p in test]
    unk = vocab.to_compact[tokenizer.token_to_id("[UNK]")]
    unk_rate = float(np.mean([i == unk for r in test_rows for i in r]))
    print(f"tang poems: {len(train)} train, {len(test)} held-out; vocab {len(vocab)} "
          f"(held-out [UNK] rate {unk_rate:.3%})")

    model = source.build(args.model, application="lm", logits=True, keep_tokens=vocab.keep_tokens)
    print(f"model: {source.name}, {model.count_params():,} parameters")
    columns = [train_rows] if len(model.inputs) == 1 else [train_rows, [[0] * len(r) for r in train_rows]]
    data = common.dataset(columns, train_rows, args.batch_size, shuffle=True, seed=args.seed)
    _, train_seconds = common.timed(common.fit, model, args, out, data, len(train_rows),
                                    **objectives.compile_kwargs("lm", from_logits=True),
                                    title=f"{args.train or 'Tang poems'} LM ({source.name})")
    common.save_model(model, tokenizer.ids_to_tokens(vocab.keep_tokens), out)

    ppl, eval_seconds = common.timed(perplexity, model, test_rows, 2 * args.batch_size)
    sampled = [(p, r) for p, r in zip(test, test_rows) if poem_form(p)][:args.samples]
    prompts = [r[:1 + args.prompt_chars] for _, r in sampled]
    forms = [poem_form(p) for p, _ in sampled]
    sep = int(vocab.to_compact[tokenizer.token_to_id("[SEP]")])
    if args.free_form:
        new = generate(model, prompts, args.maxlen - 1 - args.prompt_chars, method="sample", top_p=args.top_p,
                       stop_ids=sep, seed=args.seed)
        new = [[int(i) for i in row] for row in new]
        new = [row[:row.index(sep)] if sep in row else row for row in new]
    else:
        tokens = tokenizer.ids_to_tokens(vocab.to_full.tolist())
        end_ids = np.array([i for i, t in enumerate(tokens) if t in CLAUSE_ENDS])
        allowed = np.array([len(t) == 1 and t not in CLAUSE_ENDS and is_cjk(t) for t in tokens])
        new = sample_in_form(model, prompts, forms, allowed, end_ids, args.top_p, args.seed)
    texts = [visible_text(tokenizer, vocab.to_full[prompt + row].tolist()) for prompt, row in zip(prompts, new)]
    with open(out / "samples.txt", "w", encoding="utf-8") as f:
        f.writelines(text + "\n" for text in texts)
    metrics = {"task": "lm", "dataset": args.train or "tang-poems", "perplexity": ppl,
               "baselines": {"unigram_perplexity": unigram_perplexity(train_rows, test_rows, len(vocab))},
               "train_poems": len(train_rows), "eval_poems": len(test_rows), "vocab_size": len(vocab),
               "eval_unk_rate": unk_rate, "samples_in_form": float(np.mean([poem_form(t) is not None for t in texts]))
               if texts else 0.0, "sample_decoding": "free" if args.free_form else "form-constrained",
               "train_seconds": train_seconds, "eval_seconds": eval_seconds,
               "parameters": model.count_params()}
    return common.finish(out, metrics, args, started, source)


if __name__ == "__main__":
    main()
