"""The import graph of the repository, read with `ast` from every Python file (imports inside functions included, so
a lazy import cannot hide a cycle): no cycle between modules or between top-level folders, nothing outside tests/
imports a test module, no test module imports another, no private name crosses a module boundary, and sys.path is
edited only where a platform forces it.

How a file is named as a module follows pyproject.toml's rule: inference/*.py and lambda/*.py are top-level modules
(flat in the model archive's code/ and in Lambda's /var/task), so are tests/*.py (pytest puts tests/ on the path);
everything else is a package path from the repository root (training.train, local.stack, bench.serve_bench).
"""

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
FLAT_FOLDERS = ("inference", "lambda", "tests")
SKIPPED_PARTS = {"build", "data", "runs", "node_modules", "__pycache__"}
# Where a platform puts a folder on sys.path and our code does the same: SageMaker runs training/train.py from a
# staged source folder; the endpoint imports the model archive's code/ (the builtin runtime, and the serving-version
# check in the serving image's Python).
SYS_PATH_EDITS_ALLOWED = {"training/train.py", "local/endpoint_server.py", "tools/check_serving_versions.py"}


def source_files(root=REPO_ROOT):
    return sorted(path for path in root.rglob("*.py")
                  if not any(part.startswith(".") or part in SKIPPED_PARTS for part in path.relative_to(root).parts))


def module_name(path, root=REPO_ROOT):
    relative = path.relative_to(root).with_suffix("")
    parts = list(relative.parts)
    if parts[0] in FLAT_FOLDERS and len(parts) == 2:
        return parts[1]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def folder_of(path, root=REPO_ROOT):
    """The top-level folder a file belongs to (a root file, such as tasks.py, is its own)."""
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else path.stem


class Repository:
    def __init__(self, root=REPO_ROOT):
        self.root = root
        self.files = {module_name(path, root): path for path in source_files(root)}
        self.trees = {name: ast.parse(path.read_text(), str(path)) for name, path in self.files.items()}
        self.by_last_name = {}
        for name in self.files:
            self.by_last_name.setdefault(name.rpartition(".")[2], []).append(name)
        self.bare = set()   # (module, line, target): a package module imported by its bare name (needs a sys.path edit)

    def resolve(self, dotted):
        """The project module `dotted` names (or the module it is an attribute of), None for a third-party one."""
        while dotted:
            if dotted in self.files:
                return dotted
            dotted = dotted.rpartition(".")[0]
        return None

    def resolve_bare(self, first, importer, line):
        """A package module (training.train) imported as a top-level one (train), which works only with its folder
        on sys.path: recorded in `bare`, and followed so that its cycles show."""
        candidates = [name for name in self.by_last_name.get(first, ()) if "." in name]
        if len(candidates) == 1:
            self.bare.add((importer, line, candidates[0]))
            return candidates[0]
        return None

    def imports(self, name):
        """(line, imported module, names taken from it) of every import in module `name`, ours only."""
        package = name if self.files[name].name == "__init__.py" else name.rpartition(".")[0]
        found = []
        for node in ast.walk(self.trees[name]):
            if isinstance(node, ast.Import):
                found += [(node.lineno, target, ()) for alias in node.names
                          if (target := self.resolve(alias.name) or self.resolve_bare(alias.name, name, node.lineno))]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(filter(None, [*anchor, base]))
                for alias in node.names:
                    target = self.resolve(f"{base}.{alias.name}") if base else self.resolve(alias.name)
                    if not target and node.level == 0 and "." not in base:
                        target = self.resolve_bare(base, name, node.lineno)
                        if target:
                            found.append((node.lineno, target, (alias.name,)))
                        continue
                    if target:
                        taken = () if target == f"{base}.{alias.name}" else (alias.name,)
                        found.append((node.lineno, target, taken))
        return found

    def graph(self):
        return {name: {target for _line, target, _names in self.imports(name) if target != name}
                for name in self.files}

    def folder(self, name):
        return folder_of(self.files[name], self.root)


