"""The base of bert4k's functional `keras.Model` subclasses (layers built before `super().__init__`)."""
from __future__ import annotations

import keras

from bert4k.models.input_checks import Limit, check_inputs


class FunctionalModel(keras.Model):
    """A functional model whose `__init__` creates its layers as attributes before calling `super().__init__`.

    On the PyTorch backend a Keras layer is a `torch.nn.Module`, which refuses attribute assignment before
    `Module.__init__` ran. Those early attributes are plain references: the functional graph tracks the layers and
    their weights, and `.keras` saving finds them by attribute name as on the other backends.

    Concrete inputs of `model(x)` and `model.predict(x)` are checked against `input_limits()` first (ids in range,
    lengths within the position table), so bad ids fail with a message instead of wrapping or a raw gather error.
    """

    def input_limits(self) -> dict[str, Limit]:
        """`{input name: Limit}` of the integer inputs to check."""
        return {}

    def __call__(self, *args, **kwargs):
        if args:
            check_inputs(self, args[0], self.input_limits())
        return super().__call__(*args, **kwargs)

    def predict(self, x, *args, **kwargs):
        check_inputs(self, x, self.input_limits())
        return super().predict(x, *args, **kwargs)

    def __setattr__(self, name, value):
        if keras.backend.backend() == "torch" and "_modules" not in self.__dict__:
            object.__setattr__(self, name, value)
            return
        super().__setattr__(name, value)
