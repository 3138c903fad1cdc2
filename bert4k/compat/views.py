"""bert4keras' layers on bert4k models: views whose `.output` / `.get_output_at(i)` are bert4keras' exact tensors.

bert4keras builds every sub-layer of a Transformer block as a Keras layer (`Transformer-3-FeedForward-Add`, ...);
bert4k builds each block as one layer. On models built through the compatibility `build_transformer_model` each
block's node also outputs the tensors inside it (`block_intermediates=True`, from the same forward pass), so:

- `model.get_layer(bert4keras_name)` returns a `LayerView` of that tensor (or the bert4k layer itself when its output
  is bert4keras' tensor), with the padding as its Keras mask, as bert4keras' masks flowed through every layer;
- `model.layers[i]` (an integer index or a slice) follows bert4keras' layer order for post-LN models (BERT, RoBERTa,
  ALBERT); iterating `model.layers` and `len` give bert4k's real layers (what Keras trains, freezes and saves).

A bert4keras layer with no exact bert4k tensor raises, naming it and what bert4k has instead.
"""
from __future__ import annotations

import re
from collections.abc import Callable

import keras

from bert4k.layers.block import INTERMEDIATES
from bert4k.layers.structural import OutputMask, PaddingMask

# bert4keras' sub-layer names inside block i → the position in the block node's outputs ([output, *INTERMEDIATES]),
# by norm position, in bert4keras' layer order.
_SLOT = {name: 1 + i for i, name in enumerate(INTERMEDIATES)}
_SUBLAYERS = {
    "post": {"MultiHeadSelfAttention": _SLOT["attention"], "MultiHeadSelfAttention-Dropout": _SLOT["attention_dropout"],
             "MultiHeadSelfAttention-Add": _SLOT["attention_residual"],
             "MultiHeadSelfAttention-Norm": _SLOT["attention_norm"], "FeedForward": _SLOT["feed_forward"],
             "FeedForward-Dropout": _SLOT["feed_forward_dropout"], "FeedForward-Add": _SLOT["feed_forward_residual"],
             "FeedForward-Norm": 0},
    "pre": {"MultiHeadSelfAttention-Norm": _SLOT["attention_norm"], "MultiHeadSelfAttention": _SLOT["attention"],
            "MultiHeadSelfAttention-Dropout": _SLOT["attention_dropout"],
            "MultiHeadSelfAttention-Add": _SLOT["attention_residual"], "FeedForward-Norm": _SLOT["feed_forward_norm"],
            "FeedForward": _SLOT["feed_forward"], "FeedForward-Dropout": _SLOT["feed_forward_dropout"],
            "FeedForward-Add": 0},
    "gpt2_ml": {"MultiHeadSelfAttention": _SLOT["attention"],
                "MultiHeadSelfAttention-Dropout": _SLOT["attention_dropout"],
                "MultiHeadSelfAttention-Add": _SLOT["attention_residual"], "FeedForward-Norm-0": _SLOT["attention_norm"],
                "FeedForward": _SLOT["feed_forward"], "FeedForward-Dropout": _SLOT["feed_forward_dropout"],
                "FeedForward-Add": _SLOT["feed_forward_residual"], "FeedForward-Norm-1": 0},
}
# The sub-layer of the bert4k block that holds each bert4keras layer's weights (None: an Add, which has none).
_OWNER = {"MultiHeadSelfAttention": "attention", "FeedForward": "feed_forward", "Dropout": "residual_dropout",
          "Add": None}
_NORM_OWNER = {("post", "MultiHeadSelfAttention-Norm"): "attention_norm", ("post", "FeedForward-Norm"): "ffn_norm",
               ("pre", "MultiHeadSelfAttention-Norm"): "attention_norm", ("pre", "FeedForward-Norm"): "ffn_norm",
               ("gpt2_ml", "FeedForward-Norm-0"): "attention_norm", ("gpt2_ml", "FeedForward-Norm-1"): "ffn_norm"}
_BLOCK_NAME = re.compile(r"Transformer(?:-(\d+))?-(MultiHeadSelfAttention|FeedForward)(-.+)?")
# bert4keras' attention-bias layers: an additive float bias, where bert4k builds a boolean mask ('Attention-Mask').
_BIAS_LAYERS = {"lm": "Attention-LM-Mask", "unilm": "Attention-UniLM-Mask"}


def keras_mask(tensor):
    """The Keras mask a symbolic tensor carries (None without one)."""
    return getattr(tensor, "_keras_mask", None)


