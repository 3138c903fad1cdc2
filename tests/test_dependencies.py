"""Every runtime import of bert4k is declared in setup.py's `install_requires` (or is an optional, lazily imported
backend/reader), and a plain install (install_requires only) loads the bundled checkpoint."""
import ast
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
# Imported only inside functions, for a feature that needs them: {import name: why}.
OPTIONAL = {"torch": "the PyTorch backend and reading .bin checkpoints", "jax": "the JAX backend"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def install_requires() -> list[str]:
    tree = ast.parse((REPO / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    value = next(k.value for k in call.keywords if k.arg == "install_requires")
    return [ast.literal_eval(e) for e in value.elts]


def imports() -> dict[str, dict[str, list[str]]]:
    """Third-party top-level import names of bert4k/ → {"module": [files], "function": [files]} by where they
    stand (module level, or inside a function/method)."""
    found: dict[str, dict[str, list[str]]] = {}
    for path in sorted((REPO / "bert4k").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            scope, parent = "module", parents.get(node)
            while parent is not None:
                if isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    scope = "function"
                    break
                parent = parents.get(parent)
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "bert4k":
                    found.setdefault(top, {}).setdefault(scope, []).append(str(path.relative_to(REPO)))
    return found


def test_every_runtime_import_is_declared():
    declared = {_norm(Requirement(r).name) for r in install_requires()}
    distributions = metadata.packages_distributions()
    undeclared = {}
    for module, where in imports().items():
        dists = {_norm(d) for d in distributions.get(module, [module])}
        if dists & declared:
            continue
        if module in OPTIONAL and "module" not in where:
            continue  # lazily imported for an optional feature
        undeclared[module] = where
    assert not undeclared, f"imports not in install_requires (setup.py): {undeclared}"
    assert "safetensors" in declared  # the readers/writers of every checkpoint need it


def _closure(requirements: list[str]) -> set[str]:
    """Installed distributions needed by `requirements`, transitively (markers evaluated, no extras)."""
    env, seen, todo = default_environment(), set(), [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
            continue
        name = _norm(req.name)
        if name in seen:
            continue
        seen.add(name)
        todo.extend(Requirement(r) for r in metadata.distribution(req.name).requires or [])
    return seen


@pytest.mark.slow
def test_plain_install_loads_the_bundled_checkpoint(tmp_path):
    """An interpreter that sees only install_requires and their dependencies (what `pip install .` brings, no test
    extra) imports bert4k and loads pretrained/bert4k-small-zh."""
    site = tmp_path / "site-packages"
    site.mkdir()
    for name in _closure(install_requires()):
        dist = metadata.distribution(name)
        root = Path(dist.locate_file(""))
        for top in {Path(f).parts[0] for f in dist.files or []}:
            source = root / top
            if source.exists() and not (site / top).exists() and not top.startswith(".."):
                os.symlink(source, site / top)
    assert not (site / "torch").exists() and not (site / "transformers").exists()
    script = (f"import sys; sys.path[:0] = [{str(site)!r}, {str(REPO)!r}]\n"
              "import bert4k\n"
              f"model, tokenizer = bert4k.from_pretrained({str(REPO / 'pretrained' / 'bert4k-small-zh')!r})\n"
              "ids, segments = tokenizer.encode('今天天气不错')\n"
              "out = model.predict([[ids], [segments]], verbose=0)\n"
              "assert out.shape[:2] == (1, len(ids)), out.shape\n"
              "assert model.load_report.loaded\n"
              "print('OK', out.shape)\n")
    env = {"PATH": os.environ.get("PATH", ""), "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3",
           "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-I", "-S", "-c", script], capture_output=True, text=True, env=env,
                            timeout=600, check=False)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]
