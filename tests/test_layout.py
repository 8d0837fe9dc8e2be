"""The package's layering, read from its source with ``ast``: the sub-packages are the pipeline's stages in
``STAGES`` order and each imports only itself and the stages before it; the command line sits on top and nothing
imports it; no two modules import each other, directly or round a longer circle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "custom" / "fedgin"

#: the pipeline, first stage first (the order of ``fedgin/__init__.py``'s docstring)
STAGES = ["common", "phantom", "data", "augment", "engine", "flare", "reporting", "inference", "experiments", "cli"]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The fedgin modules ``path`` imports anywhere in it (module level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # ``from . import x`` / ``from ..y import x``: relative to the module's package
                anchor = package.rsplit(".", node.level - 1)[0]
                base = f"{anchor}.{base}" if base else anchor
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            while t and t not in known:  # ``from fedgin.x import name``: the module is the longest known prefix
                t = t.rpartition(".")[0]
            if t and t != name and t != "fedgin":
                found.add(t)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(files)
    return {name: _imports(path, name, known) for name, path in files.items()}


def test_nothing_below_the_command_line_imports_it():
    graph = import_graph()
    assert "fedgin.cli" in graph and "fedgin.cli.main" in graph
    command_line = {m for m in graph if m == "fedgin.cli" or m.startswith("fedgin.cli.")} | {"fedgin.__main__"}
    upward = {(m, t) for m, ts in graph.items() if m not in command_line for t in ts if t in command_line}
    assert not upward, f"library modules import the command line: {sorted(upward)}"


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else None


def test_the_top_level_is_the_stage_packages():
    """Nothing loose beside the stages: every module lives in the package of its stage."""
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in {"__init__.py", "__main__.py"})
    packages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert not loose, f"modules outside a stage package: {loose}"
    assert packages == sorted(STAGES), f"packages {packages} are not the stages {sorted(STAGES)}"
    listed = [line.split()[0] for line in (PACKAGE / "__init__.py").read_text().split("::")[1].split('"""')[0]
              .strip().splitlines()]
    assert listed == STAGES, "fedgin/__init__.py lists the stages in another order"


def test_the_readme_shows_the_same_stages():
    """The README's "How the code is laid out" table lists the stage packages in pipeline order."""
    readme = (PACKAGE.parents[1] / "README.md").read_text()
    section = readme.split("### How the code is laid out", 1)[1].split("\n### ", 1)[0]
    rows = [line.split("|")[2].strip() for line in section.splitlines() if line.startswith("| ") and "`" in line]
    assert [r.strip("`/") for r in rows] == STAGES


def test_each_stage_imports_only_earlier_stages():
    graph = import_graph()
    upward = sorted((m, t) for m, ts in graph.items() if _stage(m) for t in ts
                    if _stage(t) and STAGES.index(_stage(t)) > STAGES.index(_stage(m)))
    assert not upward, "imports from a later stage: " + "; ".join(f"{m} -> {t}" for m, t in upward)


def test_no_import_circles():
    graph = import_graph()
    # a package's __init__ re-exporting its own modules is not a circle with them
    edges = {m: {t for t in ts if not (m.startswith(t + ".") and graph.get(t) is not None)} for m, ts in graph.items()}
    state: dict[str, int] = {}
    circles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for t in sorted(edges.get(node, ())):
            if state.get(t) == 1:
                circles.append(path[path.index(t):] + [t] if t in path else [node, t])
            elif t not in state:
                visit(t, path + [t])
        state[node] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles[:10])


def test_the_graph_reader_sees_a_circle_and_an_upward_import(tmp_path):
    """The checker itself: a toy package with a circle and a library module importing ``cli``."""
    known = {"fedgin.a", "fedgin.b", "fedgin.cli"}
    (tmp_path / "a.py").write_text("from fedgin.b import f\n")
    (tmp_path / "b.py").write_text("def g():\n    from fedgin import a\n    from fedgin.cli import main\n")
    assert _imports(tmp_path / "a.py", "fedgin.a", known) == {"fedgin.b"}
    assert _imports(tmp_path / "b.py", "fedgin.b", known) == {"fedgin.a", "fedgin.cli"}
