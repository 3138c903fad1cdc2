"""Tokenizer speed: bert4k `Tokenizer` vs Hugging Face BertTokenizerFast (batch) and the slow BertTokenizer.

Texts: every ChnSentiCorp review plus every CMRC 2018 context and question (both files).
All three produce `[CLS] ... [SEP]` ids with do_lower_case=True on the Chinese BERT vocab;
the script checks the ids are identical and prints one JSON line of tokens/s.
`ours` starts with empty caches (a fresh Tokenizer per run, vocab loading included);
`ours_warm` reuses one.  Times are the best of `--repeat` runs (wall and process CPU,
which counts all of HF's threads); the machine's load average is printed with them.

    python bench/bench_tokenizer.py [--data ../shared/data] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import tokenizers
import transformers

from bert4k.tokenizers import Tokenizer


def load_texts(data: Path) -> list[str]:
    with open(data / "chnsenticorp" / "train.tsv", encoding="utf-8") as f:
        next(f)
        texts = [line.rstrip("\n").split("\t", 1)[1] for line in f]
    for name in ("cmrc2018_trial.json", "cmrc2018_train_sample.json"):
        with open(data / "cmrc2018" / name, encoding="utf-8") as f:
            for article in json.load(f)["data"]:
                for para in article["paragraphs"]:
                    texts.append(para["context"])
                    texts += [qa["question"] for qa in para["qas"]]
    return texts


def best_time(fn, repeat: int) -> tuple[float, float, list]:
    """Best wall time, best process CPU time (all threads) and the result of `fn()` over `repeat` runs."""
    wall, cpu, out = float("inf"), float("inf"), None
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = min(wall, time.perf_counter() - start), min(cpu, time.process_time() - start_cpu)
    return wall, cpu, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    vocab = args.data / "bert-chinese-vocab" / "vocab.txt"
    texts = load_texts(args.data)

    def ours_cold() -> list[list[int]]:
        tok = Tokenizer(vocab, do_lower_case=True)  # empty char table and word cache
        return [tok.encode(t)[0] for t in texts]

    warm = Tokenizer(vocab, do_lower_case=True)
    fast = transformers.BertTokenizerFast.from_pretrained(str(vocab.parent), do_lower_case=True)
    slow_cls = getattr(transformers, "BertTokenizerLegacy", None) or transformers.BertTokenizer  # v5 / v4 name
    slow = slow_cls(vocab_file=str(vocab), do_lower_case=True)
    runs = {
        "ours": best_time(ours_cold, args.repeat),
        "ours_warm": best_time(lambda: [warm.encode(t)[0] for t in texts], args.repeat),
        "hf_fast_batch": best_time(lambda: fast(texts)["input_ids"], args.repeat),
        "hf_slow": best_time(lambda: [slow.encode(t) for t in texts], 1),
    }
    ids = runs["ours"][2]
    n_tokens = sum(map(len, ids))
    result = {"texts": len(texts), "chars": sum(map(len, texts)), "tokens": n_tokens}
    result.update({f"ids_equal_{k}": v[2] == ids for k, v in runs.items() if k != "ours"})
    result.update({f"{k}_tokens_per_s": round(n_tokens / v[0]) for k, v in runs.items()})
    result.update({f"{k}_tokens_per_cpu_s": round(n_tokens / v[1]) for k, v in runs.items()})
    result["ours_over_fast"] = round(runs["hf_fast_batch"][0] / runs["ours"][0], 2)
    result["ours_over_slow"] = round(runs["hf_slow"][0] / runs["ours"][0], 2)
    result.update(cpu_count=os.cpu_count(), load_avg_1m=round(os.getloadavg()[0], 2),
                  transformers=transformers.__version__, tokenizers=tokenizers.__version__)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
