"""Every ```python block of README.md and pretrained/README.md runs, in order, in one namespace, in a folder
holding tiny random checkpoints under the names the README uses; every `bert4k ...` line of its ```bash blocks
runs through the CLI there too. A README that crashes on copy-paste fails this test."""
import json
import os
import re
import shlex
import shutil

import pytest
import torch
import transformers

from bert4k import cli
from tests.conftest import REPO
from tests.oracles.hf import randomize

BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.DOTALL | re.MULTILINE)
VOCAB = REPO / "pretrained" / "bert4k-small-zh" / "vocab.txt"


def blocks(path, language):
    return [code for lang, code in BLOCK.findall(path.read_text(encoding="utf-8")) if lang == language]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """chinese_L-12_H-768_A-12/ (Google TF), bert-base-chinese/ and gpt2-chinese/ (HF) with the small vocab, and
    pretrained/ linked to the repository's."""
    from bert4k import build_transformer_model
    from bert4k.models.checkpoint_io import export_checkpoint

    root = tmp_path_factory.mktemp("readme")
    vocab = len(VOCAB.read_text(encoding="utf-8").splitlines())
    bert_config = dict(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, max_position_embeddings=128, type_vocab_size=2, hidden_act="gelu")
    torch.manual_seed(0)
    bert = transformers.BertForPreTraining(transformers.BertConfig(**bert_config))
    randomize(bert, seed=0)
    bert.save_pretrained(root / "bert-base-chinese", safe_serialization=True)
    google = root / "chinese_L-12_H-768_A-12"
    model = build_transformer_model(root / "bert-base-chinese" / "config.json", root / "bert-base-chinese",
                                    with_pool=True, with_mlm=True)
    export_checkpoint(model, google / "bert_model.ckpt", format="tf")
    (google / "bert_config.json").write_text(json.dumps(bert_config))
    gpt = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=vocab, n_positions=64, n_embd=32,
                                                               n_layer=2, n_head=2))
    randomize(gpt, seed=1)
    gpt.save_pretrained(root / "gpt2-chinese")
    for folder in ("bert-base-chinese", "chinese_L-12_H-768_A-12", "gpt2-chinese"):
        shutil.copy(VOCAB, root / folder / "vocab.txt")
    os.symlink(REPO / "pretrained", root / "pretrained")
    return root


@pytest.mark.parametrize("readme", ["README.md", "pretrained/README.md"])
def test_readme_python_blocks_run(readme, workdir, monkeypatch):
    code = blocks(REPO / readme, "python")
    assert code, f"{readme} has no python blocks"
    if readme == "README.md":
        assert len(code) >= 4
    monkeypatch.chdir(workdir)
    namespace = {"__name__": "__readme__"}
    for i, source in enumerate(code):
        try:
            exec(compile(source, f"{readme} python block {i + 1}", "exec"), namespace)  # noqa: S102 (the point of the test)
        except Exception as error:
            raise AssertionError(f"{readme} python block {i + 1} fails: {error!r}\n{source}") from error


def test_readme_cli_lines_run(workdir, monkeypatch):
    lines = [line for code in blocks(REPO / "README.md", "bash") for line in code.splitlines()
             if line.startswith("bert4k ")]
    assert len(lines) >= 4
    monkeypatch.chdir(workdir)
    for line in lines:
        assert cli.main(shlex.split(line, comments=True)[1:]) == 0, line
