"""The bert4keras compatibility layer lives in bert4k/compat and native modules never import it."""
import ast
import subprocess
import sys
from pathlib import Path

import bert4k

PACKAGE = Path(bert4k.__file__).parent
COMPAT_MODULES = ("bert4k.compat", "bert4k.snippets", "bert4k.backend", "bert4k.optimizers")
# bert4keras names that package __init__s resolve to the compatibility layer.
COMPAT_NAMES = ("bert4k.models.build_transformer_model", "bert4k.layers.Loss", "bert4k.layers.LayerNormalization")
# The bert4keras module names: thin re-exports of bert4k.compat.
SHIMS = {"snippets.py", "backend.py", "optimizers.py"}
# Package __init__s that resolve bert4keras names lazily, inside a module-level __getattr__.
LAZY = {"layers/__init__.py", "models/__init__.py"}


def native_files():
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if not relative.startswith("compat/") and relative not in SHIMS:
            yield relative, path


def compat_imports(tree: ast.AST, allow_in_getattr: bool):
    """(line, module) of every import of the compatibility layer, except inside a module-level __getattr__."""
    allowed = set()
    if allow_in_getattr:
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name == "__getattr__":
                allowed.update(id(n) for n in ast.walk(node))
    for node in ast.walk(tree):
        if id(node) in allowed:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith(COMPAT_MODULES) or name in COMPAT_NAMES:
                yield node.lineno, name


def test_native_modules_never_import_the_compatibility_layer():
    found = [(relative, line, name) for relative, path in native_files()
             for line, name in compat_imports(ast.parse(path.read_text(encoding="utf-8")), relative in LAZY)]
    assert found == []


def test_the_scan_finds_a_compat_import():
    tree = ast.parse("import os\nfrom bert4k.snippets import DataGenerator\ndef f():\n    import bert4k.compat.models\n"
                     "    from bert4k.models import Transformer, build_transformer_model\n")
    assert [name for _, name in compat_imports(tree, False)] == [
        "bert4k.snippets", "bert4k.snippets.DataGenerator", "bert4k.compat.models",
        "bert4k.models.build_transformer_model"]
    lazy = ast.parse("def __getattr__(name):\n    from bert4k.compat import layers\n")
    assert list(compat_imports(lazy, True)) == []


def test_importing_every_native_module_loads_no_compat_module():
    modules = ["bert4k." + relative[:-3].replace("/", ".").removesuffix(".__init__") for relative, _ in
               native_files() if relative != "__init__.py"]
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            f"print(sorted(m for m in sys.modules if m.startswith({COMPAT_MODULES!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3",
                              "PYTHONPATH": str(PACKAGE.parent)})
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_bert4keras_names_resolve_to_the_compatibility_layer():
    import bert4k.compat.layers
    import bert4k.compat.models
    from bert4k import backend, optimizers, snippets
    from bert4k.layers import LayerNormalization, Loss
    from bert4k.models import build_transformer_model

    assert Loss is bert4k.compat.layers.Loss and LayerNormalization is bert4k.compat.layers.LayerNormalization
    assert build_transformer_model is bert4k.compat.models.build_transformer_model
    assert snippets.DataGenerator.__module__ == "bert4k.compat.snippets"
    assert backend.K.__class__.__module__ == "bert4k.compat.backend"
    assert optimizers.Adam.__module__ == "bert4k.compat.optimizers"
