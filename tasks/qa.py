"""Extractive question answering (CMRC 2018 format): fine-tune a span extractor, evaluate EM/F1.

Training data: the CMRC 2018 train sample plus DRCD dev + test (the official CMRC and DRCD train sets are not
available here). DRCD is Traditional Chinese; it is converted to Simplified with OpenCC (`t2s`) so that training
and evaluation share one script (`--keep-traditional` to skip). Evaluation: the CMRC 2018 trial set, scored with
the official character-level EM/F1 rules (`bert4k.metrics.cmrc2018_corpus_score`).

Each context is cut into windows of `--maxlen` tokens (`[CLS] question [SEP] context piece [SEP]`) every
`--stride` context tokens. In training, a window that does not hold the whole answer points at `[CLS]` (so scores
of different windows are comparable); at evaluation the best span
(start logit + end logit, at most `--max-answer-tokens` long, inside the context) over all windows of a question
is mapped back to the original characters through `Tokenizer.rematch` offsets.

    python tasks/qa.py                                   # from our pretrained model, 1000 training questions
    python tasks/qa.py --train-questions 0 --epochs 2    # all 7042 training questions
    python tasks/qa.py --config C --checkpoint K --vocab V

Your data: --train FILE [--test FILE] in the CMRC 2018 / SQuAD JSON layout (data → paragraphs → context, qas →
id, question, answers → text, answer_start); --test defaults to the CMRC 2018 trial set. `--predict FILE --saved
DIR` answers the questions of FILE (answers may be absent; scored when present) with a saved model.

Writes to --out: predictions.json ({question id: answer}), metrics.json, log.csv, learning_curve.png,
model.keras + vocab.txt.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
from collections.abc import Callable
from pathlib import Path

import common
import keras
import numpy as np

from bert4k import heads
from bert4k.metrics import cmrc2018_corpus_score
from bert4k.ngrams import NgramVocab

TRAIN_FILES = (("cmrc2018", "cmrc2018_train_sample.json"), ("drcd", "DRCD_dev.json"), ("drcd", "DRCD_test.json"))
EVAL_FILE = ("cmrc2018", "cmrc2018_trial.json")


def parse_args(argv=None):
    p = common.task_parser(__doc__, out="qa", epochs=2, batch_size=16, maxlen=192, lr=5e-4,
                           columns="context, question, answers", dev=False,
                           file_format="CMRC 2018 / SQuAD JSON: data → paragraphs → context, qas → id, question, "
                                       "answers → text, answer_start")
    p.add_argument("--stride", type=int, default=96, help="context tokens between window starts (default: 96)")
    p.add_argument("--max-question-tokens", type=int, default=32)
    p.add_argument("--max-answer-tokens", type=int, default=40)
    p.add_argument("--train-questions", type=int, default=1000,
                   help="use this many training questions, evenly spread (0: all; default: %(default)s)")
    p.add_argument("--keep-traditional", action="store_true", help="train on DRCD in Traditional script")
    p.add_argument("--match-features", action=argparse.BooleanOptionalAction, default=True,
                   help="give the span head DrQA-style question-match features per context token (`match_features`; "
                        "default: on)")
    return p.parse_args(argv)


@dataclasses.dataclass
class Question:
    qid: str
    question: str
    context: str
    answers: list[str]
    start: int  # char offset of the first answer in the context (-1 if unknown)


def to_simplified() -> Callable[[str], str]:
    """OpenCC's Traditional → Simplified converter."""
    try:
        import opencc
    except ImportError:
        raise ImportError("tasks/qa.py converts DRCD to Simplified Chinese with OpenCC: pip install opencc "
                          "(or pass --keep-traditional)") from None
    return opencc.OpenCC("t2s").convert


