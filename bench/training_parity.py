"""Training parity: fine-tune the same initial checkpoint on ChnSentiCorp with bert4k (Keras) and with Hugging Face
transformers + PyTorch, with the same optimiser, schedule, batches, epochs and max length, over several seeds, and
print both accuracies on the held-out split of `tasks/classification.py`.

Both sides: the BERT encoder of `--checkpoint` (HF BERT safetensors + config.json + vocab.txt), a dropout + Dense
head on the [CLS] vector whose initial weights are drawn once per seed and copied to both, AdamW (β 0.9/0.999,
ε 1e-6, decoupled weight decay on every weight except norms and biases), linear warmup then linear decay to 0,
no gradient clipping, and the very same padded batches in the same order (drawn once per seed). Dropout masks
differ (each framework's own RNG), so the runs agree within seed noise, not bit for bit.

    python bench/training_parity.py --seeds 0 1 2 --train 2000 --epochs 1 --maxlen 64
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tasks"))
import classification
import common
import keras
import numpy as np

from bert4k import build_transformer_model, heads, training
from bert4k.tokenizers import Tokenizer


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(common.PRETRAINED), help="folder: config.json, model.safetensors, vocab.txt")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--train", type=int, default=2000, help="training examples (evenly spread; 0 = all)")
    p.add_argument("--eval", type=int, default=0, help="held-out examples (0 = all)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--maxlen", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--warmup", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--out", default=str(REPO / "runs" / "training_parity.json"))
    return p.parse_args(argv)


def spread(n_items: int, n: int) -> np.ndarray:
    return np.arange(n_items) if not n or n >= n_items else np.linspace(0, n_items - 1, n).round().astype(int)


def padded(rows, index):
    out = np.zeros((len(index), max(len(rows[i]) for i in index)), "int32")
    for j, i in enumerate(index):
        out[j, :len(rows[i])] = rows[i]
    return out


def make_batches(ids, segs, labels, batch_size, epochs, seed):
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(epochs):
        order = rng.permutation(len(ids))
        for s in range(0, len(order), batch_size):
            index = order[s:s + batch_size]
            batches.append((padded(ids, index), padded(segs, index), labels[index]))
    return batches


def lr_at(step, total, peak, warmup_steps):
    if step < warmup_steps:
        return peak * step / max(warmup_steps, 1)
    return peak * max(0.0, (total - step) / max(total - warmup_steps, 1))


def run_bert4k(args, batches, eval_batches, head_init, seed):
    training.set_seed(seed)
    folder = Path(args.checkpoint)
    encoder = build_transformer_model(str(folder / "config.json"), str(folder / "model.safetensors"))
    model = heads.build_sequence_classifier(encoder, 2, pooling="cls", dropout=args.dropout)
    dense = model.get_layer("Classifier-Dense")
    dense.kernel.assign(head_init[0])
    dense.bias.assign(head_init[1])
    total = len(batches)
    schedule = training.warmup_linear_decay(args.lr, total, round(args.warmup * total))
    optimizer = training.create_optimizer(model, schedule, weight_decay=args.weight_decay, clipnorm=None)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    for ids, segs, y in batches:
        model.train_on_batch([ids, segs], y)
    correct = sum(int((np.asarray(model.predict_on_batch([i, s])).argmax(-1) == y).sum()) for i, s, y in eval_batches)
    return correct / sum(len(y) for _, _, y in eval_batches)


def run_torch(args, batches, eval_batches, head_init, seed):
    import torch
    import transformers

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    encoder = transformers.BertModel.from_pretrained(args.checkpoint, add_pooling_layer=False)
    head = torch.nn.Linear(encoder.config.hidden_size, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor(head_init[0].T))
        head.bias.copy_(torch.tensor(head_init[1]))
    dropout = torch.nn.Dropout(args.dropout)
    modules = torch.nn.ModuleList([encoder, head])
    decay = [p for n, p in modules.named_parameters() if not ("LayerNorm" in n or n.endswith("bias"))]
    no_decay = [p for n, p in modules.named_parameters() if "LayerNorm" in n or n.endswith("bias")]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, eps=1e-6)
    total, warmup = len(batches), round(args.warmup * len(batches))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_at(step, total, 1.0, warmup))

    def logits(ids, segs, train):
        modules.train(train)
        ids, segs = torch.tensor(ids, dtype=torch.long), torch.tensor(segs, dtype=torch.long)
        hidden = encoder(input_ids=ids, token_type_ids=segs, attention_mask=(ids != 0).long()).last_hidden_state
        return head(dropout(hidden[:, 0]))

    for ids, segs, y in batches:
        loss = torch.nn.functional.cross_entropy(logits(ids, segs, True), torch.tensor(y, dtype=torch.long))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    with torch.no_grad():
        correct = sum(int((logits(i, s, False).argmax(-1).numpy() == y).sum()) for i, s, y in eval_batches)
    return correct / sum(len(y) for _, _, y in eval_batches)


def main(argv=None) -> dict:
    args = parse_args(argv)
    tokenizer = Tokenizer(str(Path(args.checkpoint) / "vocab.txt"), do_lower_case=True)
    train_texts, train_labels, test_texts, test_labels, _ = classification.load("chnsenticorp")
    tr, te = spread(len(train_texts), args.train), spread(len(test_texts), args.eval)
    encode = [tokenizer.encode(t, maxlen=args.maxlen) for t in train_texts]
    ids, segs = [encode[i][0] for i in tr], [encode[i][1] for i in tr]
    test = [tokenizer.encode(test_texts[i], maxlen=args.maxlen) for i in te]
    eval_batches = [(padded([t[0] for t in test], range(s, min(s + 64, len(test)))),
                     padded([t[1] for t in test], range(s, min(s + 64, len(test)))), test_labels[te][s:s + 64])
                    for s in range(0, len(test), 64)]
    hidden = json.loads((Path(args.checkpoint) / "config.json").read_text())["hidden_size"]
    results = {"bert4k": [], "torch": []}
    for seed in args.seeds:
        rng = np.random.default_rng(1000 + seed)
        head_init = (rng.normal(0, 0.02, (hidden, 2)).astype("float32"), np.zeros(2, "float32"))
        batches = make_batches(ids, segs, train_labels[tr], args.batch_size, args.epochs, seed)
        for name, fn in (("bert4k", run_bert4k), ("torch", run_torch)):
            start = time.time()
            acc = fn(args, batches, eval_batches, head_init, seed)
            results[name].append(acc)
            print(f"seed {seed} {name:7s} accuracy {acc:.4f} ({time.time() - start:.0f} s)", flush=True)
    summary = {name: {"accuracies": v, "mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1
                      else 0.0} for name, v in results.items()}
    summary["difference_of_means"] = summary["bert4k"]["mean"] - summary["torch"]["mean"]
    summary["settings"] = vars(args)
    for name in ("bert4k", "torch"):
        s = summary[name]
        print(f"{name:7s} mean {s['mean']:.4f} ± {s['std']:.4f} over seeds {args.seeds}")
    print(f"difference of means {summary['difference_of_means']:+.4f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    main()
