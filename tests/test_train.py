"""
Tests for train.py, sample.py, checkpoints.py and optim.get_lr: end-to-end subprocess runs on a tiny char-level corpus
(exact resume, DDP equivalence, SIGTERM, continued pretraining, bad input) and unit tests of the helpers.

    python -m pytest -q tests/test_train.py
"""
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import checkpoints
import configurator
import optim
import train
from conftest import REPO

# the tiny model and run every subprocess uses; each test adds what it is about
TINY = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=8', '--dtype=float32',
        '--device=cpu', '--warmup_iters=2', '--learning_rate=1e-2', '--eval_iters=2', '--log_interval=1']


def data_args(char_dataset):
    root, name, _ = char_dataset
    return [f'--data_root={root}', f'--dataset={name}']


def run(script, *args, launcher=(), check=True, timeout=180, env=None):
    """Run a repository script with this Python from the repository root; fail with its stderr if it fails."""
    proc = subprocess.run([sys.executable, *launcher, script, *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        pytest.fail(f"{script} exited {proc.returncode}\nstdout tail:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-4000:]}")
    return proc


def metrics(out_dir):
    with open(os.path.join(out_dir, 'metrics.jsonl')) as f:
        return [json.loads(line) for line in f]


def load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def assert_one_line_error(code, stderr, *needles):
    """Exit status 2 and exactly one 'error: ...' line on stderr that mentions every needle."""
    assert 'Traceback' not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith('error: '), (code, stderr)
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture(scope='module')
def trained_run(char_dataset, tmp_path_factory):
    """One 20-iteration run of the tiny model (evals at 0, 10, 20): its out_dir and stdout."""
    out_dir = tmp_path_factory.mktemp('trained') / 'run'
    proc = run('train.py', *TINY, *data_args(char_dataset), f'--out_dir={out_dir}', '--max_iters=20',
               '--eval_interval=10')
    return str(out_dir), proc.stdout


# -----------------------------------------------------------------------------
# end to end

def test_train_then_sample(trained_run, char_dataset):
    """prepare -> train -> sample: checkpoints and metrics are written, loss goes down, sample.py prints text."""
    out_dir, stdout = trained_run
    records = metrics(out_dir)
    evals = [r for r in records if 'val_loss' in r]
    logs = [r for r in records if 'train_loss' in r]
    assert [r['iter'] for r in evals] == [0, 10, 20]
    assert [r['iter'] for r in logs] == list(range(1, 21))
    assert abs(evals[0]['val_loss'] - math.log(64)) < 0.15  # char vocab 51 padded to 64
    assert evals[-1]['val_loss'] < evals[0]['val_loss'] - 0.5
    assert logs[-1]['train_loss'] < logs[0]['train_loss'] - 0.5
    assert all(math.isfinite(r['train_loss']) and r['tokens_per_s'] > 0 for r in logs)
    for name in ('best.pt', 'last.pt', 'config.json'):
        assert os.path.exists(os.path.join(out_dir, name)), name
    assert not [f for f in os.listdir(out_dir) if '.tmp-' in f]
    checkpoint = load(os.path.join(out_dir, 'last.pt'))
    assert checkpoint['iter_num'] == 20 and checkpoint['meta']['tokenizer'] == 'char'
    assert checkpoint['config']['n_layer'] == 2 and checkpoint['config']['max_iters'] == 20  # reproducible
    assert checkpoint['model_args']['vocab_size'] == 64
    assert checkpoint['best_val_loss'] == pytest.approx(min(r['val_loss'] for r in evals))

    output = os.path.join(out_dir, 'samples.txt')
    proc = run('sample.py', f'--out_dir={out_dir}', '--start=The council', '--num_samples=2',
               '--max_new_tokens=40', '--device=cpu', f'--output={output}')
    assert f'wrote 2 samples to {output}' in proc.stdout
    samples = open(output, encoding='utf-8').read().split('\n---------------\n')
    assert len(samples) == 2, samples
    chars = set(char_dataset[2]['chars'])
    for sample in samples:
        assert sample.startswith('The council') and len(sample.rstrip('\n')) > len('The council')
        assert set(sample.replace('<|endoftext|>', '')) <= chars | {'\n'}


def test_exact_resume(char_dataset, tmp_path):
    """Stopping at iter 6 and resuming gives bit-identical weights, optimizer state and RNG to an unbroken run,
    with dropout on and evaluations in between (evaluation must not consume the global RNG)."""
    common_args = [*TINY, *data_args(char_dataset), '--dropout=0.1', '--lr_decay_iters=12', '--eval_interval=4']
    run('train.py', *common_args, f'--out_dir={tmp_path / "a"}', '--max_iters=12')
    run('train.py', *common_args, f'--out_dir={tmp_path / "b"}', '--max_iters=6')
    assert load(tmp_path / 'b' / 'last.pt')['iter_num'] == 6
    run('train.py', f'--out_dir={tmp_path / "b"}', '--init_from=resume', '--max_iters=12')
    a, b = load(tmp_path / 'a' / 'last.pt'), load(tmp_path / 'b' / 'last.pt')
    assert a['iter_num'] == b['iter_num'] == 12
    assert b['config']['dropout'] == 0.1 and b['config']['lr_decay_iters'] == 12  # taken from the checkpoint
    assert a['model'].keys() == b['model'].keys()
    for name in a['model']:
        assert torch.equal(a['model'][name], b['model'][name]), name
    assert a['optimizer']['param_groups'] == b['optimizer']['param_groups']
    assert a['optimizer']['state'].keys() == b['optimizer']['state'].keys()
    for index, state in a['optimizer']['state'].items():
        for key, value in state.items():
            assert torch.equal(value, b['optimizer']['state'][index][key]), (index, key)
    assert torch.equal(a['rng_states']['torch'], b['rng_states']['torch'])
    # the resumed run logged iterations 7..12 only, and evaluated at 8 and 12 as the unbroken one did
    resumed = [r for r in metrics(tmp_path / 'b') if 'train_loss' in r]
    assert [r['iter'] for r in resumed] == list(range(1, 13))
    evals_a = {r['iter']: r['val_loss'] for r in metrics(tmp_path / 'a') if 'val_loss' in r}
    evals_b = {r['iter']: r['val_loss'] for r in metrics(tmp_path / 'b') if 'val_loss' in r}
    assert set(evals_a) == {0, 4, 8, 12} and set(evals_b) == {0, 4, 6, 8, 12}
    assert all(evals_a[i] == evals_b[i] for i in evals_a)


@pytest.mark.skipif(not torch.distributed.is_available(), reason='torch.distributed not built')
def test_ddp_matches_gradient_accumulation(char_dataset, tmp_path):
    """2 DDP processes x 1 micro-batch train the same model as 1 process x 2 micro-batches (fp32, fused AdamW)."""
    args = [*TINY, *data_args(char_dataset), '--max_iters=4', '--eval_interval=1000', '--eval_iters=1']
    threads = {'OMP_NUM_THREADS': '1'}
    run('train.py', *args, f'--out_dir={tmp_path / "ddp"}', '--gradient_accumulation_steps=1',
        launcher=('-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2'), env=threads)
    run('train.py', *args, f'--out_dir={tmp_path / "single"}', '--gradient_accumulation_steps=2', env=threads)
    ddp, single = load(tmp_path / 'ddp' / 'last.pt'), load(tmp_path / 'single' / 'last.pt')
    assert ddp['iter_num'] == single['iter_num'] == 4
    assert not any(k.startswith('module.') for k in ddp['model'])
    for name in single['model']:
        torch.testing.assert_close(ddp['model'][name], single['model'][name], atol=1e-5, rtol=0, msg=name)
    evals_ddp = [r for r in metrics(tmp_path / 'ddp') if 'val_loss' in r]
    evals_single = [r for r in metrics(tmp_path / 'single') if 'val_loss' in r]
    assert len(evals_ddp) == len(evals_single) == 2  # rank 0 alone writes the log
    assert evals_ddp[-1]['val_loss'] == pytest.approx(evals_single[-1]['val_loss'], abs=1e-4)
    assert evals_ddp[-1]['tokens'] == evals_single[-1]['tokens'] == 4 * 2 * 8 * 32


def test_sigterm_saves_and_resumes(char_dataset, tmp_path):
    """SIGTERM finishes the iteration, saves last.pt and exits 143; --init_from=resume continues from there."""
    out_dir = tmp_path / 'run'
    args = [*TINY, *data_args(char_dataset), f'--out_dir={out_dir}', '--eval_interval=100000']
    with open(tmp_path / 'stdout.txt', 'w') as stdout, open(tmp_path / 'stderr.txt', 'w') as stderr:
        proc = subprocess.Popen([sys.executable, 'train.py', *args, '--max_iters=100000'], cwd=REPO,
                                stdout=stdout, stderr=stderr)
        try:
            deadline = time.time() + 90
            while time.time() < deadline and proc.poll() is None:
                if (out_dir / 'metrics.jsonl').exists() and any(r.get('iter', 0) >= 3 and 'train_loss' in r
                                                                for r in metrics(out_dir)):
                    break
                time.sleep(0.2)
            assert proc.poll() is None, (tmp_path / 'stderr.txt').read_text()[-3000:]
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stderr_text = (tmp_path / 'stderr.txt').read_text()
    assert code == 128 + signal.SIGTERM, stderr_text[-3000:]
    assert 'Traceback' not in stderr_text
    stopped = load(out_dir / 'last.pt')['iter_num']
    assert stopped >= 3 and f'saved {out_dir}/last.pt at iter {stopped}' in (tmp_path / 'stdout.txt').read_text()
    run('train.py', f'--out_dir={out_dir}', '--init_from=resume', f'--max_iters={stopped + 2}')
    assert load(out_dir / 'last.pt')['iter_num'] == stopped + 2
    logged = [r['iter'] for r in metrics(out_dir) if 'train_loss' in r]
    assert logged[-2:] == [stopped + 1, stopped + 2]
    assert logged[:-2] == list(range(1, len(logged) - 1))  # no iteration lost or repeated


def test_continued_pretraining(trained_run, char_dataset, tmp_path):
    """--init_from=<checkpoint> starts at iter 0 with its weights (the loss the source ended at), fresh schedule."""
    source_dir, _ = trained_run
    source = os.path.join(source_dir, 'last.pt')
    before = open(source, 'rb').read()
    source_final = [r for r in metrics(source_dir) if 'val_loss' in r][-1]['val_loss']
    out_dir = tmp_path / 'cont'
    run('train.py', *TINY, *data_args(char_dataset), f'--out_dir={out_dir}', f'--init_from={source}',
        '--max_iters=2', '--eval_interval=1000')
    evals = [r for r in metrics(out_dir) if 'val_loss' in r]
    assert evals[0]['iter'] == 0
    assert evals[0]['val_loss'] == pytest.approx(source_final, abs=1e-4)  # same weights, same eval batches
    assert evals[0]['val_loss'] < math.log(64) - 0.5
    checkpoint = load(out_dir / 'last.pt')
    assert checkpoint['iter_num'] == 2 and checkpoint['config']['init_from'] == source
    assert open(source, 'rb').read() == before  # the source checkpoint is untouched


# -----------------------------------------------------------------------------
# bad input: one line on stderr, exit status 2, nothing overwritten

def test_cli_unknown_key_is_one_line(char_dataset):
    """The real CLI: a misspelt key exits 2 with one 'error:' line naming the closest key, no traceback."""
    proc = run('train.py', *data_args(char_dataset), '--batch_sise=4', check=False, timeout=60)
    assert_one_line_error(proc.returncode, proc.stderr, "'batch_sise'", "did you mean 'batch_size'")


def test_bad_inputs(char_dataset, script_main, tmp_path):
    """Wrong type, missing dataset, a truncated .bin and a corpus smaller than one block are one-line errors."""
    root, name, _ = char_dataset
    assert_one_line_error(*script_main('train', '--batch_size=abc'), 'batch_size', 'abc')
    assert_one_line_error(*script_main('train', '--learning_rate=x'), 'learning_rate')
    assert_one_line_error(*script_main('train', *TINY, f'--data_root={root}', '--dataset=nope',
                                       f'--out_dir={tmp_path / "o1"}'), 'nope', 'prepare.py')
    shutil.copytree(os.path.join(root, name), tmp_path / 'data' / name)
    with open(tmp_path / 'data' / name / 'train.bin', 'r+b') as f:
        f.truncate(os.path.getsize(f.name) - 1)
    assert_one_line_error(*script_main('train', *TINY, f'--data_root={tmp_path / "data"}', f'--dataset={name}',
                                       f'--out_dir={tmp_path / "o2"}'), 'train.bin', 'truncated or corrupt')
    val_tokens = char_dataset[2]['splits']['val']['tokens']
    assert_one_line_error(*script_main('train', *TINY, *data_args(char_dataset), f'--block_size={val_tokens + 10}',
                                       f'--out_dir={tmp_path / "o3"}'), 'val split', '--block_size')
    assert not any((tmp_path / d).exists() for d in ('o1', 'o2', 'o3'))  # nothing written for a failed start


def test_bad_checkpoints(trained_run, char_dataset, script_main, tmp_path):
    """Resuming with a different model, or a block longer than the checkpoint's, is a one-line error that
    leaves the run untouched; sample.py on a missing run says so."""
    out_dir, _ = trained_run
    files = {name: open(os.path.join(out_dir, name), 'rb').read() for name in ('last.pt', 'metrics.jsonl')}
    assert_one_line_error(*script_main('train', f'--out_dir={out_dir}', '--init_from=resume', '--n_layer=3'),
                          'n_layer=2', 'asks for 3')
    assert_one_line_error(*script_main('train', *TINY, *data_args(char_dataset), '--block_size=64',
                                       f'--init_from={out_dir}/last.pt', f'--out_dir={tmp_path / "o"}'),
                          'block_size 32', 'block_size=64')
    assert_one_line_error(*script_main('train', f'--out_dir={tmp_path / "none"}', '--init_from=resume'),
                          'not found')
    assert {name: open(os.path.join(out_dir, name), 'rb').read() for name in files} == files
    assert_one_line_error(*script_main('sample', f'--out_dir={tmp_path / "none"}', '--device=cpu'), 'not found')


# -----------------------------------------------------------------------------
# helpers: the LR schedule, batches, checkpoints

SCHEDULE = dict(learning_rate=1.0, warmup_iters=10, decay_iters=110, min_lr=0.01)


@pytest.mark.parametrize('schedule', ['cosine', 'linear', 'exponential', 'constant'])
def test_lr_warmup(schedule):
    """Linear warmup rises strictly to learning_rate, which is reached at warmup_iters."""
    lrs = [optim.get_lr(it, schedule, **SCHEDULE) for it in range(11)]
    assert all(0 < a < b for a, b in zip(lrs, lrs[1:]))
    assert lrs[0] == pytest.approx(1 / 11) and lrs[10] == 1.0


@pytest.mark.parametrize('schedule,midpoint', [('cosine', (1.0 + 0.01) / 2), ('linear', (1.0 + 0.01) / 2),
                                               ('exponential', math.sqrt(1.0 * 0.01))])
def test_lr_decay(schedule, midpoint):
    """Decaying schedules fall monotonically from learning_rate to min_lr at decay_iters, and stay there."""
    lrs = [optim.get_lr(it, schedule, **SCHEDULE) for it in range(10, 200)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert optim.get_lr(60, schedule, **SCHEDULE) == pytest.approx(midpoint)
    assert optim.get_lr(109, schedule, **SCHEDULE) == pytest.approx(0.01, abs=0.01)
    assert optim.get_lr(110, schedule, **SCHEDULE) == 0.01 == optim.get_lr(10 ** 6, schedule, **SCHEDULE)


def test_lr_constant_and_unknown():
    """'constant' holds learning_rate after warmup; an unknown schedule is a UserError."""
    assert {optim.get_lr(it, 'constant', **SCHEDULE) for it in (10, 50, 110, 10 ** 6)} == {1.0}
    assert optim.get_lr(5, 'exponential', 1.0, 0, 10, 0.0) > 0  # min_lr 0 is fine for exponential
    with pytest.raises(configurator.UserError, match='cosine'):
        optim.get_lr(50, 'step', **SCHEDULE)


def test_get_batch_is_keyed():
    """Batches are next-token pairs fixed by their key alone, and stay inside the data."""
    import numpy as np
    data = np.arange(100, dtype=np.uint16)
    x, y = train.get_batch(data, 6, 10, [1337, 0, 5, 1], 'cpu')
    assert x.shape == y.shape == (6, 10) and x.dtype == torch.int64
    assert torch.equal(y, x + 1) and int(y.max()) <= 99
    x2, _ = train.get_batch(data, 6, 10, [1337, 0, 5, 1], 'cpu')
    x3, _ = train.get_batch(data, 6, 10, [1337, 0, 5, 0], 'cpu')
    assert torch.equal(x, x2) and not torch.equal(x, x3)
    x4, y4 = train.get_batch(np.arange(11, dtype=np.uint16), 2, 10, [0], 'cpu')  # exactly one block + 1
    assert torch.equal(x4[0], torch.arange(10)) and torch.equal(y4[1], torch.arange(1, 11))


def test_save_checkpoint_is_atomic(tmp_path, monkeypatch):
    """A save that dies half-way leaves the previous checkpoint intact and no temp file behind."""
    path = str(tmp_path / 'last.pt')
    checkpoints.save_checkpoint(path, {'model': {'w': torch.ones(3)}, 'model_args': {}, 'iter_num': 1})
    before = open(path, 'rb').read()
    real_save = torch.save

    def dies_half_way(obj, f, *args, **kwargs):
        f.write(b'half a checkpoint')
        raise RuntimeError('disk full')
    monkeypatch.setattr(torch, 'save', dies_half_way)
    with pytest.raises(RuntimeError, match='disk full'):
        checkpoints.save_checkpoint(path, {'model': {'w': torch.zeros(3)}, 'model_args': {}, 'iter_num': 2})
    assert open(path, 'rb').read() == before
    assert os.listdir(tmp_path) == ['last.pt']
    monkeypatch.setattr(torch, 'save', real_save)
    checkpoints.save_checkpoint(path, {'model': {'module._orig_mod.w': torch.zeros(3)}, 'model_args': {}, 'iter_num': 2})
    loaded = checkpoints.read(path)
    assert loaded['iter_num'] == 2 and torch.equal(loaded['model']['w'], torch.zeros(3))
    assert checkpoints.read(str(tmp_path))['iter_num'] == 2  # a directory means its last.pt


def test_load_checkpoint_errors(tmp_path):
    """Missing, damaged and foreign checkpoint files are UserErrors, not tracebacks from torch.load."""
    with pytest.raises(configurator.UserError, match='not found'):
        checkpoints.read(str(tmp_path / 'nope.pt'))
    (tmp_path / 'garbage.pt').write_bytes(b'\x00not a checkpoint' * 10)
    with pytest.raises(configurator.UserError, match='damaged or not a checkpoint'):
        checkpoints.read(str(tmp_path / 'garbage.pt'))
    torch.save({'weights': 1}, tmp_path / 'foreign.pt')
    with pytest.raises(configurator.UserError, match='not a scratchlm checkpoint'):
        checkpoints.read(str(tmp_path / 'foreign.pt'))


def test_clean_state_dict():
    """'_orig_mod.' (torch.compile) and 'module.' (DDP) prefixes are stripped, in any order and nesting."""
    w = torch.zeros(1)
    cleaned = checkpoints.clean_state_dict({'_orig_mod.a.weight': w, 'module.b': w, 'module._orig_mod.c': w,
                                       '_orig_mod.module.d': w, 'e.module.f': w, 'g': w})
    assert list(cleaned) == ['a.weight', 'b', 'c', 'd', 'e.module.f', 'g']
    assert all(v is w for v in cleaned.values())


def test_model_from_checkpoint_round_trip(tiny_config, tmp_path):
    """model_args + state dict rebuild the same model (checkpoints.load of a saved .pt, checkpoints.model_of of a
    dict); dropout can be changed on the way."""
    from model import Transformer, config_dict
    torch.manual_seed(0)
    model = Transformer(tiny_config())
    checkpoint = {'model': model.state_dict(), 'model_args': config_dict(model.config), 'meta': {'tokenizer': 'gpt2'}}
    checkpoints.save_checkpoint(str(tmp_path / 'm.pt'), checkpoint)
    loaded, meta, saved = checkpoints.load(str(tmp_path / 'm.pt'), dropout=0.2)
    assert meta == {'tokenizer': 'gpt2'} and saved['model_args'] == checkpoint['model_args']
    assert loaded.config.dropout == 0.2 and checkpoints.model_of(checkpoint).config.dropout == 0.0
    rebuilt = checkpoints.model_of(checkpoint, dropout=0.2)
    assert rebuilt.config.dropout == 0.2 and rebuilt.config.n_layer == 2
    for (name, a), (_, b) in zip(model.state_dict().items(), rebuilt.state_dict().items()):
        assert torch.equal(a, b), name
    assert rebuilt.lm_head.weight is rebuilt.transformer.wte.weight  # tying survives loading


def test_resume_compares_every_field_but_the_changeable_ones(tiny_config):
    """Resuming refuses a model setting that differs from the checkpoint's, for every ModelConfig field (a new one
    too, with no list to add it to), except those marked changeable (dropout, fused_loss)."""
    import train
    from model import config_dict
    saved = config_dict(tiny_config())
    train.check_resumable(saved, {**saved, 'dropout': 0.3, 'fused_loss': False}, 'last.pt')
    for field, value in (('mlp', 'swiglu'), ('rope_theta', 500.0), ('n_kv_head', 1), ('layer_norm_eps', 1e-6)):
        with pytest.raises(configurator.UserError, match=f"has {field}=.* but the config asks for {value}"):
            train.check_resumable(saved, {field: value}, 'last.pt')