def read_squad(path, convert: Callable[[str], str] | None = None, require_answers: bool = True) -> list[Question]:
    """Questions of a CMRC/DRCD (SQuAD-style) file, texts passed through `convert` if given; the first answer is
    the training target (its start is searched for when the stored offset does not match); questions without
    answers are an error unless `require_answers=False`."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    convert = convert or (lambda text: text)
    out = []
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            context = convert(paragraph["context"])
            for qa in paragraph["qas"]:
                answers = [convert(a["text"]) for a in qa.get("answers", [])]
                if not answers:
                    if require_answers:
                        raise ValueError(f"{path}: question {qa['id']} has no answer")
                    out.append(Question(str(qa["id"]).strip(), convert(qa["question"]), context, [], -1))
                    continue
                start = qa["answers"][0].get("answer_start", -1)
                if context[start:start + len(answers[0])] != answers[0]:
                    start = context.find(answers[0])
                out.append(Question(str(qa["id"]).strip(), convert(qa["question"]), context, answers, start))
    return out


@dataclasses.dataclass
class Window:
    question: int  # index into the question list
    token_ids: list[int]
    segment_ids: list[int]
    chars: list[list[int]]  # per position: the context chars it covers ([] outside the context)
    start: int  # answer start/end token positions (0, 0 when the answer is not inside)
    end: int
    features: np.ndarray | None = None  # [positions, MATCH_FEATURES] (`match_features`), zeros outside the context


MATCH_OFFSETS = range(-3, 4)  # neighbours whose question match a token's features include
MATCH_FEATURES = 2 * len(MATCH_OFFSETS) + 3


def match_features(question: list[str], context: list[str]) -> np.ndarray:
    """Per context token, `[MATCH_FEATURES]` float32 evidence of where the question's words are (DrQA's exact match,
    widened): for each offset o in `MATCH_OFFSETS`, whether token i+o occurs in the question and whether the bigram
    starting there does; the share of the question's bigrams in the question-long window just before and just
    after the token (what the overlap baseline looks for); and 1 (a context token)."""
    normal = [t.removeprefix("##") for t in question]
    words, pairs = set(normal), set(itertools.pairwise(normal))
    tokens = [t.removeprefix("##") for t in context]
    n, width = len(tokens), max(len(normal), 2)
    word = np.array([t in words for t in tokens], "float32")
    pair = np.array([(a, b) in pairs for a, b in itertools.pairwise(tokens)] + [False], "float32")
    sums = np.concatenate([[0.0], np.cumsum(pair)])

    def shifted(values, offset):
        out = np.zeros(n, "float32")
        lo, hi = max(0, -offset), min(n, n - offset)
        out[lo:hi] = values[lo + offset:hi + offset]
        return out

    index = np.arange(n)
    before = sums[np.clip(index - 1, 0, n)] - sums[np.clip(index - width, 0, n)]  # bigrams inside [i-width, i-1]
    after = sums[np.clip(index + width, 0, n)] - sums[np.clip(index + 1, 0, n)]  # bigrams inside [i+1, i+width]
    scale = max(len(pairs), 1)
    columns = ([shifted(word, o) for o in MATCH_OFFSETS] + [shifted(pair, o) for o in MATCH_OFFSETS]
               + [before / scale, after / scale, np.ones(n, "float32")])
    return np.stack(columns, axis=1).astype("float32")


class Featurizer:
    """Question + context → windows, with char offsets from `Tokenizer.rematch`."""

    def __init__(self, tokenizer, maxlen: int, stride: int, max_question_tokens: int, features: bool = False):
        self.tokenizer, self.maxlen, self.stride = tokenizer, maxlen, stride
        self.max_question_tokens, self.features = max_question_tokens, features
        self._context_cache: dict[str, tuple[list[str], list[list[int]]]] = {}

    def context_tokens(self, context: str):
        if context not in self._context_cache:
            tokens = self.tokenizer.tokenize(context)
            mapping = self.tokenizer.rematch(context, tokens)
            self._context_cache[context] = (tokens[1:-1], mapping[1:-1])
        return self._context_cache[context]

    def windows(self, index: int, q: Question, answer_text: str | None = None) -> list[Window]:
        t = self.tokenizer
        question = t.tokenize(q.question)[1:-1][:self.max_question_tokens]
        tokens, mapping = self.context_tokens(q.context)
        room = self.maxlen - len(question) - 3
        if room < 1:
            raise ValueError(f"--maxlen {self.maxlen} leaves no room for the context after a "
                             f"{len(question)}-token question")
        answer = None
        if answer_text is not None and q.start >= 0:
            first, last = q.start, q.start + len(answer_text) - 1
            covered = [i for i, chars in enumerate(mapping) if chars and chars[-1] >= first and chars[0] <= last]
            answer = (covered[0], covered[-1]) if covered else None
        head = [t.token_to_id("[CLS]"), *t.tokens_to_ids(question), t.token_to_id("[SEP]")]
        matches = match_features(question, tokens) if self.features else None
        starts = list(range(0, max(len(tokens) - room, 0) + 1, self.stride))
        if starts[-1] + room < len(tokens):
            starts.append(len(tokens) - room)
        out = []
        for s in starts:
            piece = tokens[s:s + room]
            ids = head + t.tokens_to_ids(piece) + [t.token_to_id("[SEP]")]
            segments = [0] * len(head) + [1] * (len(piece) + 1)
            chars = [[] for _ in head] + [list(c) for c in mapping[s:s + room]] + [[]]
            a, b = 0, 0
            if answer is not None and s <= answer[0] and answer[1] < s + room:
                a, b = len(head) + answer[0] - s, len(head) + answer[1] - s
            features = None
            if matches is not None:
                features = np.zeros((len(ids), MATCH_FEATURES), "float32")
                features[len(head):len(head) + len(piece)] = matches[s:s + room]
            out.append(Window(index, ids, segments, chars, a, b, features))
        return out


def spread(items: list, n: int) -> list:
    """`n` items evenly spread over the list (all if n is 0 or too large)."""
    if not n or n >= len(items):
        return items
    return [items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def columns(windows: list[Window]) -> list[list]:
    """The model's input columns: token ids, segment ids (and match features when the windows have them)."""
    cols = [[w.token_ids for w in windows], [w.segment_ids for w in windows]]
    return cols + [[w.features for w in windows]] if windows and windows[0].features is not None else cols


