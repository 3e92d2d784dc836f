"""The package's layers, read from the source (ast, nothing imported): every module imports only
its own layer and the layers below it, so lower packages never depend on higher ones and the
packages form no cycle.

    base (errors, io, lazy, devices, precision, images, schedules)
      < render, data < models, photos < loading < train < evaluate, zeroshot, export < report

and gmae.loading imports only models, render and base modules (and the config schema). The
entry points (gmae.cli, hub, inspect, demo, doctor, the package root) sit on top.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "gmae"

BASE = ("gmae.__version__", "gmae.errors", "gmae.io", "gmae.lazy", "gmae.devices",
        "gmae.precision", "gmae.images", "gmae.schedules")  # fmt: skip
# Lowest first; a module may import its own layer and every layer below.
LAYERS = (
    BASE,
    ("gmae.render", "gmae.data"),
    ("gmae.models", "gmae.photos"),
    ("gmae.loading",),
    ("gmae.train",),
    ("gmae.evaluate", "gmae.zeroshot", "gmae.export"),
    ("gmae.report",),
)
TOP = ("gmae", "gmae.__main__", "gmae.cli", "gmae.hub", "gmae.inspect", "gmae.demo",
       "gmae.doctor")  # fmt: skip

# Upward imports that are part of the design, each inside the function that needs it.
ALLOWED = {
    # every command module's register() adds its parsers through gmae.cli's command_group
    ("*", "gmae.cli"): "command_group",
    # MaskedImageModel.from_pretrained / save_pretrained are the Hub's, on the model class
    ("gmae.models", "gmae.hub"): "Hub conveniences",
    # the config schema imports nothing above gmae.loading (test below), so loading may read it
    ("gmae.loading", "gmae.train.config"): "config schema",
    # the training pictures (train.monitor.layer_grid) are the zero-shot depth layers
    ("gmae.train.monitor", "gmae.zeroshot.layers"): "layer pictures",
}

# gmae.loading sits below train / evaluate / zeroshot / export and reads only these.
LOADING_MAY_IMPORT = ("gmae.loading", "gmae.models", "gmae.render", "gmae.train.config", *BASE)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (``from gmae import io`` -> gmae, gmae.io),
    and the modules a package's lazy exports (``_LAZY = {name: module}``) name."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            if any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets):
                found |= {v.value for v in node.value.values if isinstance(v, ast.Constant)}
    return found


def under(module: str, package: str) -> bool:
    return module == package or module.startswith(f"{package}.")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def rank(module: str) -> int | None:
    """The layer of ``module`` (None: an entry point, or not gmae's)."""
    for i, layer in enumerate(LAYERS):
        if any(under(module, p) for p in layer):
            return i
    return None


def gmae_imports(path: Path) -> set[str]:
    """gmae modules ``path`` imports, without the package root (``from gmae import x`` names
    gmae.x, which is what is checked)."""
    return {m for m in imports_of(path) if under(m, "gmae") and m != "gmae"}


def allowed(importer: str, imported: str) -> bool:
    return any(
        (src == "*" or under(importer, src)) and under(imported, dst) for src, dst in ALLOWED
    )


def sources() -> list[tuple[str, Path]]:
    return sorted((module_name(p), p) for p in SRC.rglob("*.py"))


def test_every_module_has_a_layer():
    unplaced = [m for m, _ in sources() if rank(m) is None and m not in TOP]
    assert not unplaced, f"add these to LAYERS or TOP in tests/test_layering.py: {unplaced}"


def test_no_module_imports_a_higher_layer():
    bad = []
    for module, path in sources():
        own = rank(module)
        if own is None:
            continue
        for imported in sorted(gmae_imports(path)):
            theirs = rank(imported)
            above = theirs is None or theirs > own  # None: an entry point
            if above and not allowed(module, imported):
                bad.append(f"{module} imports {imported}")
    assert not bad, bad


def package(module: str) -> str:
    """``module``'s node in the package graph: its package (gmae.x), except that a module an
    ALLOWED upward import reaches is its own node (loading reads train.config, not train)."""
    for _, dst in ALLOWED:
        if under(module, dst) and dst != "gmae.cli":
            return dst
    return ".".join(module.split(".")[:2])


def test_the_packages_form_no_cycle():
    """Within a layer too (evaluate, zeroshot and export may use each other, one way)."""
    graph: dict[str, set[str]] = {}
    for module, path in sources():
        if rank(module) is None:
            continue
        for imported in gmae_imports(path):
            a, b = package(module), package(imported)
            if rank(imported) is not None and not under(b, a) and not under(a, b):
                graph.setdefault(a, set()).add(b)
    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, " -> ".join((*path[path.index(node) :], node))
        if node not in done:
            for nxt in sorted(graph.get(node, ())):
                visit(nxt, (*path, node))
            done.add(node)

    for node in sorted(graph):
        visit(node, ())


def test_zeroshot_does_not_import_report():
    files = sorted((SRC / "zeroshot").glob("*.py"))
    bad = {f"{f.name}: {m}" for f in files for m in gmae_imports(f) if under(m, "gmae.report")}
    assert not bad, sorted(bad)


def test_loading_imports_only_models_render_and_base_modules():
    files = sorted((SRC / "loading").glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "checks.py", "formats.py", "loaders.py"}
    bad = {
        f"{f.name}: {m}"
        for f in files
        for m in gmae_imports(f)
        if not any(under(m, p) for p in LOADING_MAY_IMPORT)
    }
    assert not bad, sorted(bad)
    # the config schema, which loading may read, imports nothing above gmae.loading either
    schema = gmae_imports(SRC / "train" / "config.py")
    above = {m for m in schema if rank(m) is None or rank(m) > rank("gmae.loading")}
    assert not {m for m in above if not under(m, "gmae.train.config")}, sorted(above)


def _modules_after(code: str) -> set[str]:
    """The top-level packages a fresh interpreter has imported after running ``code``."""
    probe = f"{code}\nimport sys; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_what_stays_lazy_stays_lazy():
    # `import gmae` (the Hub conveniences) loads no torch; `gmae --help` loads no heavy library
    # beyond torch: the imports docs/architecture.md keeps inside functions for this.
    assert "torch" not in _modules_after("import gmae")
    help_code = (
        "from gmae.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    )
    heavy = {"timm", "torchvision", "skimage", "scipy", "matplotlib", "safetensors"}
    assert not heavy & _modules_after(help_code)


def test_pyplot_loads_only_when_drawing_and_then_headless():
    probe = (
        "import sys, gmae.report.builders, gmae.zeroshot.layers, gmae.train.engine\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
        "from gmae.images import headless_pyplot\n"
        "import matplotlib\n"
        "headless_pyplot()\n"
        "print(matplotlib.get_backend().lower())"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "agg"
