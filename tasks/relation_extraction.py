"""Relation extraction (subject, predicate, object) with the half-pointer / half-tagging model of
`bert4k.heads_relation` (subject start/end by sigmoid; the subject's start/end vectors injected by conditional
LayerNorm; then per-predicate object start/end), on any file in the DuIE / SKE JSON-lines format:

    {"text": "...", "spo_list": [{"subject": "...", "predicate": "...", "object": "..."}, ...]}

(DuIE 2.0's `"object": {"@value": "..."}` is read too). The shared data folder has no such corpus: `--demo N`
writes a synthetic one (N sentences built from templates, the right triples known) and trains on it.

Evaluation: a deterministic 20% of `--train` (by MD5 of the text) unless `--test FILE` is given; micro precision /
recall / F1 over exact `(subject, predicate, object)` string triples. The trained model is saved (model.keras +
vocab.txt), and `--predict FILE --saved DIR` extracts the triples of FILE's texts with it (FILE in the same format;
`spo_list` may be absent, otherwise it is scored).

Truncation: texts longer than `--maxlen` tokens are cut (the start is kept). A triple whose subject or object is
not inside the kept text (or not in the text at all) cannot be trained on: it is counted in `unreachable` and
still counts as gold at evaluation. Predicted spans map back to the text through the tokenizer's char offsets.

    python tasks/relation_extraction.py --train duie_train.json --test duie_dev.json --epochs 3
    python tasks/relation_extraction.py --demo 600 --tiny --epochs 8
    python tasks/relation_extraction.py --predict new.jsonl --saved runs/relation_extraction-duie_train-bert4k-small-zh

Writes to --out: metrics.json, predictions.jsonl, log.csv, learning_curve.png, model.keras + vocab.txt (and
demo.jsonl with --demo).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import common
import keras
import numpy as np

from bert4k import heads_relation as rel

HELD_OUT = 0.2


def parse_args(argv=None):
    p = common.task_parser(__doc__, out="relation_extraction", epochs=3, batch_size=16, maxlen=128, lr=2e-4,
                           columns="text, spo_list", dev=False, file_format="JSON lines with the fields text and "
                           "spo_list, a list of {subject, predicate, object} (DuIE / SKE format)")
    p.add_argument("--demo", type=int, default=0, help="write and use a synthetic corpus of N sentences")
    p.add_argument("--threshold", type=float, default=0.5, help="start/end probability threshold")
    return p.parse_args(argv)


# === data ===

def read_spo(path: Path, labelled: bool = True) -> list[dict]:
    """`[{"text", "spo": [(subject, predicate, object)]}]`; a malformed line raises naming file and line. With
    `labelled=False`, `spo_list` may be absent (then `spo` is empty)."""
    rows = []
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                spo = []
                for t in item["spo_list"] if labelled or "spo_list" in item else []:
                    obj = t["object"]["@value"] if isinstance(t["object"], dict) else t["object"]
                    if not (isinstance(t["subject"], str) and isinstance(obj, str) and t["subject"] and obj):
                        raise ValueError("subject and object must be non-empty strings")
                    spo.append((t["subject"], str(t["predicate"]), obj))
                text = item["text"]
                if not isinstance(text, str):
                    raise TypeError("text must be a string")
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path}:{n}: expected {{'text': str, 'spo_list': [{{'subject', 'predicate', "
                                 f"'object'}}]}} ({type(e).__name__}: {e})") from None
            rows.append({"text": text, "spo": spo})
    return rows


PEOPLE = ["张伟", "王芳", "李娜", "刘洋", "陈静", "杨磊", "赵敏", "黄勇", "周杰", "吴昊", "徐丽", "孙强"]
CITIES = ["北京", "上海", "广州", "深圳", "杭州", "成都", "武汉", "南京", "西安", "重庆"]
COMPANIES = ["华星科技", "远航集团", "蓝海公司", "天成实业", "启明软件", "金桥电子", "长风物流", "恒信银行"]


def make_demo(n: int, seed: int = 0) -> list[dict]:
    """Synthetic sentences from templates with known triples: 出生地 (person → city), 创始人 (company → person),
    总部 (company → city); one person may be both a subject and an object, one company subject of two triples."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        person, company = rng.choice(PEOPLE), rng.choice(COMPANIES)
        born, base = rng.choice(CITIES, 2, replace=False)
        kind = rng.integers(4)
        if kind == 0:
            text, spo = f"{person}出生于{born}。", [(person, "出生地", born)]
        elif kind == 1:
            text, spo = f"{company}由{person}创办，总部位于{base}。", [(company, "创始人", person),
                                                                  (company, "总部", base)]
        elif kind == 2:
            text, spo = f"{person}生于{born}，后来创办了{company}。", [(person, "出生地", born),
                                                                 (company, "创始人", person)]
        else:
            text, spo = f"据报道，{company}的总部设在{base}。", [(company, "总部", base)]
        rows.append({"text": str(text), "spo": [tuple(map(str, t)) for t in spo]})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    tmp.replace(path)