def predict_answers(model, windows: list[Window], questions: list[Question], max_answer_tokens: int,
                    batch_size: int) -> dict[str, str]:
    """Best valid span across each question's windows → answer text (from the original context chars)."""
    start, end = common.predict_in_order(model, columns(windows), batch_size)
    by_question: dict[int, list] = {}
    for w, s, e in zip(windows, start, end):
        allowed = np.array([bool(c) for c in w.chars])
        by_question.setdefault(w.question, []).append((w, s[:len(w.chars)], e[:len(w.chars)], allowed))
    answers = {}
    for qi, items in by_question.items():
        span = heads.best_span_in_windows([(s, e, a) for _, s, e, a in items], max_answer_tokens)
        q = questions[qi]
        if span is None:
            answers[q.qid] = ""
            continue
        chars = items[span.window][0].chars
        answers[q.qid] = q.context[chars[span.start][0]:chars[span.end][-1] + 1]
    return answers


def predict_file(args) -> dict:
    """Answer the questions of --predict FILE with the span extractor saved in --saved."""
    model, tokenizer = common.load_saved(args.saved)
    questions = read_squad(args.predict, require_answers=False)
    featurizer = Featurizer(tokenizer, args.maxlen, args.stride, args.max_question_tokens,
                            features=len(model.inputs) == 3)
    windows = [w for i, q in enumerate(questions) for w in featurizer.windows(i, q)]
    answers = predict_answers(model, windows, questions, args.max_answer_tokens, 2 * args.batch_size)
    common.write_json(Path(args.out) / "predictions.json", answers)
    result = {"predicted": len(answers), "file": args.predict, "saved": args.saved}
    if all(q.answers for q in questions):
        with open(args.predict, encoding="utf-8") as f:
            result.update({k: v for k, v in cmrc2018_corpus_score(answers, json.load(f)).items() if k in ("em", "f1")})
    print(json.dumps(result, ensure_ascii=False))
    return result


def main(argv=None) -> dict:
    return common.run_task(argv, parse_args, predict_file, run_training)


