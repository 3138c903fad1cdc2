"""The bert4keras compatibility layer, in one place.

Each module mirrors a bert4keras module and is re-exported under its name: `bert4k.snippets`, `bert4k.backend`,
`bert4k.optimizers`, `bert4k.layers.{Loss, LayerNormalization}` and `bert4k.models.build_transformer_model`.
It builds on the native API; native modules never import it (tests/test_migration_layout.py checks).
"""

from bert4k.compat import layers as _layers  # noqa: F401 - bert4keras keyword spellings on native layers
