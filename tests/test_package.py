"""The package's shape: a module a job, no import cycles, a leaf config, one public API."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import jaxnst

PACKAGE = Path(jaxnst.__file__).resolve().parent
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__"))
MAX_LINES = 450  # "about 400" (STYLE.md); config.py, the table of every option, is the longest


def imports_of(name: str) -> set[str]:
    """The jaxnst modules ``name`` imports, at any depth of its code."""
    tree = ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jaxnst"):
            parts = node.module.split(".")
            found |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("jaxnst.")}
    return found & set(MODULES) - {name}


def test_the_import_graph_has_no_cycles():
    graph = {m: imports_of(m) for m in MODULES}
    done: set[str] = set()

    def visit(m: str, path: tuple[str, ...]) -> None:
        assert m not in path, f"import cycle: {' -> '.join((*path, m))}"
        if m in done:
            return
        for dep in graph[m]:
            visit(dep, (*path, m))
        done.add(m)

    for m in MODULES:
        visit(m, ())
    # the checker bites: a graph with a cycle fails it
    graph["layers"] = {"config"}
    try:
        done.clear()
        visit("config", ())
    except AssertionError as err:
        assert "config -> layers -> config" in str(err)
    else:
        raise AssertionError("a cycle went unnoticed")


def test_config_is_a_leaf():
    """The config imports no model, image or JAX-program code: only its machinery and names."""
    assert imports_of("config") <= {"errors", "layers", "options"}
    assert imports_of("layers") == set() and imports_of("options") <= {"errors"}


def test_every_module_says_its_job_and_stays_small():
    for name in MODULES:
        text = (PACKAGE / f"{name}.py").read_text(encoding="utf-8")
        doc = ast.get_docstring(ast.parse(text))
        assert doc and len(doc.split("\n")[0]) > 20, f"{name}.py has no one-line job"
        lines = text.count("\n")
        assert lines <= MAX_LINES, f"{name}.py has {lines} lines"


def test_every_module_has_its_test_file():
    tests = Path(__file__).resolve().parent
    missing = [m for m in MODULES if not (tests / f"test_{m}.py").exists() and m != "errors"]
    assert not missing, f"no tests/test_<module>.py for {missing}"


def test_the_public_api_is_one_all_and_importable():
    assert len(set(jaxnst.__all__)) == len(jaxnst.__all__)
    for name in jaxnst.__all__:
        assert hasattr(jaxnst, name), name
    public = ("stylize", "StyleConfig", "StyleRun", "make_problem", "loss_parts",
              "extract_features", "load_vgg19", "Objective", "Targets", "run_scales")  # fmt: skip
    assert set(public) <= set(jaxnst.__all__)
    for name in MODULES:  # every module imports on its own
        importlib.import_module(f"jaxnst.{name}")
