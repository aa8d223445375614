"""
The shape of the repository (README "Files", docs/hacking.md): no top-level module imports one that imports it back,
each stays a size a reader can hold, the light modules stay light, every choice list and every task has one home,
and docs/hacking.md names files and definitions that exist. Reads the files as text, a few seconds:

    python -m pytest -q tests/test_layout.py
"""
import ast
import io
import re
import subprocess
import sys
import tokenize
from dataclasses import fields

import pytest

from conftest import REPO

MODULES = {path.stem: path for path in sorted(REPO.glob('*.py'))}
MAX_CODE_LINES = {'model': 450}  # the network alone: GPT, BERT, every head and every modern option
DEFAULT_MAX_CODE_LINES = 550
MAX_TOTAL_CODE_LINES = 5000
MAX_FUNCTION_LINES = 120
TRAINING_LOOPS = {('train', 'main'), ('finetune', 'main')}  # the two scripts' loops, read top to bottom
TORCH_FREE = ('configurator', 'files', 'corpus', 'metrics', 'prepare', 'tasks', 'scores', 'tokenizer', 'dedup')


def project_imports(path, top_level_only=False):
    """The project modules a file imports, at the top or (unless top_level_only) inside functions."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split('.')[0])
    return names & set(MODULES) - {path.stem}


def reachable(graph, start):
    seen, todo = set(), [start]
    while todo:
        for name in graph[todo.pop()] - seen:
            seen.add(name)
            todo.append(name)
    return seen


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
    cycles = sorted(name for name in graph if name in reachable(graph, name))
    assert not cycles, f"modules on an import cycle: {cycles}"
    assert not project_imports(MODULES['model'])  # the lowest room: torch and the standard library only


def test_model_imports_only_torch_and_the_standard_library():
    tree = ast.parse(MODULES['model'].read_text())
    imported = {alias.name.split('.')[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split('.')[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported - {'torch'} <= set(sys.stdlib_module_names), imported


def test_modules_stay_readable_sizes():
    sizes = {name: code_lines(path) for name, path in MODULES.items()}
    too_long = {name: n for name, n in sizes.items() if n > MAX_CODE_LINES.get(name, DEFAULT_MAX_CODE_LINES)}
    assert not too_long, f"code lines over the limit: {too_long} (all: {sizes})"


@pytest.mark.xfail(strict=True, reason="issue 28's target of 5,000 code lines in all is not reached yet (6,028 after round 15, "
                                       "docs/results.md); strict: remove this mark once it passes")
def test_the_whole_stays_readable():
    sizes = {name: code_lines(path) for name, path in MODULES.items()}
    assert sum(sizes.values()) <= MAX_TOTAL_CODE_LINES, f"{sum(sizes.values())} code lines in all: {sizes}"


def test_functions_stay_readable_sizes():
    """No function longer than MAX_FUNCTION_LINES lines (docstring and comments included), but the training loops."""
    long = {}
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (name, node.name) not in TRAINING_LOOPS:
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f'{name}.{node.name}'] = n
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


@pytest.mark.parametrize('module', TORCH_FREE)
def test_light_modules_do_not_import_torch(module):
    """prepare.py, tasks.py and the small rooms under them load without torch (nor the model)."""
    code = f"import sys, {module}; assert not {{'torch', 'model'}} & set(sys.modules), sorted(sys.modules)"
    proc = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_training_does_not_load_the_pictures_or_the_inspection_tools():
    """train.py imports neither plot.py, features.py nor sample.py, directly or through another module (plot is
    imported inside the loop, once there is something to draw); finetune.py needs no sample.py either."""
    graph = {name: project_imports(path, top_level_only=True) for name, path in MODULES.items()}
    assert not {'plot', 'features', 'sample'} & (reachable(graph, 'train') | graph['train'])
    assert not {'plot', 'features', 'sample'} & reachable(graph, 'finetune')
    code = "import sys, train; assert not {'plot', 'features', 'sample', 'matplotlib'} & set(sys.modules)"
    proc = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


# -----------------------------------------------------------------------------
# one source of truth per concept

def test_model_choices_and_ranges_live_on_the_fields():
    """configurator.py's own rules name no ModelConfig field: the model's choices and ranges are the fields' metadata,
    which configure reads; and no other module spells out a field's list of choices again."""
    import configurator
    from model import ModelConfig
    names = {f.name for f in fields(ModelConfig)}
    assert not names & (set(configurator.RULES) | set(configurator.CHOICES))
    ranges, choices = configurator.field_rules(ModelConfig)
    assert choices == {f.name: f.metadata['choices'] for f in fields(ModelConfig) if 'choices' in f.metadata}
    assert {'mlp', 'norm', 'pos_embedding', 'norm_position', 'activation'} <= set(choices)
    assert {'n_layer', 'n_head', 'n_embd', 'block_size', 'dropout', 'rope_theta'} <= set(ranges)
    field_choices = {frozenset(c) for c in choices.values() if len(c) > 1}
    for name, path in MODULES.items():
        if name == 'model':
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Tuple) and all(isinstance(e, ast.Constant) for e in node.elts) and node.elts:
                spelled = frozenset(e.value for e in node.elts)
                assert spelled not in field_choices, f"{name}.py:{node.lineno} repeats a ModelConfig field's choices"


