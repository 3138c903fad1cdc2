"""Decoding: cached == uncached, beam search == exhaustive search, batch == rows one by one, sampling properties,
stop ids / min_new_tokens / num_samples, unilm seq2seq and BERT lm, bert4keras' AutoRegressiveDecoder.

References: Hugging Face GPT-2 (log-probabilities for the exhaustive search) and the models' full forward pass
rerun over the whole prefix at every step (the uncached path)."""
import functools
import gc
import itertools
import weakref

import keras
import numpy as np
import pytest
import torch
import transformers

from bert4k import build_transformer_model
from bert4k.config import TransformerConfig
from bert4k.generation import adapter_for, generate, samplers
from bert4k.generation.engine import default_jit_compile
from bert4k.generation.processors import sample, uniform_noise, warp
from bert4k.layers.linear_attention import initial_state
from bert4k.models.transformer import Transformer
from bert4k.snippets import AutoRegressiveDecoder
from tests.oracles.hf import randomize, save_both

VOCAB = 61


def hf_gpt2(tmp_path_factory, vocab, seed, scale=0.2):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=vocab, n_positions=48, n_embd=32, n_layer=2, n_head=4,
                                     bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = transformers.GPT2LMHeadModel(config)
    randomize(model, seed=seed, scale=scale)
    st_dir, _ = save_both(model, str(tmp_path_factory.mktemp(f"gpt2v{vocab}")))
    return model, build_transformer_model(st_dir, st_dir, model="gpt2")


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    return hf_gpt2(tmp_path_factory, VOCAB, seed=0)[1]


def random_weights(model, seed=0):
    rng = np.random.default_rng(seed)
    for w in model.weights:
        noise = rng.normal(0.0, 0.3, w.shape).astype("float32")
        w.assign(1.0 + noise if w.path.endswith("gamma") else noise)
    return model


BERT = TransformerConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=48, max_position_embeddings=48, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0)


@pytest.fixture(scope="module")
def bert_unilm():
    return random_weights(Transformer(BERT, application="unilm"))


def prompts(seed=0, lengths=(5, 2, 7)):
    rng = np.random.default_rng(seed)
    return [[int(t) for t in rng.integers(3, VOCAB, n)] for n in lengths]


def uncached_greedy(model, prompt, steps, segments=None, target_segment=1, allowed=None):
    """Rerun the whole prefix each step (what bert4keras does) and take the argmax of the last position (over the
    `allowed` ids only, if given)."""
    ids, out = list(prompt), []
    segs = None if segments is None else list(segments)
    for _ in range(steps):
        x = np.array([ids], "int32")
        inputs = x if segs is None else [x, np.array([segs], "int32")]
        scores = keras.ops.convert_to_numpy(model(inputs, training=False))[0, -1]
        if allowed is not None:
            scores = np.where(np.isin(np.arange(len(scores)), allowed), scores, -np.inf)
        token = int(np.argmax(scores))
        out.append(token)
        ids.append(token)
        if segs is not None:
            segs.append(target_segment)
    return out


def test_gpt2_cached_equals_uncached_and_batch_equals_rows(gpt2):
    rows = prompts()
    batch = generate(gpt2, rows, 10)
    assert batch.shape == (3, 10) and batch.dtype == np.int64
    for prompt, tokens in zip(rows, batch):
        np.testing.assert_array_equal(tokens, uncached_greedy(gpt2, prompt, 10))
        np.testing.assert_array_equal(tokens, generate(gpt2, [prompt], 10)[0])
    padded = np.zeros((3, 7), "int32")  # a right-padded array (pad id 0 in this config) gives the same result
    for i, p in enumerate(rows):
        padded[i, :len(p)] = p
    np.testing.assert_array_equal(generate(gpt2, padded, 10), batch)


