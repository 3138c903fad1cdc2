"""bert4keras' per-sub-layer layers (`get_layer(name)`, `model.layers[i]`) and its layer-by-layer building API
(`prefix=`, `apply_embeddings`, `apply_main_layers`: BERT-of-Theseus) on bert4k models, against HF transformers
(forward hooks on the same weights) and numpy."""
import keras
import numpy as np
import pytest
import torch
import transformers

from tests.oracles.hf import max_diff, randomize

IDS = np.array([[2, 7, 9, 4, 3, 0], [2, 5, 3, 0, 0, 0]])
REAL = IDS != 0
# bert4keras 0.11.5's `model.layers` names for a 2-layer BERT (dropout > 0), as tf.keras lists them.
BERT4KERAS_BERT_LAYERS = ["Input-Token", "Input-Segment", "Embedding-Token", "Embedding-Segment",
                          "Embedding-Token-Segment", "Embedding-Position", "Embedding-Norm", "Embedding-Dropout"] + [
    f"Transformer-{i}-{s}" for i in range(2) for s in (
        "MultiHeadSelfAttention", "MultiHeadSelfAttention-Dropout", "MultiHeadSelfAttention-Add",
        "MultiHeadSelfAttention-Norm", "FeedForward", "FeedForward-Dropout", "FeedForward-Add", "FeedForward-Norm")]


def hf_bert(folder, layers: int, seed: int = 5):
    reference = transformers.BertModel(transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=32))
    randomize(reference, seed=seed, scale=0.1)
    reference.eval()
    reference.save_pretrained(folder, safe_serialization=True)
    return reference


def hooked_run(reference, hooks: dict):
    """Run `reference` on IDS, returning {key: tensor} taken by forward hooks: `("in", module)` the module's input,
    `("out", module)` its output."""
    got, handles = {}, []
    for key, (where, module) in hooks.items():
        if where == "in":
            handles.append(module.register_forward_pre_hook(lambda m, inp, key=key: got.__setitem__(key, inp[0])))
        else:
            handles.append(module.register_forward_hook(lambda m, inp, out, key=key: got.__setitem__(key, out)))
    with torch.no_grad():
        reference(torch.tensor(IDS), attention_mask=torch.tensor(REAL).long())
    for handle in handles:
        handle.remove()
    return {key: value.numpy() for key, value in got.items()}


class MaskAsValues(keras.layers.Layer):
    def call(self, x, mask=None):
        return keras.ops.cast(mask, "float32")


