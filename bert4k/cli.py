"""The `bert4k` command. Each subcommand is a module-level `add_<name>(subparsers)` that registers its parser and
sets `func`; add a new one to `SUBCOMMANDS`. Parsers are built before anything imports Keras or TensorFlow, so
`--help` is instant; the commands import what they need when they run."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

_TF_CONFIG_NAMES = {"bert": "bert_config.json", "roberta": "bert_config.json", "albert": "albert_config.json",
                    "albert_unshared": "albert_config.json", "gpt2": "hparams.json"}


class CommandError(Exception):
    """A user error: printed as one line, exit code 1."""


def _stage(message: str):
    """Print `message …` to stderr now and `done in N s` when the returned callable is called."""
    start = time.time()
    print(f"{message} …", end="", file=sys.stderr, flush=True)
    return lambda: print(f" done in {time.time() - start:.1f} s", file=sys.stderr, flush=True)


def _size(path: str) -> int:
    if os.path.isdir(path):
        return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    files = [path] if os.path.exists(path) else [str(p) for p in Path(path).parent.glob(Path(path).name + ".*")]
    return sum(os.path.getsize(f) for f in files)


def _mb(n: int) -> str:
    return f"{n / 2 ** 20:,.1f} MB"


# === sources: folder / config / checkpoint / .keras ===

def _source_files(path: str) -> tuple[Path, Path | None, str | None]:
    """`(folder, config file or None, weights path or None)` for a folder, a config json or a weights file."""
    p = Path(path)
    if not p.exists() and not Path(path + ".index").exists():
        raise CommandError(f"{path}: no such file or folder")
    from bert4k.checkpoints.readers import resolve_checkpoint
    from bert4k.config import CONFIG_FILES
    folder = p if p.is_dir() else p.parent
    config = p if p.suffix == ".json" and p.is_file() else next(
        (folder / n for n in CONFIG_FILES if (folder / n).exists()), None)
    try:
        weights = resolve_checkpoint(folder if p.is_dir() or p.suffix == ".json" else path)
    except FileNotFoundError:
        weights = None
    return folder, config, weights


def _family(folder: Path, config: Path | None, family: str | None) -> str:
    from bert4k.pretrained import detect_family

    if family:
        return family
    if config is None:
        raise CommandError(f"{folder}: no config file (config.json, bert_config.json, albert_config.json, "
                           "hparams.json) beside the weights")
    return detect_family(config)


def _weights_format(weights: str) -> str:
    if weights.endswith(".index.json"):
        return "sharded " + ("safetensors" if "safetensors" in weights else "PyTorch .bin")
    if weights.endswith(".safetensors"):
        return "HF safetensors"
    if weights.endswith((".bin", ".pt", ".pth")):
        return "PyTorch .bin"
    return "TensorFlow checkpoint"


def _safetensors_dtype(code: str) -> str:
    """safetensors' dtype code (`F32`, `BF16`, `I64`, `BOOL`) as numpy spells it."""
    if code == "BOOL" or code.startswith("BF"):
        return code.lower().replace("bf", "bfloat")
    kind = {"F": "float", "I": "int", "U": "uint"}.get(code[0])
    return f"{kind}{code[1:]}" if kind else code