@dataclasses.dataclass
class Encoded:
    token_ids: list[int]
    mapping: list[list[int]]  # token → text char indices
    triples: dict  # (subject start, end) token span → [(object start, end, predicate id)]
    unreachable: int


def find_tokens(text: str, mapping: list[list[int]], part: str) -> tuple[int, int] | None:
    """Token span of the first occurrence of `part` in `text` that lies inside the kept tokens."""
    first_char = {chars[0]: i for i, chars in enumerate(mapping) if chars}
    last_char = {chars[-1]: i for i, chars in enumerate(mapping) if chars}
    start = text.find(part)
    while start >= 0:
        s, e = first_char.get(start), last_char.get(start + len(part) - 1)
        if s is not None and e is not None and s <= e:
            return s, e
        start = text.find(part, start + 1)
    return None


def encode(row: dict, tokenizer, maxlen: int, predicates: dict) -> Encoded:
    tokens = tokenizer.tokenize(row["text"], maxlen=maxlen)
    mapping = tokenizer.rematch(row["text"], tokens)
    triples, unreachable = {}, 0
    for s, p, o in row["spo"]:
        subject, obj = find_tokens(row["text"], mapping, s), find_tokens(row["text"], mapping, o)
        if subject is None or obj is None or p not in predicates:
            unreachable += 1
            continue
        triples.setdefault(subject, []).append((*obj, predicates[p]))
    return Encoded(tokenizer.tokens_to_ids(tokens), mapping, triples, unreachable)


def training_examples(encoded: list[Encoded], num_predicates: int) -> list[tuple]:
    """One example per (sentence, subject): all subjects' labels, that subject's objects."""
    out = []
    for e in encoded:
        for subject, objects in e.triples.items():
            labels = rel.relation_labels(len(e.token_ids), list(e.triples), objects, num_predicates)
            out.append((e.token_ids, subject, *labels))
    return out


def dataset(examples: list[tuple], num_predicates: int, batch_size: int, seed: int):
    import tensorflow as tf

    def make_batch(index):
        batch = [examples[i] for i in index]
        n = max(len(b[0]) for b in batch)
        ids = common._pad([b[0] for b in batch])
        subj = np.full((len(batch), n, 2), rel.IGNORE, "float32")
        obj = np.full((len(batch), n, num_predicates, 2), rel.IGNORE, "float32")
        for i, b in enumerate(batch):
            subj[i, :len(b[0])], obj[i, :len(b[0])] = b[2], b[3]
        spans = np.asarray([b[1] for b in batch], "int32")
        return (ids, np.zeros_like(ids), spans), {"subject": subj, "object": obj}

    ids = tf.TensorSpec([None, None], tf.int32)
    signature = ((ids, ids, tf.TensorSpec([None, 2], tf.int32)),
                 {"subject": tf.TensorSpec([None, None, 2], tf.float32),
                  "object": tf.TensorSpec([None, None, num_predicates, 2], tf.float32)})
    return common.batched_dataset([len(x[0]) for x in examples], batch_size, make_batch, signature, seed=seed)


def predict(models: rel.RelationModels, rows: list[dict], encoded: list[Encoded], names: list[str],
            threshold: float, batch_size: int) -> list[set]:
    """Predicted `(subject, predicate, object)` string triples per row."""
    found = [set() for _ in rows]
    order = np.argsort([len(e.token_ids) for e in encoded], kind="stable")
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        ids = common._pad([encoded[i].token_ids for i in index])
        allowed = np.zeros(ids.shape, bool)
        for r, i in enumerate(index):
            allowed[r, :len(encoded[i].mapping)] = [bool(chars) for chars in encoded[i].mapping]
        triples = rel.extract_relations(models, [ids, np.zeros_like(ids)], allowed, threshold, threshold)
        for r, i in enumerate(index):
            text, mapping = rows[i]["text"], encoded[i].mapping
            for (ss, se), p, (os_, oe) in triples[r]:
                found[i].add((text[mapping[ss][0]:mapping[se][-1] + 1], names[p],
                              text[mapping[os_][0]:mapping[oe][-1] + 1]))
    return found


def saved_models(folder: str | Path, num_predicates: int) -> tuple[rel.RelationModels, object]:
    """`(models, tokenizer)` of a run's saved training model: the subject and object models are its parts."""
    train, tokenizer = common.load_saved(folder)
    subject = keras.Model(train.inputs[:-1], train.get_layer("subject").output)
    obj = keras.Model(train.inputs, train.get_layer("object").output)
    return rel.RelationModels(subject, obj, train, num_predicates), tokenizer