def cycles(graph):
    """The strongly connected components of more than one node (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]

    def visit(start):
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while (member := stack.pop()) != node:
                        on_stack.discard(member)
                        component.add(member)
                    on_stack.discard(node)
                    component.add(node)
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter[0]
                counter[0] += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def sys_path_edits(tree):
    """Lines that change sys.path: a call of one of its methods, or an assignment to it or to a slice of it."""
    def is_sys_path(node):
        return (isinstance(node, ast.Attribute) and node.attr == "path" and isinstance(node.value, ast.Name)
                and node.value.id == "sys")

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and is_sys_path(node.func.value):
            lines.append(node.lineno)
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AugAssign) else []
        for target in targets:
            if is_sys_path(target) or (isinstance(target, ast.Subscript) and is_sys_path(target.value)):
                lines.append(node.lineno)
    return lines


REPOSITORY = Repository()


def where(name, line):
    return f"{REPOSITORY.files[name].relative_to(REPO_ROOT)}:{line}"


def test_no_module_imports_itself_back_through_others():
    assert cycles(REPOSITORY.graph()) == []


def test_no_two_top_level_folders_import_each_other():
    graph = REPOSITORY.graph()
    folders = {}
    for name, targets in graph.items():
        folders.setdefault(REPOSITORY.folder(name), set()).update(
            REPOSITORY.folder(target) for target in targets if REPOSITORY.folder(target) != REPOSITORY.folder(name))
    assert cycles(folders) == []


def test_only_tests_import_the_tests_and_no_test_module_imports_another():
    wrong = []
    for name in REPOSITORY.files:
        for line, target, _names in REPOSITORY.imports(name):
            if REPOSITORY.folder(target) != "tests":
                continue
            if REPOSITORY.folder(name) != "tests" or target.startswith("test_"):
                wrong.append(f"{where(name, line)} imports {target}")
    assert wrong == []


def test_no_private_name_is_imported_from_another_module():
    wrong = [f"{where(name, line)} takes {taken} from {target}"
             for name in REPOSITORY.files for line, target, names in REPOSITORY.imports(name)
             for taken in names if taken.startswith("_") and not taken.startswith("__")]
    assert wrong == []


def test_package_modules_are_imported_by_their_package_path():
    REPOSITORY.graph()
    bare = sorted(f"{where(name, line)} imports {target} by its bare name" for name, line, target in REPOSITORY.bare)
    assert bare == []


def test_sys_path_is_edited_only_where_a_platform_forces_it():
    edits = [where(name, line) for name, tree in REPOSITORY.trees.items() for line in sys_path_edits(tree)
             if REPOSITORY.files[name].relative_to(REPO_ROOT).as_posix() not in SYS_PATH_EDITS_ALLOWED]
    assert edits == []


def test_the_rules_see_what_they_guard_against(tmp_path):
    """The checks themselves, on a small tree that breaks each rule once."""
    files = {"a/__init__.py": "", "a/x.py": "def f():\n    from b.y import g\n", "b/__init__.py": "",
             "b/y.py": "from a.x import f\nfrom a.x import _hidden\nimport sys\nsys.path.insert(0, 'z')\n",
             "tests/helper.py": "", "bench/z.py": "import helper\n", "tests/test_one.py": "import test_two\n",
             "tests/test_two.py": "", "c/w.py": "import z\nfrom y import g\n"}
    for relative, text in files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    tree = Repository(tmp_path)
    assert cycles(tree.graph()) == [["a.x", "b.y"]]
    assert ("b.y" in tree.graph()["a.x"]) and tree.folder("helper") == "tests"
    assert [(target, names) for _line, target, names in tree.imports("b.y")] == [("a.x", ("f",)), ("a.x", ("_hidden",))]
    assert tree.graph()["bench.z"] == {"helper"} and tree.graph()["test_one"] == {"test_two"}
    assert sys_path_edits(tree.trees["b.y"]) == [4]
    assert tree.graph()["c.w"] == {"bench.z", "b.y"} and sorted(tree.bare) == [("c.w", 1, "bench.z"), ("c.w", 2, "b.y")]
