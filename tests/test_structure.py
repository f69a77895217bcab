"""The project's layering, read from the source with ast (nothing is imported): imports between the top-level
modules point down only (no circle, no module importing itself), no project module is imported inside a function,
the modules meant to be copied alone need at most utils.py beside them, and one setting has one name."""
import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = {path.stem: path for path in sorted(ROOT.glob("*.py"))}
TREES = {name: ast.parse(path.read_text(encoding="utf-8"), str(path)) for name, path in FILES.items()}
# The modules a reader can lift into another project, and the project modules that must come with each.
LIFTABLE = {"utils": set(), "losses": {"utils"}, "plots": {"utils"}, "metrics": {"utils"}, "models": {"utils"}}
DYNAMIC = {"import_module", "__import__", "run_module", "run_path"}  # importlib / runpy: imports by name


def imports(tree: ast.AST) -> list[tuple[str, int, bool, str]]:
    """(project module, line, inside a function body, style) of every import in the tree, wherever it sits:
    module level, under `if __name__ == "__main__":`, in a function, or by name through importlib / runpy."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            names, style = [], "import"
            if isinstance(child, ast.Import):
                names = [alias.name.split(".")[0] for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names, style = [child.module.split(".")[0]], "from"
            elif isinstance(child, ast.Call) and child.args and isinstance(child.args[0], ast.Constant):
                func = child.func.attr if isinstance(child.func, ast.Attribute) else getattr(child.func, "id", "")
                if func in DYNAMIC and isinstance(child.args[0].value, str):
                    names, style = [Path(child.args[0].value).stem.split(".")[0]], "dynamic"
            found.extend((name, child.lineno, in_function, style) for name in names if name in FILES)
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return found


GRAPH = {name: sorted({m for m, *_ in imports(tree)}) for name, tree in TREES.items()}


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a] (a module importing itself is [a, a]), or None."""
    state: dict[str, str] = {}

    def walk(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in graph.get(node, []):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := walk(nxt, path + [nxt])):
                return cycle
        state[node] = "done"
        return None

    for start in graph:
        if start not in state and (cycle := walk(start, [start])):
            return cycle
    return None


def test_the_import_graph_has_no_circle():
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH))


def test_the_cycle_finder_finds_circles():
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["a"]}) == ["a", "a"]
    assert find_cycle({"a": ["b"], "b": []}) is None


def test_no_project_module_is_imported_inside_a_function():
    inside = [f"{name}.py:{line} imports {module}" for name, tree in TREES.items()
              for module, line, in_function, _ in imports(tree) if in_function]
    assert not inside, inside


def test_liftable_modules_need_at_most_utils_beside_them():
    for name, allowed in LIFTABLE.items():
        assert set(GRAPH[name]) <= allowed, f"{name}.py imports {sorted(set(GRAPH[name]) - allowed)}"


def test_utils_imports_the_standard_library_only():
    tree = TREES["utils"]
    modules = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
               for alias in node.names}
    modules |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert modules <= set(sys.stdlib_module_names) | {"__future__"}, sorted(modules - set(sys.stdlib_module_names))


def test_one_import_style_per_imported_module():
    for name, tree in TREES.items():
        styles: dict[str, set[str]] = {}
        for module, _, _, style in imports(tree):
            styles.setdefault(module, set()).add(style)
        mixed = sorted(module for module, kinds in styles.items() if len(kinds) > 1)
        assert not mixed, f"{name}.py imports {mixed} both as `import m` and `from m import`"


def add_argument_calls() -> list[tuple[str, ast.Call]]:
    """(module, call) of every parser.add_argument(...) in the project."""
    return [(name, node) for name, tree in TREES.items() for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument"]


def test_one_spelling_per_setting():
    # --img-size everywhere: the old spellings exist only as refusals pointing to it.
    for name, call in add_argument_calls():
        flags = [a.value for a in call.args if isinstance(a, ast.Constant)]
        if {"--image-size", "--size"} & set(flags):
            action = next((k.value for k in call.keywords if k.arg == "action"), None)
            assert isinstance(action, ast.Name) and action.id == "Renamed", f"{name}.py:{call.lineno} defines {flags}"
    for path in [*FILES.values(), *ROOT.glob("*.sh")]:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"image-size|--size\b", line):
                assert "action=Renamed" in line, f"{path.name}:{number}: {line.strip()}"
    # One default image size: its literal is written once (RGB colour triplets such as demo.py's skin tones aside).
    triplets = {id(element) for tree in TREES.values() for node in ast.walk(tree)
                if isinstance(node, (ast.List, ast.Tuple)) and len(node.elts) == 3
                and all(isinstance(e, ast.Constant) and isinstance(e.value, int) for e in node.elts)
                for element in node.elts}
    sizes = [f"{name}.py:{node.lineno}" for name, tree in TREES.items() for node in ast.walk(tree)
             if isinstance(node, ast.Constant) and type(node.value) is int and node.value == 224
             and id(node) not in triplets]
    assert len(sizes) == 1 and sizes[0].startswith("utils.py:"), sizes
    # The same --data-root help in every script.
    helps = {ast.unparse(k.value) for _, call in add_argument_calls()
             if any(isinstance(a, ast.Constant) and a.value == "--data-root" for a in call.args)
             for k in call.keywords if k.arg == "help"}
    assert len(helps) == 1, helps
