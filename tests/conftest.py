"""
Shared fixtures for the test suite (CPU, tiny configs):

    python -m pytest -q                 # the whole suite, ~10 minutes on two cores
    python -m pytest -q -m gpu          # only the checks that need CUDA (skipped without it)
"""
import os
import random
import sys
from pathlib import Path

# Tiny tensors gain nothing from two threads, and when the cores are busy OpenMP's spinning threads stall each op;
# subprocesses (train.py, torchrun) inherit this too.
os.environ.setdefault('OMP_NUM_THREADS', '1')

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


# The tests that assert a model learned something (marker `learned`) train with this seed and dtype. Rerun them
# on others to see their margins, e.g.
#   SCRATCHLM_TEST_SEED=2 SCRATCHLM_TEST_DTYPE=bfloat16 SCRATCHLM_TEST_RECORD=/tmp/reached.jsonl pytest -q -m learned
LEARN_SEED = int(os.environ.get('SCRATCHLM_TEST_SEED', '0'))
LEARN_DTYPE = os.environ.get('SCRATCHLM_TEST_DTYPE', 'float32')


def reached(name, value, threshold):
    """What a learned-quality test reached, written (one JSON line) to $SCRATCHLM_TEST_RECORD when that is set."""
    path = os.environ.get('SCRATCHLM_TEST_RECORD')
    if path:
        import json
        with open(path, 'a') as f:
            f.write(json.dumps({'test': name, 'seed': LEARN_SEED, 'dtype': LEARN_DTYPE, 'reached': value,
                                'threshold': threshold}) + '\n')
    return value


def tiny_model_config(**overrides):
    """The suite's standard tiny model: 2 layers, 2 heads, 32 wide, block 16, vocab 64."""
    from model import ModelConfig
    args = dict(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=64, dropout=0.0, bias=True)
    args.update(overrides)
    return ModelConfig(**args)


def with_config(model, **changes):
    """A copy of model, weights and all, with config fields changed (e.g. fused_loss=False for the plain loss path)."""
    from dataclasses import replace
    from model import Transformer
    copy = Transformer(replace(model.config, **changes))
    copy.load_state_dict(model.state_dict())
    return copy.to(next(model.parameters()).device).train(model.training)


@pytest.fixture
def tiny_config():
    """A factory: tiny_config(causal=False, ...) -> ModelConfig."""
    return tiny_model_config


def make_english_text(n_sentences=800, seed=0):
    """~45 KB of varied, news-like English with numbers, one or a few sentences a line."""
    rng = random.Random(seed)
    subjects = ['The council', 'A spokesman for the firm', 'The minister', 'Our reporter', 'The company',
                'Local residents', 'The home team', 'Scientists in Leeds', 'The bank', 'Shoppers', 'The judge',
                'Fans of the club']
    verbs = ['said', 'announced', 'reported', 'confirmed', 'denied', 'expected', 'warned', 'claimed']
    objects = ['a rise of {n} per cent in sales', 'that {n} jobs would be cut by {y}',
               'a new plan worth {n} million pounds', 'the match ended {a}-{b}', 'profits of {n} billion',
               'talks on {d} March', 'that prices fell for the {o} month in a row', 'a record crowd of {n},000',
               'an inquiry into the crash on {d} June', "that it wouldn't comment on {y}'s figures"]
    ordinals = ['second', 'third', 'fourth', 'fifth', 'sixth']
    lines = []
    for _ in range(n_sentences):
        sentence = f"{rng.choice(subjects)} {rng.choice(verbs)} " + rng.choice(objects).format(
            n=rng.randint(2, 950), y=rng.randint(1990, 2024), a=rng.randint(0, 5), b=rng.randint(0, 5),
            d=rng.randint(1, 28), o=rng.choice(ordinals)) + rng.choice(['.', '.', '.', '!', '?'])
        if lines and rng.random() < 0.4:
            lines[-1] += ' ' + sentence
        else:
            lines.append(sentence)
    return '\n'.join(lines) + '\n'


@pytest.fixture(scope='session')
def char_dataset(tmp_path_factory):
    """A tiny char-level dataset prepared by prepare.prepare: (data_root, name, meta)."""
    import prepare
    root = tmp_path_factory.mktemp('data')
    source = root / 'tiny.txt'
    source.write_text(make_english_text(), encoding='utf-8')
    data_dir = prepare.prepare(source=str(source), name='tiny', tokenizer='char', out_root=str(root))
    return str(root), 'tiny', prepare.load_meta(data_dir)


def call_script_main(monkeypatch, capsys, script, *args):
    """Run train.py's or sample.py's main in this process through configurator.run_main, as the CLI does, with fresh
    globals; return (exit status, stderr). Fast for error paths that stop before training."""
    import importlib
    import signal
    import configurator
    module = importlib.reload(importlib.import_module(script))
    monkeypatch.setattr(sys, 'argv', [f'{script}.py', *map(str, args)])
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    capsys.readouterr()
    try:
        with pytest.raises(SystemExit) as info:
            configurator.run_main(module.main)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return info.value.code, capsys.readouterr().err


@pytest.fixture
def script_main(monkeypatch, capsys):
    """call(script, *args) -> (exit status, stderr) of that script's main run in this process."""
    return lambda script, *args: call_script_main(monkeypatch, capsys, script, *args)
