"""bert4keras' `snippets` module name (migration entry point): see `bert4k.compat.snippets`."""
from bert4k.compat.snippets import *
from bert4k.compat.snippets import __all__  # noqa: F401