def baseline_answers(questions: list[Question], length: int) -> dict[str, dict[str, str]]:
    """Two model-free baselines, `{name: {question id: answer}}`, each answer `length` characters: `lead`, the start
    of the context; `overlap`, the characters after the context window (as long as the question) that shares the
    most character bigrams with the question (answers tend to follow the words the question repeats)."""
    def bigrams(text: str) -> set[str]:
        return set(NgramVocab.ngrams_of(text, (2,)))

    lead, overlap = {}, {}
    for q in questions:
        lead[q.qid] = q.context[:length]
        wanted, width = bigrams(q.question), max(len(q.question), 2)
        ends = range(width, len(q.context) + 1)
        best = max(ends, key=lambda end: len(wanted & bigrams(q.context[end - width:end])), default=0)
        overlap[q.qid] = q.context[best:best + length] or q.context[:length]
    return {"lead": lead, "overlap": overlap}


def run_training(args: argparse.Namespace, out: Path, started: float) -> dict:
    """Train on the run's training data, score its held-out part and save the model into `out`."""
    convert = None if args.keep_traditional else to_simplified()
    train_files = ([(args.train, None)] if args.train else
                   [(common.data_path(*parts), convert if parts[0] == "drcd" else None) for parts in TRAIN_FILES])
    train_questions = [q for path, conv in train_files for q in read_squad(path, conv)]
    unusable = sum(q.start < 0 for q in train_questions)
    train_questions = [q for q in train_questions if q.start >= 0]
    train_questions = spread(train_questions, args.limit or args.train_questions)
    eval_path = args.test or common.data_path(*EVAL_FILE)
    eval_questions = common.limited(read_squad(eval_path), args.limit)

    with open(eval_path, encoding="utf-8") as f:
        dataset = json.load(f)
    keep = {q.qid for q in eval_questions}
    for article in dataset["data"]:
        for paragraph in article["paragraphs"]:
            paragraph["qas"] = [qa for qa in paragraph["qas"] if qa["id"].strip() in keep]
    answer_chars = int(np.median([len(q.answers[0]) for q in train_questions]))
    baselines = {name: {k: v for k, v in cmrc2018_corpus_score(guess, dataset).items() if k in ("em", "f1")}
                 for name, guess in baseline_answers(eval_questions, answer_chars).items()}
    print(f"baselines ({answer_chars} characters, the median training answer): {baselines}")

    source = common.model_source(args)
    featurizer = Featurizer(source.tokenizer(), args.maxlen, args.stride, args.max_question_tokens,
                            args.match_features)
    train_windows = [w for i, q in enumerate(train_questions) for w in featurizer.windows(i, q, q.answers[0])]
    eval_windows = [w for i, q in enumerate(eval_questions) for w in featurizer.windows(i, q)]
    print(f"train: {len(train_questions)} questions → {len(train_windows)} windows "
          f"({sum(w.end > 0 for w in train_windows)} with the answer) "
          f"({unusable} questions skipped: answer not found in context); "
          f"eval: {len(eval_questions)} questions → {len(eval_windows)} windows")

    model = heads.build_span_extractor(source.build(args.model),
                                       num_features=MATCH_FEATURES if args.match_features else 0)
    print(f"model: {source.name}, {model.count_params():,} parameters")
    cols = columns(train_windows)
    targets = (np.array([w.start for w in train_windows], "int32"), np.array([w.end for w in train_windows], "int32"))
    data = common.dataset(cols, targets, args.batch_size, shuffle=True, seed=args.seed)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    _, train_seconds = common.timed(common.fit, model, args, out, data, len(train_windows), loss=[ce, ce],
                                    title=f"{args.train or 'CMRC 2018'} span extraction ({source.name})")
    common.save_model(model, source.vocab, out)

    answers, eval_seconds = common.timed(predict_answers, model, eval_windows, eval_questions,
                                         args.max_answer_tokens, 2 * args.batch_size)
    common.write_json(out / "predictions.json", answers)
    score = cmrc2018_corpus_score(answers, dataset)
    metrics = {"task": "qa", "dataset": args.train or "cmrc2018_trial", "em": score["em"], "f1": score["f1"],
               "eval_questions": score["total"], "train_questions": len(train_questions),
               "train_windows": len(train_windows), "train_seconds": train_seconds, "eval_seconds": eval_seconds,
               "parameters": model.count_params(), "baselines": baselines}
    return common.finish(out, metrics, args, started, source)


if __name__ == "__main__":
    main()