def _tensor_shapes(weights: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """`{name: (shape, dtype)}` without loading the values where the format allows."""
    if weights.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(weights, framework="numpy") as f:
            out = {}
            for name in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                piece = f.get_slice(name)
                out[name] = (tuple(piece.get_shape()), _safetensors_dtype(piece.get_dtype()))
            return out
    if not weights.endswith((".bin", ".pt", ".pth", ".json")):
        import tensorflow as tf

        from bert4k.checkpoints.readers import OPTIMIZER_SLOTS

        reader = tf.train.load_checkpoint(weights)
        dtypes = reader.get_variable_to_dtype_map()
        return {n: (tuple(s), dtypes[n].name) for n, s in reader.get_variable_to_shape_map().items()
                if not any(slot in n for slot in OPTIMIZER_SLOTS)}
    from bert4k.checkpoints.readers import read_tensors

    return {n: (tuple(v.shape), str(v.dtype)) for n, v in read_tensors(weights).items()}


def _info(args: argparse.Namespace) -> int:
    import numpy as np

    if args.path.endswith(".keras"):
        from bert4k.pretrained import load_model

        model = load_model(args.path)
        print(f"path: {args.path}\nformat: Keras model ({type(model).__name__})")
        print(f"family: {getattr(model, 'family', '?')}, application: {getattr(model, 'application', '?')}")
        if hasattr(model, "config"):
            print("config:", json.dumps(model.config.to_dict(), ensure_ascii=False))
        print(f"parameters: {model.count_params():,}")
        if args.tensors:
            for w in model.weights:
                print(f"  {w.path}  {tuple(w.shape)}  {w.dtype}")
        return 0
    folder, config, weights = _source_files(args.path)
    family = _family(folder, config, args.family)
    print(f"path: {args.path}")
    print(f"family: {family}")
    from bert4k.pretrained import _entry_for_folder, registry

    entry = _entry_for_folder(folder.resolve(), registry())
    if entry is not None:
        print(f"registry: {entry.name}")
    if config is not None:
        from bert4k.config import read_json
        from bert4k.models.families import get_family

        cfg = get_family(family).config(read_json(config))
        fields = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size",
                  "max_position_embeddings", "type_vocab_size", "hidden_act", "embedding_size")
        summary = {k: getattr(cfg, k) for k in fields if getattr(cfg, k, None) is not None}
        print(f"config: {config}\n  " + ", ".join(f"{k}={v}" for k, v in summary.items()))
    if weights is None:
        print("weights: none found")
        return 0
    shapes = _tensor_shapes(weights)
    total = sum(int(np.prod(s)) for s, _ in shapes.values())
    print(f"weights: {weights} ({_weights_format(weights)}, {_mb(_size(weights))})")
    print(f"tensors: {len(shapes)}, parameters: {total:,}")
    if args.tensors:
        for name in sorted(shapes):
            shape, dtype = shapes[name]
            print(f"  {name}  {shape}  {dtype}")
    return 0


def add_info(subparsers) -> None:
    p = subparsers.add_parser("info", help="describe a checkpoint folder, config, weights file or .keras model",
                              description="Print the family, format, config summary and parameter count of a "
                                          "checkpoint (folder, config json, weights file, TF prefix) or a .keras "
                                          "model.")
    p.add_argument("path")
    p.add_argument("--family", help="the model family (default: read from the config)")
    p.add_argument("--tensors", action="store_true", help="list every tensor with its shape and dtype")
    p.set_defaults(func=_info)


# === convert ===

def _build_full(config: Path, weights: str, family: str):
    """The model with every part the checkpoint can fill (pooler, MLM/LM head), loaded; and the load report."""
    from bert4k.config import read_json
    from bert4k.models.checkpoint_io import load_checkpoint
    from bert4k.models.families import get_family
    from bert4k.models.transformer import Transformer

    fam = get_family(family)
    cfg = fam.config(read_json(config))
    if fam.reference("model_class") is Transformer:
        model = fam.build(cfg, with_pool=True, with_mlm=True, logits=True)
    elif fam.kind.startswith("gpt2"):
        model = fam.build(cfg, application="lm", logits=True)
    else:
        model = fam.build(cfg, logits=True)
    return model, load_checkpoint(model, weights)


def _tf_config(raw: dict, family: str) -> tuple[str, dict]:
    from bert4k.models.config_readers.gpt2 import OPENAI_HPARAMS

    raw = {k: v for k, v in raw.items() if k != "__path__"}
    name = _TF_CONFIG_NAMES.get(family, "config.json")
    if family == "gpt2" and "n_embd" in raw and "n_vocab" not in raw:
        raw = {k: raw[hf] for k, hf in OPENAI_HPARAMS.items() if hf in raw}
    return name, raw


class _ProgressBar:
    """`label [#####.....]  12.3/45.6 MB  27%` on stderr, redrawn in place; `None` from `create` when off."""

    WIDTH = 30

    def __init__(self, label: str):
        self.label, self.shown = label, -1

    @classmethod
    def create(cls, label: str, wanted: bool):
        return cls(label) if wanted or sys.stderr.isatty() else None

    def __call__(self, done: int, total: int) -> None:
        percent = 100 * done // max(total, 1)
        if percent == self.shown:
            return
        self.shown = percent
        filled = self.WIDTH * done // max(total, 1)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        end = "\n" if done >= total else ""
        print(f"\r{self.label} [{bar}] {done / 2 ** 20:,.1f}/{total / 2 ** 20:,.1f} MB {percent:3d}%", end=end,
              file=sys.stderr, flush=True)


