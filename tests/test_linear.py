"""`Linear` (Dense fused into one `addmm` on PyTorch) against numpy `x·W + b` on the suite's backend."""
import keras
import numpy as np

from bert4k.layers.linear import Linear


def test_linear_equals_numpy_affine_map_on_3d_inputs():
    x = np.random.default_rng(0).normal(size=(2, 5, 6)).astype("float32")
    layer = Linear(4, activation="relu")
    layer.build(x.shape)
    kernel = np.random.default_rng(1).normal(size=(6, 4)).astype("float32")
    bias = np.random.default_rng(2).normal(size=(4,)).astype("float32")
    layer.set_weights([kernel, bias])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), np.maximum(x @ kernel + bias, 0), atol=1e-5)


def test_linear_round_trips_its_config():
    layer = Linear(3, use_bias=False, name="query")
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(clone) is Linear and clone.units == 3 and clone.use_bias is False