def predict_file(args) -> dict:
    """Extract the triples of --predict FILE with the model saved in --saved; write predictions.jsonl (and the
    scores when FILE has `spo_list`)."""
    saved = json.loads((Path(args.saved) / "metrics.json").read_text(encoding="utf-8"))
    names, settings = saved["predicates"], saved["settings"]
    models, tokenizer = saved_models(args.saved, len(names))
    with open(args.predict, encoding="utf-8") as f:
        labelled = all("spo_list" in json.loads(line) for line in f if line.strip())
    rows = read_spo(Path(args.predict), labelled=labelled)
    encoded = [encode(r, tokenizer, settings["maxlen"], {p: i for i, p in enumerate(names)}) for r in rows]
    found = predict(models, rows, encoded, names, settings["threshold"], 2 * args.batch_size)
    out = Path(args.out)
    write_jsonl(out / "predictions.jsonl", [{"text": r["text"], **({"gold": sorted(r["spo"])} if labelled else {}),
                                             "predicted": sorted(f)} for r, f in zip(rows, found)])
    result = {"texts": len(rows), "file": args.predict, "saved": args.saved}
    if labelled:
        result.update(rel.triple_scores([set(r["spo"]) for r in rows], found))
    print(json.dumps(result, ensure_ascii=False))
    print(f"wrote {out / 'predictions.jsonl'}")
    return result


def main(argv=None) -> dict:
    return common.run_task(argv, parse_args, predict_file, run_training)


def run_training(args: argparse.Namespace, out: Path, started: float) -> dict:
    """Train on the run's training data, score its held-out part and save the model into `out`."""
    if args.demo:
        train_path = out / "demo.jsonl"
        write_jsonl(train_path, [{"text": r["text"], "spo_list": [dict(zip(("subject", "predicate", "object"), t))
                                                                  for t in r["spo"]]} for r in make_demo(args.demo)])
    elif args.train:
        train_path = Path(args.train)
    else:
        raise ValueError("give --train FILE (DuIE/SKE JSON lines) or --demo N")
    rows = read_spo(train_path)
    if args.test:
        train_rows, test_rows = rows, read_spo(Path(args.test))
    else:
        train_rows = [r for r in rows if not common.held_out(r["text"], HELD_OUT)]
        test_rows = [r for r in rows if common.held_out(r["text"], HELD_OUT)]
    train_rows, test_rows = common.limited(train_rows, args.limit), common.limited(test_rows, args.limit)
    names = sorted({p for r in train_rows for _, p, _ in r["spo"]})
    if not names:
        raise ValueError(f"{train_path}: no triples to learn from")
    predicates = {p: i for i, p in enumerate(names)}

    source = common.model_source(args)
    tokenizer = source.tokenizer()
    train_enc = [encode(r, tokenizer, args.maxlen, predicates) for r in train_rows]
    test_enc = [encode(r, tokenizer, args.maxlen, predicates) for r in test_rows]
    examples = training_examples(train_enc, len(names))
    if not examples:
        raise ValueError(f"{train_path}: no triple could be located in its text within --maxlen {args.maxlen}")
    models = rel.build_relation_extractor(source.build(args.model), len(names))
    print(f"train {len(train_rows)} texts → {len(examples)} (text, subject) examples; test {len(test_rows)}; "
          f"{len(names)} predicates; model {source.name}, {models.train.count_params():,} parameters")
    _, train_seconds = common.timed(common.fit, models.train, args, out, dataset(examples, len(names),
                                    args.batch_size, args.seed), len(examples), loss=rel.relation_losses(),
                                    title=f"relation extraction ({source.name})")
    common.save_model(models.train, source.vocab, out)
    t0 = time.time()
    found = predict(models, test_rows, test_enc, names, args.threshold, 2 * args.batch_size)
    predict_seconds = time.time() - t0
    gold = [set(r["spo"]) for r in test_rows]
    write_jsonl(out / "predictions.jsonl", [{"text": r["text"], "gold": sorted(g), "predicted": sorted(f)}
                                            for r, g, f in zip(test_rows, gold, found)])
    scores = rel.triple_scores(gold, found)
    metrics = {"task": "relation_extraction", "data": str(train_path), "synthetic_demo": bool(args.demo),
               **scores, "predicates": names, "train_texts": len(train_rows), "train_examples": len(examples),
               "test_texts": len(test_rows), "unreachable_train_triples": sum(e.unreachable for e in train_enc),
               "unreachable_test_triples": sum(e.unreachable for e in test_enc), "train_seconds": train_seconds,
               "predict_texts_per_s": round(len(test_rows) / max(predict_seconds, 1e-9), 1)}
    return common.finish(out, metrics, args, started, source)


if __name__ == "__main__":
    main()
