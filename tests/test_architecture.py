"""The house rules of ARCHITECTURE.md that a machine can check: no import circle among
probae's modules, deferred (function-level) imports counted, and the model families
import no trainer, saver or evaluator; no module over 700 lines, no function over 100."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "probae"


def _modules() -> dict:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _imports(name: str, path: Path, modules: dict) -> set:
    """The probae modules ``name`` imports anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.rsplit(".", 1)[0]
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.add(target if target in modules else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in modules and m != name}


def _graph() -> dict:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict) -> list:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def _reaches(graph: dict, start: str) -> set:
    seen, todo = set(), [start]
    while todo:
        for w in graph[todo.pop()]:
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def test_no_import_circle_among_probaes_modules():
    assert _cycles(_graph()) == []


def test_the_checker_finds_a_circle_when_there_is_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_the_families_import_no_trainer_saver_or_evaluator():
    graph = _graph()
    above = {
        "probae.train",
        "probae.stacking",
        "probae.saving",
        "probae.cli",
        "probae.evaluate",
        "probae.viz",
        "probae.callbacks",
    }
    rooms = tuple(f"{room}." for room in above)  # the modules of a room that is a package
    for name in graph:
        if name.startswith("probae.models"):
            direct = {m for m in graph[name] if m in above or m.startswith(rooms)}
            assert not direct, f"{name} imports {sorted(direct)}"
            # nor anything that reaches the trainer
            assert not {"probae.train", "probae.stacking"} & _reaches(graph, name), name
    # the data readers stand below everything that trains or measures
    assert not {"probae.train", "probae.evaluate"} & _reaches(graph, "probae.data")


def _body_lines(node) -> int:
    """Lines of a function from its first statement after the docstring to its last."""
    body = node.body[1:] if ast.get_docstring(node) is not None else node.body
    return body[-1].end_lineno - body[0].lineno + 1 if body else 0


def _oversized(modules: dict, max_module: int, max_function: int) -> list:
    found = []
    for name, path in sorted(modules.items()):
        text = path.read_text()
        if len(text.splitlines()) > max_module:
            found.append(f"module {name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if _body_lines(node) > max_function:
                    found.append(f"function {name}.{node.name}: {_body_lines(node)} lines")
    return found


def test_no_module_over_700_lines_and_no_function_over_100():
    assert _oversized(_modules(), 700, 100) == []


def test_the_size_check_finds_what_is_over(tmp_path):
    long_body = "\n".join(f"    x{i} = {i}" for i in range(101))
    path = tmp_path / "big.py"
    path.write_text(f'def f():\n    """doc\n    more"""\n{long_body}\n')
    assert _oversized({"big": path}, 700, 100) == ["function big.f: 101 lines"]
    assert _oversized({"big": path}, 50, 101) == ["module big: 104 lines"]
