"""The shape of the package, enforced: imports flow one way, the work code knows nothing of Dagster,
and asset bodies stay thin (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import thread_embed_pipeline

PACKAGE = Path(thread_embed_pipeline.__file__).parent
ROOT = "thread_embed_pipeline"
# The Dagster side: definitions, the orchestration package, and the CLI that reads Dagster's run history.
DAGSTER_SIDE = (f"{ROOT}.definitions", f"{ROOT}.orchestration")
ASSET_DECORATORS = {"asset", "multi_asset", "asset_check", "multi_asset_check", "observable_source_asset", "op"}
MAX_ASSET_BODY_LINES = 30
# Programs that Dagster launches in their own processes: they speak Dagster Pipes (the small,
# framework-free ``dagster_pipes`` package) and nothing else of Dagster.
PIPES_PROGRAMS = {f"{ROOT}.training.launch"}
# Modules every stage may use, which import only each other.
SHARED = ("schemas", "storage", "versioning", "models")
# The stage packages in the order data flows through them: a package imports only the shared modules,
# itself and the packages before it (docs/architecture.md; each package's __init__ says the same in words).
FLOW = ("sources", "corpus", "text", "pairs", "training", "evaluation", "search", "release", "disentanglement", "orchestration", "definitions")


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> tuple[set[str], set[str]]:
    """(package modules imported anywhere in the file, incl. function-level and TYPE_CHECKING imports; top-level packages imported)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    internal, external = set(), set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            if target.split(".")[0] == ROOT:
                while target not in modules and "." in target:
                    target = target.rpartition(".")[0]
                if target != name:
                    internal.add(target)
            else:
                external.add(target.split(".")[0])
    return internal, external


def _graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    modules = _modules()
    internal, external = {}, {}
    for name, path in modules.items():
        internal[name], external[name] = _imports(name, path, modules)
    return internal, external


def _on_dagster_side(name: str) -> bool:
    return any(name == side or name.startswith(side + ".") for side in DAGSTER_SIDE)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_walk_sees_the_real_imports():
    internal, external = _graph()
    assert f"{ROOT}.orchestration.eval_assets" in internal[f"{ROOT}.definitions"]
    assert "dagster" in external[f"{ROOT}.orchestration.eval_assets"] and "torch" in external[f"{ROOT}.training.trainer"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    internal, _ = _graph()
    assert _cycles(internal) == []


def test_work_modules_import_neither_dagster_nor_the_dagster_side():
    internal, external = _graph()
    offenders = {
        name: sorted({pkg for pkg in external[name] if pkg.startswith("dagster") and not (name in PIPES_PROGRAMS and pkg == "dagster_pipes")} | {m for m in internal[name] if _on_dagster_side(m)})
        for name in internal
        if not _on_dagster_side(name)
    }
    assert {name: found for name, found in offenders.items() if found} == {}
    assert all("dagster_pipes" in external[name] for name in PIPES_PROGRAMS)  # the exemption is still needed


def _asset_bodies() -> list[tuple[str, int]]:
    out = []
    for path in sorted((PACKAGE / "orchestration").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            decorators = [d.func if isinstance(d, ast.Call) else d for d in node.decorator_list]
            if not any(ast.unparse(d).rpartition(".")[2] in ASSET_DECORATORS for d in decorators):
                continue
            body = node.body[1:] if isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant) and len(node.body) > 1 else node.body
            out.append((f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}", node.end_lineno - body[0].lineno + 1))
    return out


def test_asset_bodies_stay_thin():
    bodies = _asset_bodies()
    assert any(name.endswith(" eval_report") for name, _ in bodies)  # the walk finds the assets
    assert [f"{name}: {lines} lines" for name, lines in bodies if lines > MAX_ASSET_BODY_LINES] == []


def test_data_flows_one_way_from_the_shared_base_through_the_sources():
    internal, _ = _graph()
    base = {f"{ROOT}.schemas", f"{ROOT}.storage", f"{ROOT}.versioning"}
    for name in base:
        assert internal[name] <= base, f"{name} imports {sorted(internal[name] - base)}"
    for name, deps in internal.items():
        if name.startswith(f"{ROOT}.sources"):
            stray = {d for d in deps if not d.startswith(f"{ROOT}.sources") and d not in base}
            assert not stray, f"{name} (a source) imports later stages: {sorted(stray)}"


def _stage(name: str) -> str:
    """The top-level package or module of ``thread_embed_pipeline.<stage>[.…]`` ("" for the root)."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def _backward_imports(internal: dict[str, set[str]]) -> list[str]:
    out = []
    for name, deps in sorted(internal.items()):
        here = _stage(name)
        for dep in sorted(deps):
            there = _stage(dep)
            if there in ("", here):
                continue
            if here in SHARED:
                ok = there in SHARED
            else:
                ok = there in SHARED or FLOW.index(there) < FLOW.index(here)
            if not ok:
                out.append(f"{name} -> {dep}")
    return out


def test_every_package_has_a_place_in_the_flow():
    stages = {_stage(name) for name in _modules()} - {""}
    assert stages == set(SHARED) | set(FLOW), f"place {sorted(stages - set(SHARED) - set(FLOW))} in FLOW or SHARED"


def test_stage_packages_import_only_the_shared_modules_and_earlier_stages():
    internal, _ = _graph()
    assert _backward_imports(internal) == []
    # the rule bites: an evaluation module importing the search package, or a shared module importing a stage
    assert _backward_imports({f"{ROOT}.evaluation.runner": {f"{ROOT}.search.retriever"}}) == [f"{ROOT}.evaluation.runner -> {ROOT}.search.retriever"]
    assert _backward_imports({f"{ROOT}.models": {f"{ROOT}.release.onnx"}}) == [f"{ROOT}.models -> {ROOT}.release.onnx"]
    assert _backward_imports({f"{ROOT}.release.card": {f"{ROOT}.search.retriever", f"{ROOT}.models"}}) == []


def test_each_stage_package_says_what_enters_leaves_and_what_it_may_import():
    for stage in FLOW:
        init = PACKAGE / stage / "__init__.py"
        if not init.exists():  # definitions is a module
            continue
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert "May import" in doc, f"{stage}/__init__.py does not say what it may import"
