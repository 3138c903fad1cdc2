"""`bert4k.pretrained`: the registry, and `from_pretrained` building model + tokenizer from a local folder, with
errors that name the missing files and where to get them."""
import shutil

import numpy as np
import pytest

from bert4k import pretrained
from tests.conftest import REPO

SMALL = REPO / "pretrained" / "bert4k-small-zh"


def test_registry_lists_the_public_checkpoints():
    entries = pretrained.registry()
    assert {"bert-base-chinese", "hfl/chinese-roberta-wwm-ext", "uer/gpt2-chinese-cluecorpussmall",
            "google/mt5-small", "bert4k-small-zh"} <= set(entries)
    assert pretrained.list_checkpoints() == sorted(entries)
    assert "https://huggingface.co/google-bert/bert-base-chinese" in entries["bert-base-chinese"].describe()


def test_from_pretrained_local_entry_equals_explicit_build():
    from bert4k import build_transformer_model

    model, tokenizer = pretrained.from_pretrained("bert4k-small-zh", application="mlm", logits=True)
    x = tokenizer("这家酒店很好")
    reference = build_transformer_model(str(SMALL / "config.json"), str(SMALL / "model.safetensors"),
                                        application="mlm", logits=True)
    inputs = [x["token_ids"], x["segment_ids"]]
    np.testing.assert_allclose(model.predict(inputs, verbose=0), reference.predict(inputs, verbose=0), atol=1e-5)
    assert tokenizer.token_to_id("[UNK]") not in x["token_ids"][0].tolist()


def test_registry_name_without_local_copy_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"bert-base-chinese: no local copy in .*download config.json, "
                                                r"model.safetensors, vocab.txt from https://huggingface.co/"):
        pretrained.from_pretrained("bert-base-chinese", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="neither a folder nor a registry name"):
        pretrained.from_pretrained("no-such-model", root=tmp_path)


def test_folder_named_like_an_entry_is_checked(tmp_path):
    folder = tmp_path / "hfl" / "chinese-roberta-wwm-ext"
    folder.mkdir(parents=True)
    shutil.copy(SMALL / "vocab.txt", folder / "vocab.txt")
    with pytest.raises(FileNotFoundError, match=r"missing config.json, pytorch_model.bin for "
                                                r"hfl/chinese-roberta-wwm-ext; obtain them from https://"):
        pretrained.from_pretrained("hfl/chinese-roberta-wwm-ext", root=tmp_path)
    # model.safetensors stands in for pytorch_model.bin; a config that is not this checkpoint's is refused
    shutil.copy(SMALL / "model.safetensors", folder / "model.safetensors")
    shutil.copy(SMALL / "config.json", folder / "config.json")
    with pytest.raises(ValueError, match=r"config.json: num_hidden_layers = 4, but hfl/chinese-roberta-wwm-ext has 12"):
        pretrained.from_pretrained(folder)


def test_unregistered_folder_detects_family(tmp_path):
    import transformers

    folder = tmp_path / "my-bert"
    shutil.copytree(SMALL, folder)
    model, tokenizer = pretrained.from_pretrained(folder)
    assert model.family == "bert" and tokenizer.vocab_size == len((SMALL / "vocab.txt").read_text().splitlines())
    gpt = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=tokenizer.vocab_size, n_positions=16,
                                                               n_embd=8, n_layer=1, n_head=2))
    gpt.save_pretrained(tmp_path / "my-gpt")
    shutil.copy(SMALL / "vocab.txt", tmp_path / "my-gpt" / "vocab.txt")
    assert pretrained.detect_family(tmp_path / "my-gpt") == "gpt2"
    model, _ = pretrained.from_pretrained(tmp_path / "my-gpt", application="lm")
    assert model.family == "gpt2"
    with pytest.raises(ValueError, match="unknown model 'xlnet'"):
        pretrained.from_pretrained(folder, model="xlnet")


def test_shipped_checkpoint_reads_word_order():
    """The shipped checkpoint predicts masked characters of held-out ChnSentiCorp reviews (never pre-trained on)
    from their context in order: shuffling each review's unmasked characters raises its MLM loss by more than
    0.5 nats (pretrained/context_order.py; the earlier, order-blind checkpoint: −0.0007)."""
    import sys

    sys.path.insert(0, str(REPO / "pretrained"))
    sys.path.insert(0, str(REPO / "tasks"))
    import batches
    import classification
    import context_order

    from bert4k import Tokenizer, build_transformer_model

    tokenizer = Tokenizer(str(SMALL / "vocab.txt"), do_lower_case=True)
    reviews = classification.load("chnsenticorp")[2][:64]
    rows = [np.array(tokenizer.encode(text, maxlen=128)[0][1:-1]) for text in reviews]
    special = {t: tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]", "[MASK]")}
    held_out = batches.StepBatches(rows, [np.arange(len(r)) for r in rows], batch_size=16, maxlen=128, k=26,
                                   vocab_size=tokenizer.vocab_size, cls_id=special["[CLS]"], sep_id=special["[SEP]"],
                                   mask_id=special["[MASK]"], first_normal_id=special["[MASK]"] + 1, seed=0)
    model = build_transformer_model(str(SMALL / "config.json"), str(SMALL / "model.safetensors"),
                                    application="mlm", logits=True)
    result = context_order.context_order_gain(lambda x: np.asarray(model.predict(x, verbose=0)),
                                              [held_out.batch(i) for i in range(4)])
    assert result["order_gain"] > 0.5, result