class LayerView:
    """bert4keras' layer `name` on a bert4k model. `.output` / `.get_output_at(i)` are its exact tensor (of the i-th
    call) carrying the padding as its Keras mask; other attributes (weights, `trainable`, ...) are those of `layer`,
    the bert4k layer that holds its weights (an `Add` has none)."""

    def __init__(self, name: str, tensor_at: Callable[[int], object], calls: Callable[[], int],
                 mask_at: Callable[[int], object], layer: keras.layers.Layer | None = None, refusal: str | None = None):
        self.__dict__.update(name=name, layer=layer, _tensor_at=tensor_at, _calls=calls, _mask_at=mask_at,
                             _refusal=refusal, _outputs={})

    def get_output_at(self, node_index: int):
        if self._refusal:
            raise ValueError(f"{self.name}: {self._refusal}")
        calls = self._calls()
        if not -calls <= node_index < calls:
            raise ValueError(f"{self.name}: get_output_at({node_index}): the layer was called {calls} time(s); node "
                             f"indices run from {-calls} to {calls - 1}")
        index = node_index % calls
        if index not in self._outputs:
            tensor, mask = self._tensor_at(index), self._mask_at(index)
            self._outputs[index] = tensor if mask is None else OutputMask()([tensor, mask])
        return self._outputs[index]

    @property
    def output(self):
        calls = self._calls()
        if calls != 1 and not self._refusal:
            raise ValueError(f"{self.name}: the layer is called {calls} times (a shared block); use get_output_at(i) "
                             "for the i-th call's output")
        return self.get_output_at(0)

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        layer = self.__dict__["layer"]
        if layer is None:
            raise AttributeError(f"{self.name!r} (a view of a bert4k tensor) has no attribute {name!r}: bert4k has no "
                                 "layer for it, only its output")
        return getattr(layer, name)

    def __setattr__(self, name: str, value):
        if self.__dict__["layer"] is None:
            raise AttributeError(f"{self.name!r} (a view of a bert4k tensor) holds no layer to set {name!r} on")
        setattr(self.__dict__["layer"], name, value)

    def __repr__(self):
        return f"<bert4keras layer view {self.name!r} of {self.layer.name if self.layer is not None else 'a tensor'}>"


def _prefix(model) -> str:
    return getattr(model, "bert4keras_prefix", "")


def _padding_mask(model):
    """The model's own padding mask tensor (its `PaddingMask` layer's first call), or None."""
    layers = [layer for layer in model.layers if isinstance(layer, PaddingMask)]
    return layers[0]._inbound_nodes[0].output_tensors[0] if layers else None


def _node_mask(model, layer, index: int):
    """The mask for `layer`'s `index`-th call: the Keras mask its input carries (a graph built with
    `apply_main_layers`), else the model's padding."""
    inputs = layer._inbound_nodes[index].input_tensors
    mask = keras_mask(inputs[0]) if inputs else None
    return mask if mask is not None else _padding_mask(model)


def _consumer(model, tensor):
    """The output of the one operation in `model`'s graph that adds `tensor` to another (bert4k's embedding sums)."""
    found = [node.output_tensors[0] for nodes in model._nodes_by_depth.values() for node in nodes
             if any(t is tensor for t in node.input_tensors) and type(node.operation).__name__ == "Add"]
    if len(found) != 1:
        raise RuntimeError(f"bert4k compat: expected one sum of {tensor.name} in the embeddings, found {len(found)}")
    return found[0]


def _block_view(model, name: str, match: re.Match) -> LayerView:
    cfg = model.config
    index, suffix = match.group(1), match.group(2) + (match.group(3) or "")
    shared = cfg.shared_layers
    table = _SUBLAYERS.get(cfg.norm_position, {})
    block_name = "Transformer" if index is None else f"Transformer-{index}"
    if (index is None) != shared or suffix not in table:
        expected = "'Transformer-<sub-layer>' (ALBERT's shared block)" if shared else "'Transformer-<i>-<sub-layer>'"
        raise ValueError(f"get_layer({name!r}): no such bert4keras layer in this {cfg.norm_position}-LN model: names "
                         f"are {expected} with sub-layers {list(table)}")
    if index is not None and int(index) >= len(model.blocks):
        raise ValueError(f"get_layer({name!r}): the model has {len(model.blocks)} blocks (0 to "
                         f"{len(model.blocks) - 1})")
    block = model.blocks[0 if index is None else int(index)]
    if not getattr(model, "block_intermediates", False):
        raise ValueError(f"get_layer({name!r}): bert4k builds each Transformer block as one layer ({block_name!r}); "
                         "its inner tensors are exposed only on models built by bert4k.models.build_transformer_model "
                         "(the bert4keras one) without recompute=True; the block's output is "
                         f"model.get_layer({block_name!r}).output")
    owner = _NORM_OWNER.get((cfg.norm_position, suffix)) or _OWNER[suffix.rsplit("-", 1)[-1]]
    slot = table[suffix]

    def tensor_at(i):
        outputs = block._inbound_nodes[i].output_tensors
        return outputs[slot] if len(outputs) > 1 else (outputs[0] if slot == 0 else _no_intermediates(name, block))

    return LayerView(_prefix(model) + name, tensor_at, lambda: len(block._inbound_nodes),
                     lambda i: _node_mask(model, block, i), getattr(block, owner) if owner else None)


def _no_intermediates(name, block):
    raise ValueError(f"{name}: this call of {block.name!r} was made without intermediates=True, so the tensors inside "
                     "it are not in the graph")


def _single(model, name: str, tensor_fn: Callable[[], object], layer=None, refusal=None) -> LayerView:
    return LayerView(_prefix(model) + name, lambda i: tensor_fn(), lambda: 1, lambda i: _padding_mask(model), layer,
                     refusal)


