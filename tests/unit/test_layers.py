"""The house's imports run one way: runners and evaluators -> api -> run -> reasoning -> data, toy,
serving -> basics (engine/README.md). Lazy imports inside functions count too."""

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository

# Lower number = lower floor. A module may import its own floor or lower ones only.
FLOORS = {
    "engine": 0,  # the basics: errors, logging, loop, records
    "engine.serving": 1,
    "engine.toy": 2,
    "engine.data": 3,
    "engine.reasoning": 4,
    "engine.run": 5,
    # The OpenAI-compatible server: a door onto the run machinery, which the front door (runners) opens.
    "engine.api": 6,
    "runners": 7,
    "evaluators": 7,
    # Measurements may use anything of the product, never the tests.
    "benchmarks": 8,
}
# The toy package serves the `toy` data set, the demo, the make-* commands and the benchmarks, nothing else.
TOY_USERS = ("engine.toy", "engine.data.problems", "engine.run.demo", "engine.run.commands", "benchmarks")


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
    paths = [
        *ROOT.glob("engine/**/*.py"),
        *ROOT.glob("runners/*.py"),
        *ROOT.glob("evaluators/**/*.py"),
        *ROOT.glob("benchmarks/*.py"),
    ]
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
    # A method's room (a folder, e.g. reasoning/rast/) may share its name with the method's strategy file.
    for name, path in project_modules().items():
        if not name.startswith("engine.") or name.endswith(".base") or path.name == "__init__.py":
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


# Inside engine/reasoning: the core, the two step contracts, the track, the judges, the policies, the
# strategy contract, the method engines (RAST's, search's), the strategies. Lower imports lower only.
REASONING_FLOORS = {
    "engine.reasoning": 0,  # settings, seeds, confidence, aggregate, probing, method selection
    "engine.reasoning.judges.base": 1,
    "engine.reasoning.policies.base": 1,
    "engine.reasoning.track": 2,
    "engine.reasoning.judges": 3,
    "engine.reasoning.policies": 4,
    "engine.reasoning.strategies.base": 5,
    "engine.reasoning.rast": 6,
    "engine.reasoning.search": 6,
    "engine.reasoning.strategies": 7,
}
# Rooms of one method's engine: none imports another.
METHOD_ROOMS = ("engine.reasoning.rast", "engine.reasoning.search", "engine.reasoning.policies.splitreason")


def reasoning_floor(module: str) -> tuple[str, int] | None:
    for prefix in sorted(REASONING_FLOORS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return prefix, REASONING_FLOORS[prefix]
    return None


def reasoning_imports() -> list[tuple[str, str]]:
    """(importer, imported) inside engine/reasoning, each import named by its deepest module."""
    modules = project_modules()
    pairs = []
    for name, path in modules.items():
        if not name.startswith("engine.reasoning"):
            continue
        targets = {t for t in imported_modules(path) if t in modules and t != name}
        pairs += [(name, t) for t in targets if t.startswith("engine.reasoning") and not _is_package_of(t, targets)]
    return pairs


def _is_package_of(target: str, targets: set[str]) -> bool:
    return any(o.startswith(target + ".") for o in targets)


def test_inside_reasoning_imports_run_down_the_inner_floors():
    upward = []
    for name, target in reasoning_imports():
        own, theirs = reasoning_floor(name), reasoning_floor(target)
        if theirs[1] > own[1]:
            upward.append(f"{name} ({own[0]}) imports {target} ({theirs[0]})")
    assert not upward, "\n".join(sorted(upward))


def test_no_method_room_imports_another():
    crossings = [
        f"{name} imports {target}"
        for name, target in reasoning_imports()
        for room in METHOD_ROOMS
        if name.startswith(room + ".")
        for other in METHOD_ROOMS
        if other != room and target.startswith(other + ".")
    ]
    assert not crossings, "\n".join(crossings)


def test_benchmarks_never_import_the_tests():
    leaks = sorted(
        f"{name} imports {target}"
        for name, path in project_modules().items()
        if name.startswith("benchmarks")
        for target in imported_modules(path)
        if target == "tests" or target.startswith("tests.")
    )
    assert not leaks, "\n".join(leaks)


def test_the_inner_floors_see_a_policy_importing_a_strategy():
    assert reasoning_floor("engine.reasoning.strategies.vote")[1] > reasoning_floor("engine.reasoning.policies.spec")[1]
    assert reasoning_floor("engine.reasoning.rast.decoding")[1] > reasoning_floor("engine.reasoning.track")[1]
