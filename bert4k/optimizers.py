"""bert4keras' `optimizers` module name (migration entry point): see `bert4k.compat.optimizers`."""
from bert4k.compat.optimizers import *
from bert4k.compat.optimizers import __all__  # noqa: F401
