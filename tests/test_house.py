"""The house (README "Architecture"): imports point one way through the pipeline's rooms, and the
math room ``esd`` imports no I/O, Ray, hub or dataset code.

The allowed graph below is the architecture section in code: a room may import only the rooms named
for it. A new import across rooms either follows the flow (add it here, with the README) or is a
design error this test catches.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "hubscan"

_ROOT = {"errors", "registry"}  # every room may import these two (stdlib only)
_BASE = _ROOT | {"refs", "hub"}
_READ = _BASE | {"weights", "sources"}
_MODEL = _ROOT | {"esd", "records", "schema"}
_PIPELINE = _READ | _MODEL | {"analysis"}
_DATA = _PIPELINE | {"store", "query"}
ALLOWED = {
    "errors": set(),
    "registry": set(),
    "refs": _ROOT,
    "hub": _ROOT,
    "weights": _BASE,                          # readers never ask where a model comes from
    "sources": _BASE | {"weights"},            # a source opens its files through the readers
    "esd": _ROOT,                              # pure math
    "records": _ROOT | {"esd"},                # the metric registry defines the layer columns
    "schema": _ROOT | {"esd", "records"},
    "analysis": _MODEL | {"weights", "refs"},   # a WeightSet in, rows out: where it came from is not its business
    "store": _MODEL | {"analysis"},
    "query": _MODEL | {"store"},
    "accuracy": _MODEL | {"store", "query", "weights", "sources"},  # which source's ids a result names
    "correlate": _MODEL | {"store", "query", "sources"},
    "doctor": _MODEL | {"store", "query"},     # a dataset's repairs: store level
    "survey": _DATA,
    "census": _DATA | {"survey"},
    "report": _MODEL | {"store", "query", "correlate"},
    "experiments": _DATA | {"survey", "correlate", "report", "demo"},  # demo: the digits it trains on
    "demo": _DATA | {"survey"},
    "publish": _MODEL | {"hub", "store"},          # a downstream room: the census on the Hub
    "monitor": _DATA,                              # a model in memory during training → the training table
    "ww": _PIPELINE,                               # WeightWatcher's interface on hubscan.analyze's rooms
}
#: Packages the math room must never import (I/O, cluster, hub, dataset).
NOT_IN_ESD = {"ray", "huggingface_hub", "pyarrow", "duckdb", "deltalake", "httpx", "requests", "fsspec",
              "safetensors", "onnx", "gguf", "timm"}


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from ((a.name, node.lineno) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno


def _room(path: Path) -> str:
    return path.relative_to(PKG).parts[0].removesuffix(".py")


def test_rooms_import_only_upstream():
    wrong, rooms = [], set()
    for path in sorted(PKG.rglob("*.py")):
        room = _room(path)
        if room in ("__init__", "__main__", "cli"):
            continue  # the package's lazy front door and the CLI (python -m hubscan too) may call every room
        rooms.add(room)
        assert room in ALLOWED, f"new room {room}: add it to ALLOWED and to README's architecture"
        for module, line in _imports(path):
            parts = module.split(".")
            if parts[0] == "hubscan" and len(parts) > 1 and parts[1] != room and parts[1] not in ALLOWED[room]:
                wrong.append(f"{path.relative_to(PKG.parent)}:{line}: {room} imports {module}")
    assert not wrong, "imports against the flow:\n" + "\n".join(wrong)
    assert {"weights", "sources", "esd", "analysis", "store", "survey"} <= rooms


def test_esd_imports_no_io_ray_hub_or_dataset_code():
    wrong = [f"{p.relative_to(PKG.parent)}:{line}: {m}" for p in sorted((PKG / "esd").rglob("*.py"))
             for m, line in _imports(p) if m.split(".")[0] in NOT_IN_ESD]
    assert not wrong, "esd must stay pure math:\n" + "\n".join(wrong)


def test_esd_loads_without_io_packages():
    """At run time too: importing every esd module pulls none of the I/O packages in."""
    mods = sorted(f"hubscan.esd.{p.stem}" for p in (PKG / "esd").glob("*.py") if p.stem != "__init__")
    code = ("import sys, importlib\n"
            f"for m in {mods!r}: importlib.import_module(m)\n"
            f"print(sorted(set(k.split('.')[0] for k in sys.modules) & set({sorted(NOT_IN_ESD)!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PKG.parent).stdout.strip()
    assert out == "[]", f"esd modules loaded {out}"


def test_the_registries_are_one_type():
    """Metrics (and their options), readers, quantization schemes, sources and reference schemes: one
    Registry type, each entry with the module that registered it."""
    from hubscan.esd.registry import METRICS, metrics
    from hubscan.refs import SCHEMES as REF_SCHEMES
    from hubscan.registry import Registry, registries
    from hubscan.sources import SOURCES
    from hubscan.weights import READERS
    from hubscan.weights.layouts import SCHEMES

    metrics()  # the built-in metrics are loaded on first use
    mine = [METRICS, READERS, SCHEMES, SOURCES, REF_SCHEMES]
    assert all(isinstance(r, Registry) for r in mine) and all(r in registries() for r in mine)
    assert READERS.module_of("safetensors") == "hubscan.weights.safetensors"
    assert SOURCES.module_of("hf") == "hubscan.sources.hf" and REF_SCHEMES.module_of("timm") == "hubscan.sources.timm"
    assert SCHEMES.module_of("mxfp4") == "hubscan.weights.quantized"
    assert METRICS.module_of("alpha") == "hubscan.esd.metrics"
    # every ``register_*`` function writes into a module-level Registry (or through another register_*)
    for path in sorted(PKG.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        made = {t.id for n in tree.body if isinstance(n, (ast.Assign, ast.AnnAssign)) and isinstance(n.value, ast.Call)
                and getattr(n.value.func, "id", None) == "Registry"
                for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)}
        for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("register_")):
            calls = [c.func for c in ast.walk(fn) if isinstance(c, ast.Call)]
            assert any((isinstance(f, ast.Attribute) and f.attr == "register" and getattr(f.value, "id", None) in made)
                       or (isinstance(f, ast.Name) and f.id.startswith("register_")) for f in calls), \
                f"{path.relative_to(PKG.parent)}: {fn.name} does not register into a Registry"


#: The built-in sources' names (their reference schemes).
SOURCE_NAMES = {"hf", "timm", "local", "list"}


def _names_a_source(node: ast.AST) -> list[tuple[int, str]]:
    """String constants naming a source where code decides by it: compared with a source
    (``ref.source == "local"``, ``src in (None, "local")``), given as a ``source`` (``{"source": "timm"}``,
    ``source="hf"``) or as a ``ModelRef``'s source. (A library's name that happens to be a source's,
    ``"timm"`` as a ``library`` or an organisation, is not a source.)"""
    def consts(n):
        if isinstance(n, ast.Constant) and n.value in SOURCE_NAMES:
            return [n]
        if isinstance(n, (ast.Tuple, ast.List, ast.Set)):
            return [c for e in n.elts for c in consts(e)]
        return []

    hits = []
    for n in ast.walk(node):
        if isinstance(n, ast.Compare):
            sides = [n.left, *n.comparators]
            if any("source" in ast.unparse(s) or "src" in ast.unparse(s) for s in sides):
                hits += [c for side in sides for c in consts(side)]
        elif isinstance(n, ast.Dict):
            hits += [c for k, v in zip(n.keys, n.values) if isinstance(k, ast.Constant) and k.value == "source"
                     for c in consts(v)]
        elif isinstance(n, ast.Call):
            hits += [c for kw in n.keywords if kw.arg == "source" for c in consts(kw.value)]
            if getattr(n.func, "id", getattr(n.func, "attr", None)) == "ModelRef" and n.args:
                hits += consts(n.args[0])
    return [(c.lineno, c.value) for c in hits]


def test_only_sources_name_a_source():
    """Where a model comes from is the business of its source (``sources/``) alone."""
    wrong = [f"{p.relative_to(PKG.parent)}:{line}: {value!r}" for p in sorted(PKG.rglob("*.py"))
             if _room(p) != "sources"
             for line, value in _names_a_source(ast.parse(p.read_text(encoding="utf-8")))]
    assert not wrong, "a source named outside sources/:\n" + "\n".join(wrong)


def test_analysis_takes_weights_not_sources():
    """The one-model room imports nothing from sources/ or the hub client (it is given a WeightSet)."""
    wrong = [f"analysis.py:{line}: {m}" for m, line in _imports(PKG / "analysis.py")
             if m.split(".")[:2] in (["hubscan", "sources"], ["hubscan", "hub"])
             or m.split(".")[0] == "huggingface_hub"]
    assert not wrong, "\n".join(wrong)


def test_no_module_reaches_for_another_modules_private_names():
    """``from hubscan.x import _name`` or ``x._name`` on an imported hubscan module couples a module to
    another's internals: what is shared is public."""
    wrong = []
    for p in sorted(PKG.rglob("*.py")):
        tree = ast.parse(p.read_text(encoding="utf-8"))
        modules = set()  # names bound to hubscan modules: import hubscan.x as m / from hubscan.pkg import mod
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("hubscan"):
                for a in n.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        wrong.append(f"{p.relative_to(PKG.parent)}:{n.lineno}: {n.module}.{a.name}")
                    dotted = PKG.parent / (n.module.replace(".", "/") + "/" + a.name)
                    if dotted.with_suffix(".py").is_file() or dotted.is_dir():
                        modules.add(a.asname or a.name)
            elif isinstance(n, ast.Import):
                modules |= {a.asname for a in n.names if a.name.startswith("hubscan") and a.asname}
        wrong += [f"{p.relative_to(PKG.parent)}:{n.lineno}: {n.value.id}.{n.attr}" for n in ast.walk(tree)
                  if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in modules
                  and n.attr.startswith("_") and not n.attr.startswith("__")]
    assert not wrong, "\n".join(wrong)


