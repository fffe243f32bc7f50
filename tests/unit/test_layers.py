"""The house's imports run one way: runners and evaluators -> run -> reasoning -> data, toy,
serving -> basics (engine/README.md). Lazy imports inside functions count too."""

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Lower number = lower floor. A module may import its own floor or lower ones only.
FLOORS = {
    "engine": 0,  # the basics: errors, logging, loop, records
    "engine.serving": 1,
    "engine.toy": 2,
    "engine.data": 3,
    "engine.reasoning": 4,
    "engine.run": 5,
    "runners": 6,
    "evaluators": 6,
}
# The toy package serves the `toy` data set and the CLI's make-* commands, nothing else.
TOY_USERS = ("engine.toy", "engine.data.problems", "engine.run.cli")


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def floor_of(module: str) -> tuple[str, int] | None:
    for prefix in sorted(FLOORS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return prefix, FLOORS[prefix]
    return None


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def project_modules() -> dict[str, Path]:
    paths = [*ROOT.glob("engine/**/*.py"), *ROOT.glob("runners/*.py"), *ROOT.glob("evaluators/**/*.py")]
    return {module_name(p): p for p in paths}


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    graph = {}
    for name, path in modules.items():
        targets = {t for t in imported_modules(path) if t in modules and t != name}
        # `from engine.x import y` names both the package and its module y: keep the deepest.
        graph[name] = {t for t in targets if not any(o.startswith(t + ".") for o in targets)}
    return graph


def test_no_module_imports_a_higher_floor():
    upward = []
    for name, targets in import_graph().items():
        own = floor_of(name)
        for target in targets:
            theirs = floor_of(target)
            if own and theirs and theirs[1] > own[1]:
                upward.append(f"{name} ({own[0]}) imports {target} ({theirs[0]})")
    assert not upward, "imports must run one way:\n" + "\n".join(sorted(upward))


def test_only_data_and_the_cli_use_the_toy_package():
    users = sorted(
        f"{name} imports {target}"
        for name, targets in import_graph().items()
        for target in targets
        if target.startswith("engine.toy") and not name.startswith(TOY_USERS)
    )
    assert not users, "\n".join(users)


def test_no_import_circle():
    graph = import_graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    circles: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                circles.append(" -> ".join(stack[stack.index(target) :] + [target]))
            elif target not in state:
                visit(target)
        state[node] = 2
        stack.pop()

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not circles, "\n".join(circles)


def test_no_two_modules_share_a_name_outside_the_plug_in_contracts():
    # policies/base.py and strategies/base.py are the two seams' contracts (DESIGN.md).
    seen: dict[str, str] = {}
    twins = []
    for name in project_modules():
        if not name.startswith("engine.") or name.endswith(".base"):
            continue
        short = name.rpartition(".")[2]
        if short in seen and short != "__init__":
            twins.append(f"{seen[short]} and {name}")
        seen.setdefault(short, name)
    assert not twins, twins


def test_the_layer_check_sees_an_upward_import(tmp_path):
    # The check itself must be able to fail: a serving module importing the run layer is caught.
    fake = tmp_path / "upward.py"
    fake.write_text("from engine.run.config import RunConfig\n")
    assert "engine.run.config" in imported_modules(fake)
    assert floor_of("engine.run.config")[1] > floor_of("engine.serving.client")[1]