def test_no_retrace_across_steps_and_calls(gpt2):
    compiled = adapter_for(gpt2).__dict__.setdefault("_bert4k_compiled", {})

    def traces():
        if keras.backend.backend() != "tensorflow":
            return 0  # the compiled functions themselves are counted below
        return sum(fn.experimental_get_tracing_count() for fn in compiled.values())

    for method in ("greedy", "beam"):
        generate(gpt2, prompts(1), 12, method=method)
        before, functions = traces(), len(compiled)
        generate(gpt2, prompts(2), 11, method=method)  # other prompts and length, same rows and cache bucket
        assert (traces(), len(compiled)) == (before, functions)


def test_beam_width_one_equals_greedy(gpt2):
    rows = prompts(3)
    np.testing.assert_array_equal(generate(gpt2, rows, 8, method="beam", num_beams=1), generate(gpt2, rows, 8))


def test_beam_batch_equals_rows(gpt2):
    rows = prompts(4)
    batch = generate(gpt2, rows, 8, method="beam", num_beams=3, num_samples=2, stop_ids=[5, 9])
    for i, prompt in enumerate(rows):
        alone = generate(gpt2, [prompt], 8, method="beam", num_beams=3, num_samples=2, stop_ids=[5, 9])
        np.testing.assert_array_equal(batch[2 * i:2 * i + 2, :alone.shape[1]], alone)


@pytest.fixture(scope="module")
def tiny_vocab(tmp_path_factory):
    return hf_gpt2(tmp_path_factory, 6, seed=3, scale=0.6)


def test_beam_search_equals_exhaustive_search(tiny_vocab):
    """Beams wide enough to prune nothing (vocab ** (steps - 1)) must return the exhaustive top 3 by
    `sum log p / length ** alpha`, a stop id ending a hypothesis early."""
    hf, ours = tiny_vocab
    vocab, stop, steps = 6, 5, 3

    @functools.cache
    def log_probs(ids):
        with torch.no_grad():
            return torch.log_softmax(hf(torch.tensor([list(ids)])).logits[0, -1].double(), -1).numpy()

    batch = [[1, 3, 4], [2]]
    candidates = [seq for length in range(1, steps + 1) for seq in itertools.product(range(vocab), repeat=length)
                  if stop not in seq[:-1] and (length == steps or seq[-1] == stop)]
    for alpha in (1.0, 0.0, 2.0):
        found = generate(ours, batch, steps, method="beam", num_beams=vocab ** (steps - 1), num_samples=3,
                         length_penalty=alpha, stop_ids=[stop], pad_id=-1)
        for row, prompt in enumerate(batch):
            scored = [(sum(log_probs(tuple(prompt) + seq[:i])[t] for i, t in enumerate(seq)) / len(seq) ** alpha,
                       list(seq)) for seq in candidates]
            best = [seq for _, seq in sorted(scored, key=lambda s: -s[0])[:3]]
            got = [[int(t) for t in r if t != -1] for r in found[3 * row:3 * row + 3]]
            assert got == best, (alpha, row)


