"""
The shape of the repository (README "Files"): no top-level module imports one that imports it back, and each
stays a size a reader can hold. Reads the files as text, a second:

    python -m pytest -q tests/test_layout.py
"""
import ast
import io
import tokenize

from conftest import REPO

MODULES = {path.stem: path for path in sorted(REPO.glob('*.py'))}
MAX_CODE_LINES = {'model': 600}  # GPT, BERT, every head and the modern options in one file
DEFAULT_MAX_CODE_LINES = 650


def project_imports(path):
    """The project modules a file imports, at the top or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split('.')[0])
    return names & set(MODULES) - {path.stem}


def code_lines(path):
    """Lines with code on them: not blank, not only a comment, not part of a docstring."""
    source = path.read_text()
    docstrings = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                docstrings.update(range(first.lineno, first.end_lineno + 1))
    lines = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                              tokenize.ENDMARKER):
            lines.update(range(token.start[0], token.end[0] + 1))
    return len(lines - docstrings)


def test_no_module_imports_one_that_imports_it_back():
    graph = {name: project_imports(path) for name, path in MODULES.items()}

    def reachable(start):
        seen, todo = set(), [start]
        while todo:
            for name in graph[todo.pop()] - seen:
                seen.add(name)
                todo.append(name)
        return seen

    cycles = sorted(name for name in graph if name in reachable(name))
    assert not cycles, f"modules on an import cycle: {cycles}"
    assert not project_imports(MODULES['model'])  # the lowest room: torch and the standard library only


def test_model_imports_only_torch_and_the_standard_library():
    tree = ast.parse(MODULES['model'].read_text())
    imported = {alias.name.split('.')[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split('.')[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {'torch', 'math', 'inspect', 'json', 're', 'dataclasses', 'functools', 'contextlib', 'typing'}, imported


def test_modules_stay_readable_sizes():
    sizes = {name: code_lines(path) for name, path in MODULES.items()}
    too_long = {name: n for name, n in sizes.items() if n > MAX_CODE_LINES.get(name, DEFAULT_MAX_CODE_LINES)}
    assert not too_long, f"code lines over the limit: {too_long} (all: {sizes})"
