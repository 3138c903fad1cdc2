"""The base of bert4k's functional `keras.Model` subclasses (layers built before `super().__init__`)."""
from __future__ import annotations

import keras


class FunctionalModel(keras.Model):
    """A functional model whose `__init__` creates its layers as attributes before calling `super().__init__`.

    On the PyTorch backend a Keras layer is a `torch.nn.Module`, which refuses attribute assignment before
    `Module.__init__` ran. Those early attributes are plain references: the functional graph tracks the layers and
    their weights, and `.keras` saving finds them by attribute name as on the other backends.
    """

    def __setattr__(self, name, value):
        if keras.backend.backend() == "torch" and "_modules" not in self.__dict__:
            object.__setattr__(self, name, value)
            return
        super().__setattr__(name, value)
