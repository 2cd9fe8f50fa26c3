"""The layers of docs/architecture.md, checked on the source: no import runs upward or in a circle.

Every `import` / `from ... import` in hal/ counts, at module level or inside a function (a lazy import is still a
dependency), except those under `if TYPE_CHECKING:`; circles are those of the imports that run at load time. Layers, bottom to top:

    native    hal._C, hal._torch_C
    api       hal (package), hal.errors, hal.runtime, hal._device, hal._stream, hal.buffer, hal._format,
              hal.inventory
    services  hal.torch.*, hal.plan.*, hal.conformance.*, hal.collectives.*   (side by side; see SIDEWAYS for
              what may cross)
    runtime   hal.parallel.*  (the multi-process training runtime: composes the planner and the collectives)
    app       hal.train.*     (the demo's training job: model, corpus, progress display)
    top       hal.launch.*, hal.demo, hal.cli, hal._autoload (torch's entry point: the torch device and the
              distributed backend)

A module may import its own layer or lower ones, never a higher one.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

HAL = Path(__file__).resolve().parent.parent / "hal"

LAYERS = {"native": 0, "api": 1, "services": 2, "runtime": 3, "app": 4, "top": 5}
NATIVE = {"hal._C", "hal._torch_C"}
API = {"hal", "hal.errors", "hal.runtime", "hal._device", "hal._stream", "hal.buffer", "hal._format",
       "hal.inventory"}
TOP = {"hal.demo", "hal.cli", "hal._autoload"}
# Service modules (or whole services) that may use another service: the planner's parts that run models on hal:N
# devices, the collectives, which move hal:N tensors, and the conformance suite's operators area, which checks a
# plugin's kernels through the torch bridge.
SIDEWAYS = {("hal.plan.local", "hal.torch"), ("hal.plan.execute", "hal.torch"), ("hal.collectives", "hal.torch"),
            ("hal.conformance.operators", "hal.torch")}


def layer(module: str) -> int:
    if module in NATIVE:
        return LAYERS["native"]
    if module in API:
        return LAYERS["api"]
    if module in TOP or module.startswith("hal.launch"):
        return LAYERS["top"]
    if module.split(".")[:2] == ["hal", "parallel"]:
        return LAYERS["runtime"]
    if module.split(".")[:2] == ["hal", "train"]:
        return LAYERS["app"]
    return LAYERS["services"]


def service(module: str) -> str:
    return ".".join(module.split(".")[:2])


def module_name(path: Path) -> str:
    parts = list(path.relative_to(HAL.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def hal_imports(path: Path, lazy: bool = True) -> set[str]:
    """The hal modules |path| imports (a `from hal import x` names hal.x when x is a module); with
    |lazy| False only those imported when the module itself is imported (not inside functions)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]

    def visit(node: ast.AST) -> None:
        if not lazy and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return
        if isinstance(node, ast.If) and is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "hal")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] == "hal":
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    found.add(sub if sub in NATIVE or (HAL.parent / (sub.replace(".", "/") + ".py")).exists()
                              or (HAL.parent / sub.replace(".", "/")).is_dir() else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(module_name(path))
    return found


GRAPH = {module_name(p): hal_imports(p) for p in sorted(HAL.rglob("*.py"))}
EAGER = {module_name(p): hal_imports(p, lazy=False) for p in sorted(HAL.rglob("*.py"))}


def test_the_graph_was_read():
    assert {"hal", "hal._device", "hal.torch", "hal.plan.planner", "hal.cli", "hal.collectives",
            "hal._autoload"} <= GRAPH.keys()
    assert "hal._C" in GRAPH["hal._device"]  # The parser sees a plain `from hal import _C`.


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_import_runs_upward(module):
    upward = []
    for target in sorted(GRAPH[module]):
        if layer(target) > layer(module):
            upward.append(target)
        elif (layer(target) == layer(module) == LAYERS["services"] and service(target) != service(module)
              and (module, service(target)) not in SIDEWAYS and (service(module), service(target)) not in SIDEWAYS):
            upward.append(target)
    assert not upward, f"{module} imports {upward}, which are not below it (docs/architecture.md)"


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the groups of modules that import each other, directly or through others."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_no_import_circle():
    """No modules import each other when they load. (Lazy imports inside functions may point back within a
    layer: a Device makes Streams and a Stream names its Device; test_no_import_runs_upward covers them.)"""
    # `import hal.x` also runs hal/__init__.py (lazy exports only), which is not a dependency on the API.
    graph = {m: {t for t in targets if t != "hal"} for m, targets in EAGER.items()}
    circles = strongly_connected(graph)
    assert not circles, f"modules that import each other: {circles}"


def test_the_checks_can_fail():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer("hal.cli") > layer("hal.plan.cost") > layer("hal._device") > layer("hal._C")
    assert layer("hal.launch.cli") > layer("hal.train.job") > layer("hal.parallel.trainer") > layer("hal.plan.cost")