#: Where process-wide state may be set: the entry points (the CLI, the survey driver and its actors, and the
#: census when it runs the survey machinery).
ENTRY_POINTS = {"cli.py", "survey.py", "census.py"}
#: Programs whose own processes may set their environment: the hub-in-a-box builder's ``--part`` workers.
PROGRAMS = {"demo/hubbox.py"}


def test_process_wide_state_only_at_entry_points():
    """Library code writes no environment variable, and only entry points install hubscan's HTTP client in
    huggingface_hub (``hub.install_http_client``; ``set_client_factory`` is called by it alone)."""
    wrong = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).as_posix()
        for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            text = ast.unparse(n) if isinstance(n, (ast.Assign, ast.AugAssign, ast.Call, ast.Delete)) else ""
            if isinstance(n, (ast.Assign, ast.AugAssign, ast.Delete)) and "os.environ[" in text and rel not in PROGRAMS:
                wrong.append(f"{rel}:{n.lineno}: {text}")
            if isinstance(n, ast.Call):
                name = getattr(n.func, "attr", getattr(n.func, "id", ""))
                if rel not in PROGRAMS and (name in ("putenv", "unsetenv") or (
                        name in ("setdefault", "update", "pop") and ast.unparse(n.func).startswith("os.environ"))):
                    wrong.append(f"{rel}:{n.lineno}: {text}")
                if name == "install_http_client" and rel not in ENTRY_POINTS:
                    wrong.append(f"{rel}:{n.lineno}: {text} (not an entry point)")
                if name == "set_client_factory" and rel != "hub.py":
                    wrong.append(f"{rel}:{n.lineno}: {text}")
    assert not wrong, "\n".join(wrong)
