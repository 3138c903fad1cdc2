"""A fresh initializer instance per weight.

Keras 3 fixes an unseeded initializer's seed when the instance is made, so one instance shared by the
Q and K kernels gives them identical values. Every weight here asks for its own instance.
"""
import keras


def truncated_normal(stddev: float = 0.02) -> keras.initializers.Initializer:
    return keras.initializers.TruncatedNormal(stddev=stddev)