def _convert_source(args: argparse.Namespace):
    """`(model, family, raw config or None, source folder, skipped tensor names)` of SRC: a checkpoint (folder,
    config json, weights file) or a `.keras` model."""
    if args.src.endswith(".keras"):
        from bert4k.pretrained import load_model

        done = _stage(f"reading {args.src} ({_mb(_size(args.src))})")
        model = load_model(args.src, compile=False)
        done()
        if not hasattr(model, "family"):
            raise CommandError(f"{args.src}: not a bert4k model (a {type(model).__name__} with no model family); "
                               "only bert4k Transformer / T5 models can be converted")
        return model, model.family, None, Path(args.src).parent, set()
    folder, config, weights = _source_files(args.src)
    if weights is None:
        raise CommandError(f"{args.src}: no weights found (expected model.safetensors, pytorch_model.bin or a "
                           "TF checkpoint)")
    if config is None:
        raise CommandError(f"{args.src}: no config file (config.json, bert_config.json, albert_config.json, "
                           "hparams.json) beside the weights")
    from bert4k.config import read_json

    family = _family(folder, config, args.family)
    done = _stage(f"reading {weights} ({_mb(_size(weights))}, family {family})")
    model, report = _build_full(config, weights, family)
    done()
    skipped = set(report.optional_missing)
    if skipped:
        print(f"not in the source, not written: {', '.join(sorted(skipped))}", file=sys.stderr)
    return model, family, read_json(config), folder, skipped