def _first_output(layer):
    return layer._inbound_nodes[0].output_tensors[0]


def _special_view(model, name: str) -> LayerView | None:
    """Views of bert4keras layers outside the blocks whose bert4k counterpart's output differs (or is no layer)."""
    if name == "Embedding-Position":  # bert4keras: the sum with the position embeddings; bert4k: the positions alone
        return _single(model, name, lambda: _consumer(model, _first_output(model.position_embedding)),
                       model.position_embedding)
    if name == "Embedding-Token-Segment" and model.segment_embedding is not None:
        return _single(model, name, lambda: _consumer(model, _first_output(model.segment_embedding)))
    if name == "Pooler" and model.pooler is not None:
        return _single(model, name, lambda: model.pooler._inbound_nodes[0].input_tensors[0])
    if name == _BIAS_LAYERS.get(model.application):
        return _single(model, name, None, refusal="bert4keras' additive attention bias [batch, 1, n, n] has no bert4k "
                       "tensor: bert4k builds a boolean mask (layer 'Attention-Mask')")
    return None


def get_view(model, name: str):
    """bert4keras' layer `name` (prefix included) on `model`: a `LayerView`, or None when `name` is no bert4keras
    layer that needs one (the caller then looks it up as a bert4k layer)."""
    prefix = _prefix(model)
    if prefix and name.startswith(prefix):
        name = name[len(prefix):]
    views = model.__dict__.setdefault("_bert4k_views", {})
    if name not in views:
        match = _BLOCK_NAME.fullmatch(name)
        views[name] = _block_view(model, name, match) if match else _special_view(model, name)
    return views[name]


def _layer_order(model) -> list[str]:
    """bert4keras' `model.layers` names for a post-LN model (checked against bert4keras 0.11.5 on tf.keras)."""
    cfg = model.config
    dropout = cfg.hidden_dropout_prob > 0
    names = ["Input-Token"] + (["Input-Segment"] if model.use_segments else []) + ["Embedding-Token"]
    if model.segment_embedding is not None:
        names += ["Embedding-Segment", "Embedding-Token-Segment"]
    names += ["Embedding-Position", "Embedding-Norm"] + (["Embedding-Dropout"] if dropout else [])
    names += ["Embedding-Mapping"] if model.embedding_mapping is not None else []
    names += [_BIAS_LAYERS[model.application]] if model.application in _BIAS_LAYERS else []
    blocks = ["Transformer"] if cfg.shared_layers else [f"Transformer-{i}" for i in range(len(model.blocks))]
    for block in blocks:
        names += [f"{block}-{s}" for s in _SUBLAYERS["post"] if dropout or not s.endswith("-Dropout")]
    pool, mlm = model.pooler is not None, model.mlm_dense is not None
    if pool and mlm:
        names += ["MLM-Dense", "MLM-Norm", "Pooler", "MLM-Bias", "Pooler-Dense", "MLM-Activation"]
    elif pool:
        names += ["Pooler", "Pooler-Dense"]
    elif mlm:
        names += ["MLM-Dense", "MLM-Norm", "MLM-Bias", "MLM-Activation"]
    return names


def _order_refusal(model) -> str | None:
    if model.config.norm_position != "post":
        return f"a {model.config.norm_position}-LN model (bert4keras' order interleaves its attention-mask layer)"
    if model.condition_model is not None or model.layer_norm_cond is not None:
        return "a model with layer_norm_cond (bert4keras lists its condition layers too)"
    if model.application not in ("encoder", "mlm", "lm", "unilm") or model.padding_mask or model.attention_mask:
        return "this application / mask option"
    return None


class Bert4kerasLayers(list):
    """`model.layers` of a compatibility-built model: iterating it and `len` give bert4k's real layers; an integer
    index or a slice follows bert4keras' layer order, giving a bert4k layer whose output is bert4keras' tensor or a
    `LayerView` of it."""

    def __init__(self, layers, model):
        super().__init__(layers)
        self._model = model

    def _entry(self, name: str):
        view = get_view(self._model, name)
        if view is not None:
            return view
        prefixed = _prefix(self._model) + name
        for layer in self:
            if layer.name == prefixed:
                return layer
        raise RuntimeError(f"bert4k compat: bert4keras layer {name!r} has no bert4k layer or view")

    def __getitem__(self, index):
        if not isinstance(index, (int, slice)):
            return super().__getitem__(index)
        refusal = _order_refusal(self._model)
        if refusal:
            raise IndexError(f"model.layers[{index}]: bert4keras' layer order is not reproduced for {refusal}; take "
                             "layers by name: model.get_layer('Transformer-%d-FeedForward-Add' % i) etc.")
        names = _layer_order(self._model)
        if isinstance(index, slice):
            return [self._entry(name) for name in names[index]]
        if not -len(names) <= index < len(names):
            raise IndexError(f"model.layers[{index}]: bert4keras' model has {len(names)} layers")
        return self._entry(names[index])


__all__ = ["Bert4kerasLayers", "LayerView", "get_view", "keras_mask"]