def test_allowed_ids_greedy_beam_sampling_and_streaming(gpt2, tiny_vocab):
    """`allowed_ids` (stop ids always allowed): greedy = the masked argmax of the uncached forward, streamed or not;
    beam = the exhaustive best over allowed sequences; samples use allowed ids only; bad ids are named."""
    rows = prompts(8)
    allowed = [sorted(set(p)) for p in rows]  # copy-only: each row may use its own prompt's ids
    out = generate(gpt2, rows, 8, allowed_ids=allowed)
    streamed = generate(gpt2, rows, 8, allowed_ids=allowed, streamer=lambda ids: None)
    np.testing.assert_array_equal(streamed, out)
    for prompt, ids, tokens in zip(rows, allowed, out):
        np.testing.assert_array_equal(tokens, uncached_greedy(gpt2, prompt, 8, allowed=ids))
    samples = generate(gpt2, rows, 8, method="sample", temperature=3.0, seed=0, num_samples=4, allowed_ids=allowed,
                       stop_ids=[60], pad_id=-1)
    for i, row in enumerate(samples):
        assert set(row[row >= 0].tolist()) <= set(allowed[i // 4]) | {60}

    hf, ours = tiny_vocab
    stop, steps, subset = 5, 3, [0, 2, 3]

    def log_probs(ids):
        with torch.no_grad():
            return torch.log_softmax(hf(torch.tensor([list(ids)])).logits[0, -1].double(), -1).numpy()

    def restricted(ids):  # the distribution renormalised over the allowed ids and the stop id
        lp = log_probs(ids)
        keep = subset + [stop]
        return {t: lp[t] - np.logaddexp.reduce(lp[keep]) for t in keep}

    prompt = [1, 3, 4]
    candidates = [seq for length in range(1, steps + 1) for seq in itertools.product(subset + [stop], repeat=length)
                  if stop not in seq[:-1] and (length == steps or seq[-1] == stop)]
    scored = sorted(((sum(restricted(tuple(prompt) + seq[:i])[t] for i, t in enumerate(seq)) / len(seq), list(seq))
                     for seq in candidates), key=lambda s: -s[0])
    found = generate(ours, [prompt], steps, method="beam", num_beams=16, num_samples=2, stop_ids=[stop], pad_id=-1,
                     allowed_ids=[subset])
    assert [[int(t) for t in r if t != -1] for r in found] == [seq for _, seq in scored[:2]]
    with pytest.raises(ValueError, match="allowed_ids row 1 has id 99"):
        generate(ours, [prompt, prompt], 2, allowed_ids=[[0], [99]])
    with pytest.raises(ValueError, match="allowed_ids has 1 rows"):
        generate(ours, [prompt, prompt], 2, allowed_ids=[[0]])


def repeats_ngram(seq, n):
    grams = [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]
    return len(grams) != len(set(grams))


def test_no_repeat_ngram_greedy_streaming_and_beam(tiny_vocab):
    """`no_repeat_ngram_size`: greedy = the argmax of the uncached HF forward over the ids that would not repeat an
    n-gram of the generated tokens (the prompt does not count), streamed or not; beam = the exhaustive best over such
    sequences, each step renormalised over its unbanned ids."""
    hf, ours = tiny_vocab

    def log_probs(ids, n, generated):
        with torch.no_grad():
            lp = torch.log_softmax(hf(torch.tensor([list(ids)])).logits[0, -1].double(), -1).numpy()
        tail = tuple(generated[len(generated) - n + 1:]) if n > 1 else ()
        banned = {generated[i + n - 1] for i in range(len(generated) - n + 1) if tuple(generated[i:i + n - 1]) == tail}
        lp = np.where(np.isin(np.arange(len(lp)), list(banned)), -np.inf, lp)
        return lp - np.logaddexp.reduce(lp[np.isfinite(lp)])

    rows = [[1, 3, 3, 4], [2, 4]]
    free = generate(ours, rows, 14)
    assert all(repeats_ngram(list(r), 2) for r in free)  # without the ban this model loops
    for n, steps in ((1, 5), (2, 14), (3, 14)):  # n = 1: every id once (5 of the 6 ids)
        out = generate(ours, rows, steps, no_repeat_ngram_size=n)
        np.testing.assert_array_equal(generate(ours, rows, steps, no_repeat_ngram_size=n, streamer=lambda ids: None),
                                      out)
        for prompt, tokens in zip(rows, out):
            generated = []
            for _ in range(steps):
                generated.append(int(np.argmax(log_probs(prompt + generated, n, generated))))
            assert tokens.tolist() == generated and not repeats_ngram(generated, n), n
    samples = generate(ours, rows, 12, method="sample", temperature=2.0, seed=0, num_samples=3,
                       no_repeat_ngram_size=2)
    assert not any(repeats_ngram(list(r), 2) for r in samples)

    stop, steps, n, prompt = 5, 4, 2, [2, 4]
    unbanned = generate(ours, [prompt], steps, method="beam", num_beams=6 ** (steps - 1), num_samples=3,
                        stop_ids=[stop], pad_id=-1)
    assert all(repeats_ngram([int(t) for t in r if t != -1], n) for r in unbanned)  # the ban changes all 3
    candidates = [seq for length in range(1, steps + 1) for seq in itertools.product(range(6), repeat=length)
                  if stop not in seq[:-1] and (length == steps or seq[-1] == stop) and not repeats_ngram(seq, n)]
    scored = sorted(((sum(log_probs(prompt + list(seq[:i]), n, list(seq[:i]))[t] for i, t in enumerate(seq)) / len(seq),
                      list(seq)) for seq in candidates), key=lambda s: -s[0])
    found = generate(ours, [prompt], steps, method="beam", num_beams=6 ** (steps - 1), num_samples=3,
                     stop_ids=[stop], pad_id=-1, no_repeat_ngram_size=n)
    assert [[int(t) for t in r if t != -1] for r in found] == [seq for _, seq in scored[:3]]
    with pytest.raises(ValueError, match="no_repeat_ngram_size must be ≥ 0"):
        generate(ours, [prompt], 2, no_repeat_ngram_size=-1)


def test_sampling_reproducible_and_limits(gpt2):
    rows = prompts(5)
    a = generate(gpt2, rows, 10, method="sample", seed=11, temperature=2.0, num_samples=2)
    assert a.shape == (6, 10)
    np.testing.assert_array_equal(a, generate(gpt2, rows, 10, method="sample", seed=11, temperature=2.0,
                                              num_samples=2))
    assert not np.array_equal(a, generate(gpt2, rows, 10, method="sample", seed=12, temperature=2.0, num_samples=2))
    greedy = np.repeat(generate(gpt2, rows, 10), 2, axis=0)
    np.testing.assert_array_equal(generate(gpt2, rows, 10, method="sample", top_k=1, num_samples=2, seed=1), greedy)
    np.testing.assert_array_equal(generate(gpt2, rows, 10, method="sample", top_p=1e-6, num_samples=2, seed=1),
                                  greedy)


def test_warp_and_sample_by_hand():
    logits = np.log(np.array([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    logits = logits.astype("float32")
    numpy = keras.ops.convert_to_numpy
    kept = np.isfinite(numpy(warp(logits, top_p=0.8)))[0]
    np.testing.assert_array_equal(kept, [True, True, True, False, False])  # 0.5+0.2 < 0.8 ≤ 0.5+0.2+0.15
    np.testing.assert_array_equal(np.isfinite(numpy(warp(logits, top_k=2)))[0], [True, True, False, False, False])
    np.testing.assert_allclose(numpy(warp(logits, temperature=2.0)), logits / 2.0, rtol=1e-6)
    draws = numpy(sample(np.repeat(logits, 40000, axis=0).astype("float32"), seed=0, step=0))
    np.testing.assert_allclose(np.bincount(draws, minlength=5) / 40000, [0.5, 0.2, 0.15, 0.1, 0.05], atol=0.01)


def test_stop_ids_min_new_tokens_num_samples_streamer(gpt2):
    rows = prompts(6)
    free = generate(gpt2, rows, 9)
    stop = int(free[0, 3])
    first = int(np.flatnonzero(free[0] == stop)[0])
    seen = []
    out = generate(gpt2, rows, 9, stop_ids=[stop, 60], pad_id=-1, streamer=seen.append)
    np.testing.assert_array_equal(np.stack(seen, axis=1), out)
    np.testing.assert_array_equal(out[0, :first + 1], free[0, :first + 1])
    assert (out[0, first + 1:] == -1).all()
    for i in range(1, 3):  # rows keep the free run up to their own first stop id
        hits = np.flatnonzero(np.isin(free[i], [stop, 60]))
        end = hits[0] + 1 if len(hits) else 9
        np.testing.assert_array_equal(out[i, :end], free[i, :end])
        assert (out[i, end:] == -1).all()
    late = generate(gpt2, rows, 9, stop_ids=[stop], min_new_tokens=first + 2, pad_id=-1)
    assert not np.isin(late[:, :first + 2], [stop]).any()
    twice = generate(gpt2, rows, 9, num_samples=2)
    np.testing.assert_array_equal(twice, np.repeat(free, 2, axis=0))


def test_unilm_seq2seq_cached_equals_uncached(bert_unilm):
    sources = prompts(7, lengths=(6, 3))
    segments = [[0] * len(s) for s in sources]
    out = generate(bert_unilm, (sources, segments), 8)
    for source, tokens in zip(sources, out):
        np.testing.assert_array_equal(tokens, uncached_greedy(bert_unilm, source, 8, segments=[0] * len(source)))
    np.testing.assert_array_equal(generate(bert_unilm, sources, 8), out)  # segment ids may be left out


def test_bert_lm_generation_cached_equals_uncached():
    model = random_weights(Transformer(BERT, application="lm"), seed=1)
    rows = prompts(8, lengths=(4, 6))
    out = generate(model, rows, 7)
    for prompt, tokens in zip(rows, out):
        np.testing.assert_array_equal(tokens, uncached_greedy(model, prompt, 7, [0] * len(prompt), target_segment=0))


class Seq2Seq(AutoRegressiveDecoder):
    """A bert4keras-style decoder: rerun the whole prefix through `last_token(model)` each step."""

    def __init__(self, model, **kwargs):
        super().__init__(**kwargs)
        self.model = model

    @AutoRegressiveDecoder.wraps(default_rtype="probas")
    def predict(self, inputs, output_ids, states):
        token_ids, segment_ids = inputs
        token_ids = np.concatenate([token_ids, output_ids], 1)
        segment_ids = np.concatenate([segment_ids, np.ones_like(output_ids)], 1)
        return keras.ops.convert_to_numpy(self.last_token(self.model)([token_ids, segment_ids], training=False))


def test_autoregressive_decoder_runs_on_the_engine(bert_unilm):
    source = prompts(9, lengths=(5,))[0]
    segments = [0] * len(source)
    free = generate(bert_unilm, ([source], [segments]), 6)[0]
    end = int(free[2])
    decoder = Seq2Seq(bert_unilm, start_id=None, end_id=end, maxlen=6)
    best = decoder.beam_search([source, segments], topk=3)
    cached = generate(bert_unilm, ([source], [segments]), 6, method="beam", num_beams=3, length_penalty=0.0,
                      stop_ids=[end], pad_id=-1)[0]
    np.testing.assert_array_equal(best, cached[cached != -1])
    greedy_like = decoder.random_sample([source, segments], n=2, topk=1)
    stop = int(np.flatnonzero(free == end)[0])
    for seq in greedy_like:
        np.testing.assert_array_equal(seq, free[:stop + 1])
    np.random.seed(0)
    a = decoder.random_sample([source, segments], n=3, topp=0.9)
    np.random.seed(0)
    b = decoder.random_sample([source, segments], n=3, topp=0.9)
    assert len(a) == 3 and all(np.array_equal(x, y) for x, y in zip(a, b))
    with_start = Seq2Seq(bert_unilm, start_id=7, end_id=None, maxlen=3).beam_search([source, segments], topk=2)
    assert with_start[0] == 7 and len(with_start) == 4


def test_loops_agree_with_and_without_xla_and_bfloat16_runs(gpt2):
    """The fused loop (XLA or not) and the Python loop (taken when streaming) give the same tokens."""
    rows = prompts(10)
    for options in (dict(), dict(method="sample", seed=5, top_p=0.9, repetition_penalty=1.3, stop_ids=[7, 8])):
        fused = generate(gpt2, rows, 6, jit_compile=True, **options)
        np.testing.assert_array_equal(generate(gpt2, rows, 6, jit_compile=False, **options), fused)
        np.testing.assert_array_equal(generate(gpt2, rows, 6, streamer=lambda ids: None, **options), fused)
    config = gpt2.config
    bf16 = Transformer(config, application="lm", family="gpt2", dtype="bfloat16")
    bf16.set_weights(gpt2.get_weights())
    out = generate(bf16, rows, 6)
    assert out.shape == (3, 6) and ((out >= 0) & (out < VOCAB)).all()
    adapter = adapter_for(bf16)  # bf16 caches, and no TF XLA by default (XLA's CPU bf16 matmuls are slow)
    assert adapter.compute_dtype == "bfloat16"
    if keras.backend.backend() == "tensorflow":
        assert not default_jit_compile(adapter) and default_jit_compile(adapter_for(gpt2))


def numpy_lowbias32_noise(shape, seed, step):
    """The noise hash written on numpy uint32 (the reference for the keras.ops int32 version)."""
    def mix(x):
        with np.errstate(over="ignore"):
            for m in (0x7FEB352D, 0x846CA68B):
                x = (x ^ (x >> np.uint32(16))) * np.uint32(m)
            return x ^ (x >> np.uint32(16))
    key = mix(np.uint32(seed) ^ mix(np.uint32(step) + np.uint32(0x9E3779B9)))
    bits = mix(mix(np.arange(np.prod(shape), dtype=np.uint32).reshape(shape) + key) ^ key)
    return ((bits >> np.uint32(8)).astype(np.float32) + 0.5) / float(1 << 24)


def test_noise_is_the_uint32_hash_on_this_backend():
    for seed, step in ((0, 0), (12345, 7), (2 ** 31 - 2, 99)):
        got = uniform_noise((3, 50), keras.ops.convert_to_tensor(seed, "int32"), keras.ops.convert_to_tensor(step, "int32"))
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), numpy_lowbias32_noise((3, 50), seed, step))


def test_samplers_by_name_and_object_agree_and_global_rng_untouched(gpt2):
    rows = prompts(11)
    state = np.random.get_state()
    by_name = generate(gpt2, rows, 6, method="top_k", top_k=3, seed=4)
    assert np.random.get_state()[1].tolist() == state[1].tolist()  # numpy's global random state is not read
    generate(gpt2, rows, 6, method="sample")  # no seed: fresh entropy, still not numpy's global state
    assert np.random.get_state()[1].tolist() == state[1].tolist()
    np.testing.assert_array_equal(generate(gpt2, rows, 6, method=samplers.TopK(3), seed=4), by_name)
    np.testing.assert_array_equal(generate(gpt2, rows, 6, method="sample", top_k=3, seed=4), by_name)
    np.testing.assert_array_equal(generate(gpt2, rows, 6, method=samplers.Greedy()), generate(gpt2, rows, 6))
    np.testing.assert_array_equal(generate(gpt2, rows, 6, method=samplers.BeamSearch(3, 0.5)),
                                  generate(gpt2, rows, 6, method="beam", num_beams=3, length_penalty=0.5))
    with pytest.raises(ValueError, match="unknown method 'nucleus'"):
        generate(gpt2, rows, 6, method="nucleus")

    class Lowest(samplers.Sampler):
        def __call__(self, scores, seed, step):
            return keras.ops.cast(keras.ops.argmin(scores, axis=-1), "int32")

    samplers.register_sampler("lowest", Lowest)
    lowest = generate(gpt2, [rows[0]], 3, method="lowest")[0]
    assert lowest[0] == int(np.argmin(keras.ops.convert_to_numpy(gpt2(np.array([rows[0]], "int32")))[0, -1]))


def test_t5_adapter_does_not_keep_its_model_alive():
    from bert4k.models.t5 import T5

    cfg = TransformerConfig(vocab_size=23, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=24, key_size=8, relative_attention_num_buckets=8,
                            hidden_dropout_prob=0.0, feed_forward_proj="relu", pad_token_id=0)
    model = T5(cfg)
    generate(model, [[4, 5, 6]], 3)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


@pytest.mark.parametrize("application", ["lm", "unilm"])
def test_linear_attention_generate_equals_uncached_forward(application):
    """Running states `(S, Z)` per block: the same tokens as the full linear-attention forward rerun each step,
    and a decoding state whose size does not depend on the number of new tokens."""
    model = random_weights(Transformer(BERT, application=application, attention="linear"), seed=2)
    rows = prompts(12, lengths=(5, 3))
    out = generate(model, rows, 9)
    for prompt, tokens in zip(rows, out):
        target = 1 if application == "unilm" else 0
        np.testing.assert_array_equal(tokens, uncached_greedy(model, prompt, 9, [0] * len(prompt), target))
    np.testing.assert_array_equal(generate(model, rows, 9, streamer=lambda ids: None), out)
    adapter = adapter_for(model)
    sizes = [sum(int(np.prod(t.shape)) for t in keras.tree.flatten(adapter.start(rows, n)[1])) for n in (4, 40)]
    heads, size = BERT.num_attention_heads, BERT.hidden_size // BERT.num_attention_heads
    states = sum(int(np.prod(t.shape)) for t in initial_state(2, heads, size, size)) * BERT.num_hidden_layers
    assert sizes[0] == sizes[1] == states + 2  # the states and each row's next position


def test_direct_calls_skip_layer_call_on_this_thread_only_and_restore_classes(bert_unilm, monkeypatch):
    """`direct_calls` (PyTorch's decoding steps): inside it the model's float32 layers run `call` directly on this
    thread, with outputs equal to those through `Layer.__call__`; another thread still goes through
    `Layer.__call__`; a mixed-precision or unbuilt layer keeps it; every class is restored on exit, also after an
    error."""
    import threading

    from bert4k.generation.direct_calls import _can_call_directly, direct_calls

    counted = []
    layer_call = keras.Layer.__call__

    def counting(self, *args, **kwargs):
        counted.append(self.name)
        return layer_call(self, *args, **kwargs)

    monkeypatch.setattr(keras.Layer, "__call__", counting)
    model = bert_unilm
    inputs = [np.array([[5, 6, 7, 8]], "int32"), np.array([[0, 0, 1, 1]], "int32")]
    classes = {id(layer): type(layer) for layer in model._flatten_layers()}
    expected = keras.ops.convert_to_numpy(model(inputs, training=False))
    through_keras = len(counted)
    other = {}
    with direct_calls(model):
        assert type(model.blocks[0]) is not classes[id(model.blocks[0])]
        del counted[:]
        inside = keras.ops.convert_to_numpy(model(inputs, training=False))
        assert len(counted) < through_keras / 4, counted  # the model itself (and its input layers) only
        thread = threading.Thread(target=lambda: other.update(
            out=keras.ops.convert_to_numpy(model.blocks[0](keras.ops.ones((1, 3, 32)))), calls=len(counted)))
        del counted[:]
        thread.start()
        thread.join()
        assert other["calls"] >= 5  # the block, its attention, Dense layers, norms: all through Layer.__call__
    np.testing.assert_array_equal(inside, expected)
    assert {id(layer): type(layer) for layer in model._flatten_layers()} == classes
    with pytest.raises(RuntimeError), direct_calls(model):
        raise RuntimeError("inside")
    assert {id(layer): type(layer) for layer in model._flatten_layers()} == classes
    assert not any("_bert4k_direct_thread" in layer.__dict__ for layer in model._flatten_layers())
    mixed = keras.layers.Dense(4, dtype="mixed_bfloat16")
    mixed.build((None, 3))
    assert not _can_call_directly(mixed) and not _can_call_directly(keras.layers.Dense(4))