def test_train_builds_the_model_from_the_fields():
    """train.py names no model option: its settings that are ModelConfig fields become the model (a new field is a
    setting of every script), and resuming compares the fields that are not marked changeable."""
    import configurator
    from model import ModelConfig
    source = MODULES['train'].read_text()
    assert 'MODEL_KEYS' not in source and 'settings_of(config, ModelConfig)' in source
    config = configurator.configure({'n_layer': 4}, ['--rope_theta=5e5', '--mlp=swiglu'], quiet=True,
                                    fields_of=ModelConfig)
    assert configurator.settings_of(config, ModelConfig)['rope_theta'] == 5e5 and config['n_layer'] == 4
    assert 'vocab_size' not in config and 'mlm_head' not in config  # derived by the script, not settings
    changeable = {f.name for f in fields(ModelConfig) if f.metadata.get('changeable')}
    assert changeable == {'dropout', 'fused_loss'}


def test_each_task_has_one_home():
    """Outside tasks.py no code compares a task's name (`task == 'ner'`, `meta['task'] in ('classification', ...)`)
    or keys a table by task names: the scripts ask the task's unit."""
    import model
    import tasks
    assert set(tasks.TASKS) == {'classification', 'ner', 'sft', 'qa'} and all(
        unit.name == name for name, unit in tasks.TASKS.items())
    assert tasks.IGNORE_INDEX == model.IGNORE_INDEX  # tasks.py spells it out only to stay torch-free
    names = set(tasks.TASKS)
    for module, path in MODULES.items():
        if module == 'tasks':
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                constants = {c.value for o in operands for c in ast.walk(o) if isinstance(c, ast.Constant)}
                named = {o.id for o in operands if isinstance(o, ast.Name)} | {
                    o.attr for o in operands if isinstance(o, ast.Attribute)} | {
                    s.slice.value for o in operands for s in [o] if isinstance(o, ast.Subscript)
                    and isinstance(s.slice, ast.Constant)}
                assert not constants & names, f"{module}.py:{node.lineno} compares a task name"
                assert 'task' not in named, f"{module}.py:{node.lineno} compares the task"
            if isinstance(node, ast.Dict):
                keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
                assert not keys & names, f"{module}.py:{node.lineno} keys a table by task names"


# -----------------------------------------------------------------------------
# docs/hacking.md stays true

def test_hacking_guide_names_what_exists():
    """Every line of docs/hacking.md like "`model.py` defines `MLP`" (or `ModelConfig.option`, `tests/test_x.py`)
    names a file that exists and, in it, a top-level definition (or a class's attribute) of that name."""
    text = (REPO / 'docs' / 'hacking.md').read_text()
    claims = re.findall(r'`([\w/]+\.py)` defines ((?:`[\w.]+`(?:, | and )?)+)', text)
    assert len(claims) >= 6, claims
    for file, names in claims:
        path = REPO / file
        assert path.is_file(), file
        tree = ast.parse(path.read_text())
        defined = {}
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                defined[node.name] = node
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    if isinstance(target, ast.Name):
                        defined[target.id] = node
        for name in re.findall(r'`([\w.]+)`', names):
            top, _, attr = name.partition('.')
            assert top in defined, f"docs/hacking.md: {file} defines no {top}"
            if attr:
                members = {n.name for n in ast.walk(defined[top]) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
                members |= {t.id for n in ast.walk(defined[top]) if isinstance(n, (ast.Assign, ast.AnnAssign))
                            for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)}
                assert attr in members, f"docs/hacking.md: {file}'s {top} has no {attr}"
    for test in set(re.findall(r'`(tests/test_\w+\.py)(?:::(\w+))?`', text)):
        file, name = test
        assert (REPO / file).is_file(), file
        if name:
            assert f'def {name}(' in (REPO / file).read_text(), f"{file} has no {name}"