def _convert(args: argparse.Namespace) -> int:
    from bert4k.models.checkpoint_io import export_checkpoint
    from bert4k.models.families import get_family
    from bert4k.pretrained import VOCAB_FILES

    dst = Path(args.dst)
    if dst.exists() and not args.force:
        raise CommandError(f"{dst}: already exists (pass --force to replace it)")
    model, family, raw_config, folder, skipped = _convert_source(args)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if args.to == "keras":
            done = _stage(f"writing {dst}")
            tmp_file = tmp.with_suffix(".keras")
            model.save(tmp_file)
            done()
            if dst.is_dir():
                shutil.rmtree(dst)
            os.replace(tmp_file, dst)
            print(f"wrote {dst}")
            return 0
        fam = get_family(family)
        tmp.mkdir(parents=True)
        progress = _ProgressBar.create(f"writing {dst}", args.progress)
        # export_checkpoint refuses (ValueError listing them) a model with weights the format has no name for
        if args.to == "hf":
            if fam.reference("hf_config") is None:
                raise CommandError(f"family {family!r} has no Hugging Face config writer; use --to tf or keras")
            export_checkpoint(model, tmp / "model.safetensors", skip=skipped, progress=progress)
        else:
            if fam.reference("to_tf") is None:
                raise CommandError(f"family {family!r} has no TF checkpoint export")
            prefix = {"gpt2": "model.ckpt", "albert": "albert_model.ckpt"}.get(fam.kind, "bert_model.ckpt")
            export_checkpoint(model, tmp / prefix, format="tf", skip=skipped, progress=progress)
            raw = raw_config if raw_config is not None else fam.reference("hf_config")(model.config, model)
            config_name, config_values = _tf_config(raw, family)
            (tmp / config_name).write_text(json.dumps(config_values, ensure_ascii=False, indent=2) + "\n",
                                           encoding="utf-8")
        for name in VOCAB_FILES:
            if (folder / name).exists():
                shutil.copy(folder / name, tmp / name)
        if dst.exists():
            shutil.rmtree(dst) if dst.is_dir() else dst.unlink()
        os.replace(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {dst} ({_mb(_size(str(dst)))})")
    return 0


def add_convert(subparsers) -> None:
    p = subparsers.add_parser("convert", help="convert a checkpoint to HF safetensors, a TF checkpoint or .keras",
                              description="Read SRC (a checkpoint folder, its config json or weights, or a bert4k "
                                          ".keras model) and write "
                                          "DST: --to hf writes config.json + model.safetensors (+ vocab) that "
                                          "transformers loads; --to tf the original TF names and config; --to "
                                          "keras a .keras model. Output is written under a temporary name, then "
                                          "renamed.")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--to", choices=("hf", "tf", "keras"), required=True)
    p.add_argument("--family", help="the model family (default: read from the config)")
    p.add_argument("--force", action="store_true", help="replace DST if it exists")
    p.add_argument("--progress", action="store_true", help="show the progress bar also when stderr is not a terminal")
    p.set_defaults(func=_convert)


# === fill-mask / encode / generate ===

def _load(model: str, application: str, family: str | None = None, **kwargs):
    from bert4k.pretrained import from_pretrained

    return from_pretrained(model, application=application, model=family, **kwargs)


def _fill_mask(args: argparse.Namespace) -> int:
    from bert4k.pipelines import fill_mask

    model, tokenizer = _load(args.model, "mlm", args.family)
    found = fill_mask(model, tokenizer, args.text, top_k=args.top_k)
    for k, rows in enumerate([found] if isinstance(found[0], dict) else found):
        if k:
            print()
        for r in rows:
            print(f"{r['score']:.4f}\t{r['token']}\t{r['text']}")
    return 0


def add_fill_mask(subparsers) -> None:
    p = subparsers.add_parser("fill-mask", help="the most likely tokens at each [MASK] of a text",
                              description="Print score, token and filled-in text for the top-k tokens at each "
                                          "[MASK] (one block per mask).")
    p.add_argument("model", help="checkpoint folder or registry name")
    p.add_argument("text", help="text with one or more [MASK]")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--family", help="the model family (default: from the registry or the config)")
    p.set_defaults(func=_fill_mask)


def _encode(args: argparse.Namespace) -> int:
    import numpy as np

    from bert4k.pipelines import encode

    texts = list(args.text)
    if args.file:
        with open(args.file, encoding="utf-8") as f:
            texts += [line.rstrip("\n") for line in f if line.strip()]
    if not texts:
        raise CommandError("encode: no texts (give TEXT arguments or --file)")
    model, tokenizer = _load(args.model, "encoder", args.family)
    vectors = encode(model, tokenizer, texts, pooling=args.pooling, normalize=args.normalize, maxlen=args.maxlen)
    if args.out:
        tmp = f"{args.out}.tmp-{os.getpid()}.npy"
        np.save(tmp, vectors)
        os.replace(tmp, args.out)
        print(f"wrote {args.out} {vectors.shape}")
    else:
        for text, v in zip(texts, vectors):
            print(text[:30] + "\t" + " ".join(f"{x:.4f}" for x in v[:8]) + (" …" if len(v) > 8 else ""))
    return 0


def add_encode(subparsers) -> None:
    p = subparsers.add_parser("encode", help="sentence vectors (cls or mean pooling)",
                              description="Encode texts into sentence vectors; print the first dims, or save all "
                                          "to a .npy file with --out.")
    p.add_argument("model", help="checkpoint folder or registry name")
    p.add_argument("text", nargs="*")
    p.add_argument("--file", help="a text file, one text a line")
    p.add_argument("--pooling", choices=("cls", "mean"), default="cls")
    p.add_argument("--normalize", action="store_true", help="unit-length vectors")
    p.add_argument("--maxlen", type=int)
    p.add_argument("--out", help="write the [n, hidden] array here (.npy)")
    p.add_argument("--family", help="the model family (default: from the registry or the config)")
    p.set_defaults(func=_encode)


def _generate(args: argparse.Namespace) -> int:
    from bert4k.pipelines import generate_text
    from bert4k.pretrained import detect_family, locate

    family = args.family
    if args.application is None:
        folder, entry = locate(args.model)
        family = family or (entry.model if entry else detect_family(folder))
        application = "lm" if family.startswith("gpt2") else "encoder" if family.startswith(("t5", "mt5")) else "unilm"
    else:
        application = args.application
    model, tokenizer = _load(args.model, application, family)
    options = dict(method=args.method, seed=args.seed, repetition_penalty=args.repetition_penalty,
                   no_repeat_ngram_size=args.no_repeat_ngram)
    if args.method == "beam":
        options["num_beams"] = args.num_beams
    if args.method == "sample":
        options.update(top_p=args.top_p, top_k=args.top_k, temperature=args.temperature)
    print(generate_text(model, tokenizer, args.text, max_new_tokens=args.max_new_tokens, **options))
    return 0


def add_generate(subparsers) -> None:
    p = subparsers.add_parser("generate", help="continue a text (GPT-2, BERT lm), or generate a target for it "
                                               "(UniLM, T5)",
                              description="Print the generated text. The application follows the family: gpt2 → "
                                          "lm, t5/mt5 → encoder–decoder, bert-like → unilm (--application to "
                                          "choose).")
    p.add_argument("model", help="checkpoint folder or registry name")
    p.add_argument("text")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--method", choices=("greedy", "sample", "beam"), default="greedy")
    p.add_argument("--num-beams", type=int, default=4)
    p.add_argument("--top-p", type=float)
    p.add_argument("--top-k", type=int)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--no-repeat-ngram", type=int, default=0, help="no n-gram of the generated tokens twice (0 = off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--application", choices=("lm", "unilm"), help="for bert-like models (default: unilm)")
    p.add_argument("--family", help="the model family (default: from the registry or the config)")
    p.set_defaults(func=_generate)


# === masks ===

def _masks(args: argparse.Namespace) -> int:
    from bert4k.plotting import application_masks, example_tokens, plot_application_masks

    text = args.tokens if args.tokens is not None else args.text
    if args.plot:
        path = plot_application_masks(text, args.plot, target=args.target, num_pad=args.pad, seed=args.seed)
        print(f"wrote {path}")
        return 0
    tokens, segments = example_tokens(text, args.target, args.pad)
    found = application_masks(tokens, segments, args.seed)
    print("tokens:", " ".join(tokens))
    print("unilm segments:", " ".join(map(str, segments)))
    print("plm ranks:", " ".join(map(str, found["ranks"])))
    for app in ("encoder", "mlm", "lm", "unilm", "plm"):
        print(f"\n{app} (row = query i, column = key j; # = may attend)")
        for row in found[app]:
            print(" ".join("#" if v else "." for v in row))
    return 0


def add_masks(subparsers) -> None:
    p = subparsers.add_parser("masks", help="show or plot the attention mask of each application",
                              description="Print the masks of encoder, mlm, lm, unilm and plm for an example "
                                          "input, or draw them into a PNG with --plot.")
    p.add_argument("--plot", metavar="PNG", help="write a picture of the masks to this file")
    p.add_argument("--text", default="北京欢迎你", help="example text, one token per character (default: %(default)s)")
    p.add_argument("--target", help="unilm target text (default: the second half of the tokens is the target)")
    p.add_argument("--tokens", type=int, help="use N numbered tokens instead of --text")
    p.add_argument("--pad", type=int, default=1, help="padding tokens appended (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the plm factorisation order")
    p.set_defaults(func=_masks)


SUBCOMMANDS = (add_info, add_convert, add_fill_mask, add_encode, add_generate, add_masks)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bert4k", description="bert4k command-line tools")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    for sub in subparsers.choices.values():
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                         help="show the full traceback on errors")
    return parser


# What TensorFlow's native libraries print on stderr while they load, before its log settings apply
# (TF_CPP_MIN_LOG_LEVEL does not reach them).
_NATIVE_BANNERS = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
                   "port.cc:153] oneDNN custom operations are on")


def _import_keras_quietly() -> None:
    """Import Keras (and TensorFlow under it) with stderr captured at the file-descriptor level; everything it wrote
    there except `_NATIVE_BANNERS` lines is passed on."""
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import keras  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode("utf-8", "replace").splitlines(keepends=True):
                if not any(banner in line for banner in _NATIVE_BANNERS):
                    sys.stderr.write(line)
            sys.stderr.flush()


def _one_line(error: BaseException) -> str:
    text = str(error) if not isinstance(error, KeyError) else str(error.args[0]) if error.args else ""
    text = " ".join(text.split())
    return f"{type(error).__name__}: {text}" if not isinstance(error, CommandError) else text


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        _import_keras_quietly()  # every command needs it
        return args.func(args)
    except Exception as error:  # one line per error; the traceback only with --debug
        if args.debug:
            raise
        print(f"bert4k {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