@pytest.fixture(scope="module")
def bert2(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert2")
    return folder, hf_bert(folder, layers=2)


def test_layers_follow_bert4keras_order_and_views_are_hf_tensors(bert2):
    """`model.layers[i]` / `get_layer(name)` are bert4keras' layers: the residual sums before each LayerNorm, the
    attention and feed-forward outputs, the embedding sums, each HF's tensor and carrying the padding mask."""
    from bert4k.models import build_transformer_model

    folder, reference = bert2
    model = build_transformer_model(folder / "config.json", folder / "model.safetensors")
    assert [layer.name for layer in model.layers[:]] == BERT4KERAS_BERT_LAYERS
    assert len(model.layers) == len(list(model.layers))  # iteration stays Keras' real layers
    checks = {  # bert4keras name → HF hook
        "Embedding-Position": ("in", reference.embeddings.LayerNorm),
        "Transformer-0-MultiHeadSelfAttention": ("out", reference.encoder.layer[0].attention.output.dense),
        "Transformer-0-MultiHeadSelfAttention-Add": ("in", reference.encoder.layer[0].attention.output.LayerNorm),
        "Transformer-0-MultiHeadSelfAttention-Norm": ("out", reference.encoder.layer[0].attention.output.LayerNorm),
        "Transformer-1-FeedForward": ("out", reference.encoder.layer[1].output.dense),
        "Transformer-1-FeedForward-Add": ("in", reference.encoder.layer[1].output.LayerNorm),
        "Transformer-1-FeedForward-Norm": ("out", reference.encoder.layer[1].output.LayerNorm),
    }
    expected = hooked_run(reference, checks)
    tensors = [model.get_layer(name).output for name in checks]
    tensors += [model.layers[-2].get_output_at(-1), model.layers[-1].output, MaskAsValues()(model.layers[-2].output)]
    values = keras.Model(model.inputs, tensors).predict([IDS, np.zeros_like(IDS)], verbose=0)
    for name, value in zip(checks, values):
        assert max_diff(value[REAL], expected[name][REAL]) < 1e-4, name
    assert max_diff(values[-3][REAL], expected["Transformer-1-FeedForward-Add"][REAL]) < 1e-4
    assert max_diff(values[-2][REAL], expected["Transformer-1-FeedForward-Norm"][REAL]) < 1e-4
    np.testing.assert_array_equal(values[-1], REAL.astype("float32"))
    position = model.get_layer("Embedding-Position")  # a view: bert4k's own layer holds the table
    assert position.embeddings is model.position_embedding.embeddings
    # with both heads tf.keras interleaves them by depth (bert4keras 0.11.5's listing)
    heads = build_transformer_model(folder / "config.json", with_pool=True, with_mlm=True)
    assert [layer.name for layer in heads.layers[-6:]] == ["MLM-Dense", "MLM-Norm", "Pooler", "MLM-Bias",
                                                           "Pooler-Dense", "MLM-Activation"]
    assert heads.layers[-1] is heads.get_layer("MLM-Activation")  # bert4k's own layer where its output is the same


def test_relation_extraction_pattern_replaces_the_last_layer_norm(bert2):
    """bert4keras' relation-extraction example: `bert.model.layers[-2].get_output_at(-1)` is the last block's sum
    before its LayerNorm, which the script's conditional LayerNorm replaces: with its condition weights at zero
    the object branch is exactly one LayerNorm (γ=1, β=0, numpy) of HF's pre-LayerNorm sum, not two."""
    from keras.layers import Input, Lambda
    from keras.models import Model

    from bert4k.backend import K, batch_gather
    from bert4k.layers import LayerNormalization
    from bert4k.models import build_transformer_model

    folder, reference = bert2
    bert = build_transformer_model(config_path=str(folder / "config.json"),
                                   checkpoint_path=str(folder / "model.safetensors"), return_keras_model=False)
    subject_ids = Input(shape=(2,), name="Subject-Ids")

    def extract_subject(inputs):
        output, subject_ids = inputs
        start = batch_gather(output, subject_ids[:, :1])
        end = batch_gather(output, subject_ids[:, 1:])
        return K.concatenate([start, end], 2)[:, 0]

    output = bert.model.layers[-2].get_output_at(-1)
    subject = Lambda(extract_subject)([output, subject_ids])
    output = LayerNormalization(conditional=True)([output, subject])
    object_model = Model(bert.model.inputs + [subject_ids], output)
    got = object_model.predict([IDS, np.zeros_like(IDS), np.array([[1, 2], [1, 1]])], verbose=0)
    pre_norm = hooked_run(reference, {"sum": ("in", reference.encoder.layer[-1].output.LayerNorm)})["sum"]
    mean = pre_norm.mean(-1, keepdims=True)
    expected = (pre_norm - mean) / np.sqrt(((pre_norm - mean) ** 2).mean(-1, keepdims=True) + 1e-12)
    assert max_diff(got[REAL], expected[REAL]) < 1e-4


def test_shared_block_views_and_refusals(tmp_path):
    """ALBERT's shared block: `get_layer('Transformer-FeedForward-Add').get_output_at(i)` is the i-th call's sum
    (HF's i-th input to the shared full-layer LayerNorm); names that are no bert4keras layer of the model, and
    bert4keras layers bert4k has no tensor for, raise naming them."""
    from bert4k.models import build_transformer_model

    common = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                  max_position_embeddings=32)
    reference = transformers.AlbertModel(transformers.AlbertConfig(embedding_size=8, **common))
    randomize(reference, seed=2, scale=0.1)
    reference.eval()
    reference.save_pretrained(tmp_path, safe_serialization=True)
    model = build_transformer_model(tmp_path / "config.json", tmp_path / "model.safetensors", model="albert")
    calls = []
    norm = reference.encoder.albert_layer_groups[0].albert_layers[0].full_layer_layer_norm
    handle = norm.register_forward_pre_hook(lambda m, inp: calls.append(inp[0].numpy()))
    with torch.no_grad():
        reference(torch.tensor(IDS), attention_mask=torch.tensor(REAL).long())
    handle.remove()
    view = model.get_layer("Transformer-FeedForward-Add")
    got = keras.Model(model.inputs, view.get_output_at(1)).predict([IDS, np.zeros_like(IDS)], verbose=0)
    assert max_diff(got[REAL], calls[1][REAL]) < 1e-4
    # HF ALBERT's dropout is 0: bert4keras then builds no Dropout layers
    assert [layer.name for layer in model.layers[6:10]] == ["Embedding-Norm", "Embedding-Mapping",
                                                            "Transformer-MultiHeadSelfAttention",
                                                            "Transformer-MultiHeadSelfAttention-Add"]
    with pytest.raises(ValueError, match=r"called 2 times \(a shared block\)"):
        _ = view.output
    with pytest.raises(ValueError, match=r"Transformer-3-FeedForward-Add.*'Transformer-<sub-layer>' \(ALBERT"):
        model.get_layer("Transformer-3-FeedForward-Add")
    gpt = build_transformer_model(dict(vocab_size=50, n_embd=16, n_layer=2, n_head=2, n_positions=32), model="gpt2")
    with pytest.raises(IndexError, match=r"layers\[-2\]: bert4keras' layer order is not reproduced for a pre-LN"):
        _ = gpt.layers[-2]
    unilm = build_transformer_model(dict(common, type_vocab_size=2), application="unilm")
    with pytest.raises(ValueError, match=r"Attention-UniLM-Mask: bert4keras' additive attention bias"):
        _ = unilm.get_layer("Attention-UniLM-Mask").output


