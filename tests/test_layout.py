"""The library's shape, as docs/DESIGN.md draws it: stage families in folders of at most 15 modules,
imports that point down the stage graph only (never up, never a student to a teacher), no cycles, and the
imports the README once showed still working, with a warning, for one release."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "pipeline"
# The stage graph, bottom up: a family may import its own and those before it, never one after it.
ORDER = ["data", "training", "cache", "teacher", "student", "results", "experiments"]
# The foundations' own exceptions: the typed configs (which resolve a dataset's folder options and the
# Debian path) are the one flat module that knows the data family; torch_dataset is the old import path,
# kept for one release.
FOUNDATION_MAY = {"config": {"data"}, "torch_dataset": {"cache"}}


def _family(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in ORDER else None


def _imports() -> dict[str, set[str]]:
    graph = {}
    for path in PIPELINE.rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline"):
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("pipeline"))
        graph[module] = found
    return graph


def test_no_folder_holds_more_than_fifteen_modules():
    for folder in [PIPELINE, *[p for p in PIPELINE.iterdir() if p.is_dir() and p.name != "__pycache__"]]:
        assert len(list(folder.glob("*.py"))) <= 15, folder


def test_every_family_says_what_it_holds_and_may_import():
    for name in ORDER:
        doc = ast.get_docstring(ast.parse((PIPELINE / name / "__init__.py").read_text()))
        assert doc and "May import" in doc, name


def test_imports_point_down_the_stage_graph_and_have_no_cycle():
    graph = _imports()
    for module, targets in graph.items():
        mine = _family(module)
        for target in targets:
            theirs = _family(target)
            if theirs is None:
                continue
            if mine is None:
                assert theirs in FOUNDATION_MAY.get(module.split(".")[1], set()), f"{module} imports {target}"
            else:
                assert ORDER.index(theirs) <= ORDER.index(mine), f"{module} imports {target}, up the graph"
    assert not any(t.startswith("pipeline.teacher") for t in set().union(*(graph[m] for m in graph
                                                                            if _family(m) == "student")))
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in graph.get(module, ()):
            if target in graph:
                assert state.get(target) != 1, " -> ".join([*path, target])
                if target not in state:
                    visit(target, [*path, target])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])


def test_imports_the_readme_showed_before_the_move_still_work_with_a_warning():
    code = ("import warnings; warnings.simplefilter('error')\n"
            "try:\n    from pipeline.cache import LogitCache\nexcept DeprecationWarning as w:\n    print('warned:', w)\n"
            "warnings.simplefilter('ignore')\n"
            "from pipeline.cache import LogitCache, CacheExpectations\n"
            "from pipeline.torch_dataset import SoftTargetDataset\n"
            "from pipeline.models_lm import create_lm\nfrom pipeline.models import create_lm as new_lm\nassert create_lm is new_lm\n"
            "from pipeline.cache.token_dataset import TokenTargetDataset\n"
            "from pipeline.cache.lm_dataset import TokenTargetDataset as NewTokens\nassert TokenTargetDataset is NewTokens\n"
            "from pipeline.cache.reader import LogitCache as New\nassert LogitCache is New\nprint('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "warned: 'from pipeline.cache import LogitCache' is deprecated" in out.stdout and out.stdout.endswith("ok\n")
