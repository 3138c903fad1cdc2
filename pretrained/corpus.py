"""The pre-training corpus: every Chinese text in the shared data folder that no task script evaluates on.

Sources (`documents()`), each with what is left out and why:

- CLUECorpusSmall sample (`zh-plain-corpus` lines 1–2500, one document a line): all.
- ChnSentiCorp reviews: all but the held-out split of `tasks/common.py` (`SPLITS["chnsenticorp"]`).
- online-shopping and waimai reviews: all but their held-out splits (`SPLITS["online-shopping"]`, `["waimai"]`).
- MSRA NER sentences (characters joined): all but the test (10 %) and dev (5 %) parts that `tasks/ner.py`
  evaluates on, cut by its own `split` (MD5 of the sentence text).
- CSL discipline training titles: all. CSL dev titles (the discipline evaluation set) and all 1,000 CSL abstracts
  (the title-generation data; their papers are the discipline evaluation set): none.
- CMRC 2018 train-sample contexts: all; CMRC 2018 trial contexts (the QA evaluation set): none.
- DRCD dev + test contexts (QA training data), converted to Simplified with OpenCC `t2s` as `tasks/qa.py` does.
- Tang poems: all but the held-out split of `tasks/lm.py` (`SPLITS["tang-poems"]`, by poem id), in Traditional.

`zh-plain-corpus` lines 2501+ repeat the CMRC/DRCD/CSL/ChnSentiCorp texts above, so they are read from their
sources instead. Every document is finally checked against the set of evaluation texts (`evaluation_texts()`).

The vocabulary (`cut_vocab`) keeps the Chinese BERT WordPiece tokens the corpus uses and appends the characters it
uses that the BERT vocabulary lacks (mostly Traditional characters of the Tang poems), so no poem char is `[UNK]`.
"""
from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tasks"))
import common

from bert4k.tokenizers import Tokenizer

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def clean(text: str) -> str:
    return " ".join(text.split())


def _tsv_column(folder: str, name: str, column: int, header: bool) -> list[str]:
    with open(common.data_path(folder, name), encoding="utf-8") as f:
        if header:
            next(f)
        return [line.rstrip("\n").split("\t")[column] for line in f if line.strip()]


def _squad_contexts(folder: str, name: str) -> list[str]:
    with open(common.data_path(folder, name), encoding="utf-8") as f:
        return [p["context"] for a in json.load(f)["data"] for p in a["paragraphs"]]


def _reviews(folder: str, column: int) -> tuple[list[str], list[str]]:
    """`(training reviews, held-out reviews)` of a review TSV with a header, split like the task script."""
    texts = _tsv_column(folder, "train.tsv", column, header=True)
    fraction = common.SPLITS[folder]
    return ([t for t in texts if not common.held_out(t, fraction)], [t for t in texts if common.held_out(t, fraction)])


def _tang_poems() -> tuple[list[str], list[str]]:
    train, test = [], []
    with open(common.data_path("tang-poems", "tang_poems_train.jsonl"), encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            poem = "".join(record["paragraphs"])
            (test if common.held_out(record["id"], common.SPLITS["tang-poems"]) else train).append(poem)
    return train, test


def _msra_sentences() -> tuple[list[str], list[str]]:
    """`(training sentences, dev + test sentences)` of MSRA NER, split by `tasks/ner.py`'s own `split`."""
    import ner

    train, dev, test, _ = ner.split(ner.parse_args([]))
    return [s.text for s in train], [s.text for s in dev + test]


def evaluation_texts() -> set[str]:
    """Every text a task script evaluates on (cleaned), plus the CSL abstracts (see the module docstring)."""
    excluded = {clean(t) for t in _squad_contexts("cmrc2018", "cmrc2018_trial.json")}
    excluded |= {clean(t) for t in _tsv_column("csl-category", "dev.tsv", 1, header=False)}
    excluded |= {clean(t) for t in _tsv_column("csl-title", "dev.tsv", 1, header=False)}
    chnsenti = _tsv_column("chnsenticorp", "train.tsv", 1, header=True)
    excluded |= {clean(t) for t in chnsenti if common.held_out(t, common.SPLITS["chnsenticorp"])}
    for folder in ("online-shopping", "waimai"):
        excluded |= {clean(t) for t in _reviews(folder, 2 if folder == "online-shopping" else 1)[1]}
    excluded |= {clean(t) for t in _tang_poems()[1]}
    excluded |= {clean(t) for t in _msra_sentences()[1]}
    return excluded


def documents() -> tuple[list[str], dict]:
    """`(documents, statistics)`: the corpus, in a fixed order, and how many documents each source gave."""
    import opencc

    t2s = opencc.OpenCC("t2s").convert
    with open(common.data_path("zh-plain-corpus", "zh_corpus.txt"), encoding="utf-8") as f:
        clue = [line for _, line in zip(range(2500), f)]
    chnsenti = _tsv_column("chnsenticorp", "train.tsv", 1, header=True)
    sources = {
        "cluecorpussmall": clue,
        "chnsenticorp": [t for t in chnsenti if not common.held_out(t, common.SPLITS["chnsenticorp"])],
        "online-shopping": _reviews("online-shopping", 2)[0],
        "waimai": _reviews("waimai", 1)[0],
        "msra-ner": _msra_sentences()[0],
        "csl-train-titles": _tsv_column("csl-category", "train.tsv", 1, header=False),
        "cmrc2018-train-sample": _squad_contexts("cmrc2018", "cmrc2018_train_sample.json"),
        "drcd-simplified": [t2s(c) for name in ("DRCD_dev.json", "DRCD_test.json")
                            for c in dict.fromkeys(_squad_contexts("drcd", name))],
        "tang-poems": _tang_poems()[0],
    }
    excluded = evaluation_texts()
    docs, stats = [], {}
    for name, texts in sources.items():
        kept = [t for t in (clean(x) for x in texts) if t and t not in excluded]
        stats[name] = {"documents": len(kept), "characters": sum(map(len, kept)),
                       "dropped_as_evaluation_text": sum(1 for x in texts if clean(x) in excluded)}
        docs.extend(kept)
    return docs, stats


def cut_vocab(docs: list[str], full_vocab: str, min_count: int) -> tuple[list[str], dict]:
    """The full vocab's tokens used ≥ `min_count` times (vocab order, specials kept), then the characters used
    ≥ `min_count` times that the full vocab turns into `[UNK]`, most frequent first."""
    tokenizer = Tokenizer(full_vocab, do_lower_case=True)
    counts, unknown = Counter(), Counter()
    for doc in docs:
        tokens = tokenizer.tokenize(doc)
        counts.update(tokens)
        if "[UNK]" in tokens:
            for token, chars in zip(tokens, tokenizer.rematch(doc, tokens)):
                if token == "[UNK]" and len(chars) == 1:
                    unknown[doc[chars[0]]] += 1
    with open(full_vocab, encoding="utf-8") as f:
        tokens = [line.rstrip("\n") for line in f]
    kept = [t for t in tokens if t in SPECIALS or counts[t] >= min_count]
    present = set(kept)
    extra = [c for c, n in unknown.most_common() if n >= min_count and c not in present and not c.isspace()]
    total = sum(counts.values())
    covered = sum(n for t, n in counts.items() if t in present and t != "[UNK]") + sum(unknown[c] for c in extra)
    return kept + extra, {"bert_tokens_kept": len(kept), "added_characters": len(extra),
                          "token_coverage": round(covered / total, 5)}
