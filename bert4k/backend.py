"""bert4keras' `backend` module name (migration entry point): see `bert4k.compat.backend`."""
from bert4k.compat.backend import *
from bert4k.compat.backend import __all__  # noqa: F401