def test_gpt2_views_by_bert4keras_names(tmp_path):
    """bert4keras' GPT-2 names: `Transformer-1-FeedForward-Norm` is the pre-LN norm in front of the feed-forward
    (HF `ln_2`'s output), `Transformer-1-MultiHeadSelfAttention-Add` the attention's residual sum (`ln_2`'s input)."""
    from bert4k.models import build_transformer_model

    reference = transformers.GPT2Model(transformers.GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2,
                                                               n_positions=32))
    randomize(reference, seed=4, scale=0.1)
    reference.eval()
    reference.save_pretrained(tmp_path, safe_serialization=True)
    model = build_transformer_model(tmp_path / "config.json", tmp_path / "model.safetensors", model="gpt2")
    ids = np.array([[5, 7, 9, 4, 3, 8]])
    got = {}
    ln_2 = reference.h[1].ln_2
    handles = [ln_2.register_forward_pre_hook(lambda m, inp: got.__setitem__("add", inp[0].numpy())),
               ln_2.register_forward_hook(lambda m, inp, out: got.__setitem__("norm", out.numpy()))]
    with torch.no_grad():
        reference(torch.tensor(ids))
    for handle in handles:
        handle.remove()
    names = ["Transformer-1-MultiHeadSelfAttention-Add", "Transformer-1-FeedForward-Norm"]
    add, norm = keras.Model(model.inputs, [model.get_layer(n).output for n in names]).predict(ids, verbose=0)
    assert max_diff(add, got["add"]) < 1e-4 and max_diff(norm, got["norm"]) < 1e-4


