"""The package's shape: one folder per pipeline stage, each importing only from itself and
the stages below it, and no import cycles between its modules (imports inside functions
count too), so any module can be read and imported on its own (docs/design.md §1)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "bioknow"
# bottom up: a stage imports only from itself and the stages before it
STAGES = ["base", "data", "training", "measure", "study"]
TOP = {"bioknow", "bioknow.__main__", "bioknow.cli"}  # above every stage


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every name of the package a file imports, anywhere in it: a module, or a name
    (`bioknow.__version__`) of one."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {n for n in found if n == "bioknow" or n.startswith("bioknow.")}


def imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that a file imports, anywhere in it."""
    found = set()
    for name in imported(path):
        while name not in modules:  # a name of a module: that module
            name = name.rpartition(".")[0]
        found.add(name)
    return found


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def graph() -> dict[str, set[str]]:
    files = modules()
    return {name: imports(path, set(files)) - {name} for name, path in files.items()}


def stage(module: str) -> str:
    """A module's stage; "top" above them (a module outside every stage: see below)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else "top"


def rank(module: str) -> int:
    return len(STAGES) if stage(module) == "top" else STAGES.index(stage(module))


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, or None."""
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]):
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt, path + [nxt])):
                return found
        state[node] = "done"
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_the_cycle_finder_finds_one():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    edges = graph()
    assert "bioknow.training.train" in edges["bioknow.measure.evaluate"]  # inside a function
    assert cycle(edges) is None, " -> ".join(cycle(edges))


def test_every_module_sits_in_a_stage():
    folders = {p.parent.relative_to(PACKAGE).parts[0] for p in PACKAGE.glob("*/*.py")}
    assert folders == set(STAGES)
    assert {m for m in modules() if len(m.split(".")) == 2} - TOP == {
        f"bioknow.{s}" for s in STAGES
    }


def bound(path: Path) -> set[str]:
    """The names a module's top level binds (inside if and try too)."""
    names, todo = set(), list(ast.parse(path.read_text()).body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                elts = target.elts if isinstance(target, ast.Tuple) else [target]
                names |= {t.id for t in elts if isinstance(t, ast.Name)}
        elif isinstance(node, ast.If | ast.Try):
            todo += node.body + node.orelse + getattr(node, "finalbody", [])
            todo += [s for h in getattr(node, "handlers", []) for s in h.body]
    return names


def test_every_import_of_the_package_names_what_it_holds():
    """An import of a module that moved or is gone fails here, even inside a function that
    no test calls; in the tests, benchmarks and scripts too."""
    import bioknow

    files = modules()
    known = set(files) | {f"bioknow.{name}" for name in bioknow.__all__}
    known |= {f"{name}.{n}" for name, path in files.items() for n in bound(path)}
    paths = [*files.values()]
    paths += [p for d in ("tests", "benchmarks", "scripts") for p in (ROOT / d).rglob("*.py")]
    unknown = {f"{p.relative_to(ROOT)}: {n}" for p in paths for n in imported(p) - known}
    assert not unknown, sorted(unknown)


def test_each_stage_imports_only_itself_and_the_stages_below():
    up = [
        f"{a} -> {b}"
        for a, targets in graph().items()
        for b in targets
        if b != "bioknow" and rank(b) > rank(a)  # the root: bioknow.__version__
    ]
    assert not up, up
    assert "bioknow.study.sweep" in graph()["bioknow.study.slurm"]  # within a stage


def test_the_root_imports_no_module_when_imported():
    """Every stage may read bioknow.__version__: importing the root imports nothing of the
    package (the API's functions are imported on first use)."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    top_level = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    names = [getattr(n, "module", None) or "" for n in top_level]
    names += [a.name for n in top_level for a in n.names]
    assert top_level and not [n for n in names if n.split(".")[0] == "bioknow"]


def test_no_cycle_between_stages():
    edges: dict[str, set[str]] = {s: set() for s in [*STAGES, "top"]}
    for a, targets in graph().items():
        edges[stage(a)] |= {stage(b) for b in targets if b != "bioknow"} - {stage(a)}
    assert cycle(edges) is None, " -> ".join(cycle(edges))