class ForcedChoice(keras.layers.Layer):
    """The theseus example's `BinaryRandomChoice` with the choice forced to the predecessor (`source`)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def compute_mask(self, inputs, mask=None):
        if mask is not None:
            return mask[1]

    def call(self, inputs):
        return inputs[0]


def test_bert_of_theseus_pattern(tmp_path):
    """bert4keras' BERT-of-Theseus: a 4-layer predecessor and a 2-layer successor (`num_hidden_layers=2` loads the
    checkpoint's first 2 layers: HF's 4-layer model cut to 2) in one Keras model (`prefix=`); with the choice forced
    to the predecessor the theseus model is the predecessor model; the re-applied layers share its variables; fit
    runs."""
    from keras.layers import Dense, Input, Lambda
    from keras.models import Model

    from bert4k.backend import K
    from bert4k.models import build_transformer_model

    reference = hf_bert(tmp_path, layers=4)
    config, checkpoint = str(tmp_path / "config.json"), str(tmp_path / "model.safetensors")
    predecessor = build_transformer_model(config, checkpoint, return_keras_model=False, prefix="Predecessor-")
    successor = build_transformer_model(config, checkpoint, return_keras_model=False, num_hidden_layers=2,
                                        prefix="Successor-")
    assert (predecessor.num_hidden_layers, successor.num_hidden_layers) == (4, 2)
    assert all(layer.name.startswith("Successor-") for layer in successor.model.layers)
    assert successor.model.get_layer("Successor-Transformer-1-FeedForward-Add").name == (
        "Successor-Transformer-1-FeedForward-Add")

    x_in = Input(shape=K.int_shape(predecessor.output)[1:])
    classifier = Model(x_in, Dense(units=3, activation="softmax")(Lambda(lambda x: x[:, 0])(x_in)))
    inputs = predecessor.inputs
    for layer in predecessor.model.layers:
        layer.trainable = False
    outputs = ForcedChoice()([predecessor.apply_embeddings(inputs), successor.apply_embeddings(inputs)])
    for index in range(successor.num_hidden_layers):
        predecessor_outputs = outputs
        for sub_index in range(2):
            predecessor_outputs = predecessor.apply_main_layers(predecessor_outputs, 2 * index + sub_index)
        outputs = ForcedChoice()([predecessor_outputs, successor.apply_main_layers(outputs, index)])
    theseus = Model(inputs, classifier(outputs))
    predecessor_model = Model(predecessor.inputs, classifier(predecessor.output))
    x = [IDS, np.zeros_like(IDS)]
    assert max_diff(theseus.predict(x, verbose=0), predecessor_model.predict(x, verbose=0)) < 1e-5
    theseus_ids = {id(v) for v in theseus.weights}
    assert {id(v) for v in predecessor.model.weights} <= theseus_ids
    assert {id(v) for v in successor.model.weights} <= theseus_ids

    reference.encoder.layer = reference.encoder.layer[:2]
    with torch.no_grad():
        cut = reference(torch.tensor(IDS), attention_mask=torch.tensor(REAL).long()).last_hidden_state.numpy()
    assert max_diff(successor.model.predict(x, verbose=0)[REAL], cut[REAL]) < 1e-4

    theseus.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    frozen = [v.numpy().copy() for v in predecessor.model.weights]
    history = theseus.fit(x, np.array([[1], [2]]), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(frozen, predecessor.model.weights))


def test_layer_by_layer_api_refuses_what_it_cannot_reproduce(bert2):
    from bert4k.models import build_transformer_model

    folder, _ = bert2
    handle = build_transformer_model(folder / "config.json", application="unilm", return_keras_model=False)
    with pytest.raises(NotImplementedError, match=r"apply_main_layers: .* application='unilm'"):
        handle.apply_main_layers(handle.model.output, 0)
    with pytest.raises(NotImplementedError, match=r"apply_final_layers: .* apply_embeddings and apply_main_layers"):
        _ = handle.apply_final_layers
