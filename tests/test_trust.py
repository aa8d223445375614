"""
The fault suite: what a careful user or an adversary does to a run, and what must hold (README "Reliability").
Checkpoints never run code, runs are never silently replaced, two runs never share an out_dir, a kill or a full
disk never leaves a broken checkpoint, a torn metrics log or a stray temp file, and nonsense settings stop at once
with one line. CPU, tiny char-level runs, under a minute:

    python -m pytest -q tests/test_trust.py
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import checkpoints
import configurator
import files
from metrics import MetricsLog
from conftest import REPO, tiny_model_config
from model import Transformer, config_dict
from test_train import TINY, assert_one_line_error, data_args, metrics, run


def wait_for(condition, proc, timeout=90, what='the run'):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        assert proc.poll() is None, f"{what} ended early ({proc.returncode})"
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def start(args, tmp_path, name='run'):
    """A train.py subprocess, its stdout/stderr in tmp_path/<name>.out / .err."""
    stdout, stderr = open(tmp_path / f'{name}.out', 'w'), open(tmp_path / f'{name}.err', 'w')
    return subprocess.Popen([sys.executable, 'train.py', *map(str, args)], cwd=REPO, stdout=stdout, stderr=stderr)


def stop(proc):
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


# -----------------------------------------------------------------------------
# 1. no code runs from a checkpoint

class Payload:
    """Unpickling this calls open(path, 'w'): the file's existence proves the pickle ran code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, 'w'))


def malicious_checkpoint(path, marker, meta, **model_overrides):
    """A working checkpoint (weights, model_args, meta) with a code payload hidden inside."""
    model = Transformer(tiny_model_config(vocab_size=meta['vocab_size'] + 4, block_size=32, **model_overrides))
    torch.save({'model': model.state_dict(), 'model_args': config_dict(model.config), 'meta': meta,
                'config': {'notes': Payload(marker)}, 'iter_num': 1, 'best_val_loss': 9.0}, path)


def test_malicious_pickle_never_runs(char_dataset, script_main, tmp_path):
    """Every script that reads a checkpoint refuses one that needs more than tensors and plain values, in one line,
    before the payload can run; --trust_checkpoint=True loads it (and says so)."""
    _, _, meta = char_dataset
    marker = tmp_path / 'pwned'
    evil = tmp_path / 'evil.pt'
    malicious_checkpoint(evil, marker, meta)
    finetuned = tmp_path / 'tuned'
    finetuned.mkdir()
    malicious_checkpoint(finetuned / 'best.pt', marker, {**meta, 'task': 'classification', 'label_names': ['a', 'b']})
    resume_dir = tmp_path / 'resume'
    resume_dir.mkdir()
    malicious_checkpoint(resume_dir / 'last.pt', marker, meta)
    calls = [
        ('train', *TINY, *data_args(char_dataset), f'--init_from={evil}', f'--out_dir={tmp_path / "t"}'),
        ('train', *TINY, *data_args(char_dataset), '--init_from=resume', f'--out_dir={resume_dir}'),
        ('finetune', f'--init_from={evil}', f'--out_dir={tmp_path / "f"}', '--device=cpu'),
        ('finetune', f'--out_dir={finetuned}', '--predict=some text', '--device=cpu'),
        ('sample', f'--init_from={evil}', '--device=cpu'),
        ('sample', f'--out_dir={finetuned}', '--device=cpu'),
        ('features', f'--init_from={evil}', f'--input={tmp_path / "texts.txt"}', f'--output={tmp_path / "f.npy"}',
         '--device=cpu'),
    ]
    (tmp_path / 'texts.txt').write_text('one text\n')
    for script, *args in calls:
        code, err = script_main(script, *args)
        assert_one_line_error(code, err, 'could run code', '--trust_checkpoint=True')
        assert not marker.exists(), f"{script} {args} ran the checkpoint's code"
    import plot
    with pytest.raises(SystemExit):
        configurator.run_main(lambda: plot.main(['attention', f'--init_from={evil}', '--device=cpu']))
    assert not marker.exists()
    # the explicit opt-in loads it, with a warning on stderr: here the payload does run
    checkpoint = checkpoints.read(str(evil), trust=True)
    assert marker.exists() and checkpoint['iter_num'] == 1


def test_every_checkpoint_kind_loads_weights_only(char_dataset, tmp_path):
    """GPT and BERT pretraining checkpoints (best.pt, last.pt, with optimizer, scaler and RNG states) and a
    fine-tuned one load with torch.load(weights_only=True): there is nothing in them that needs unpickling."""
    gpt, bert = tmp_path / 'gpt', tmp_path / 'bert'
    run('train.py', *TINY, *data_args(char_dataset), f'--out_dir={gpt}', '--max_iters=4', '--eval_interval=2')
    run('train.py', *TINY, *data_args(char_dataset), f'--out_dir={bert}', '--max_iters=2', '--eval_interval=2',
        '--objective=mlm', '--causal=False', '--norm_position=post', '--embedding_norm=True')
    rows = ''.join(f"text number {i} {'good' if i % 2 else 'bad'},{'pos' if i % 2 else 'neg'}\n" for i in range(40))
    (tmp_path / 'reviews.csv').write_text('text,label\n' + rows)
    tuned = tmp_path / 'tuned'
    run('finetune.py', f'--init_from={gpt}', f'--data={tmp_path / "reviews.csv"}', f'--out_dir={tuned}', '--epochs=1',
        '--batch_size=8', '--device=cpu', '--dtype=float32')
    for path in (gpt / 'best.pt', gpt / 'last.pt', bert / 'last.pt', tuned / 'best.pt'):
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
        assert 'model' in checkpoint and 'meta' in checkpoint, path
    assert 'rng_states' in torch.load(gpt / 'last.pt', weights_only=True)


def test_hf_weights_are_safetensors_only(tmp_path):
    """An HF directory with pytorch_model.bin alone (a pickle) is refused in one line unless the user opts in."""
    transformers = pytest.importorskip('transformers')
    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=16, vocab_size=64)
    config.save_pretrained(tmp_path / 'hf')
    torch.save(transformers.GPT2LMHeadModel(config).state_dict(), tmp_path / 'hf' / 'pytorch_model.bin')
    with pytest.raises(configurator.UserError, match='trust_checkpoint'):
        checkpoints.load(str(tmp_path / 'hf'))


def test_an_hf_shard_index_cannot_reach_outside_its_directory(tmp_path, monkeypatch):
    """model.safetensors.index.json names the shards to read (or download): a name with a directory in it ('../',
    an absolute path) is refused in one line, locally and from a hub repository, and nothing is written outside
    the cache."""
    import hf
    transformers = pytest.importorskip('transformers')
    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=16, vocab_size=64)
    for bad in ('../outside.safetensors', str(tmp_path / 'abs.safetensors'), 'sub/dir.safetensors'):
        local = tmp_path / 'local'
        config.save_pretrained(local)
        (local / hf.SAFETENSORS_INDEX).write_text(json.dumps({'weight_map': {'transformer.wte.weight': bad}}))
        with pytest.raises(configurator.UserError, match='only .safetensors files beside the index'):
            checkpoints.load(str(local))
    served = {'config.json': config.to_json_string(),
              hf.SAFETENSORS_INDEX: json.dumps({'weight_map': {'transformer.wte.weight': '../../../escaped.safetensors'}})}

    def fake_download(url, path):
        name = url.rsplit('/', 1)[1]
        if name not in served:
            raise OSError('404')
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            f.write(served[name])
    monkeypatch.setattr(hf, 'download', fake_download)
    monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path / 'cache'))
    with pytest.raises(configurator.UserError, match='only .safetensors files beside the index'):
        checkpoints.load('hf:someone/evil-model')
    written = {p.name for p in tmp_path.rglob('*') if p.is_file()}
    assert 'escaped.safetensors' not in written


# --- a sharded checkpoint's .metadata (a pickle torch writes) never runs code ---------------------------------

def pickled_str(s):
    data = s.encode()
    return b'\x8c' + bytes([len(data)]) + data if len(data) < 256 else b'X' + len(data).to_bytes(4, 'little') + data


def pickled_global(module, name):
    """STACK_GLOBAL: protocol 4 follows a dotted name attribute by attribute."""
    return pickled_str(module) + pickled_str(name) + b'\x93'


def call(callable_ops, *args):
    """REDUCE: callable(*args), each arg a str or already pickled ops (bytes)."""
    return callable_ops + b'(' + b''.join(pickled_str(a) if isinstance(a, str) else a for a in args) + b't' + b'R'


def crafted_metadata(marker, valid_index):
    """{case: the bytes of a .metadata} that run code (create marker) under an unpickler that admits too much."""
    touch = f'touch {marker}'
    via_getattr = lambda module, name, obj_ops, attr, *args: call(call(pickled_global(module, name), obj_ops, attr), *args)
    allowed = ('pathlib', 'torch', 'torch.serialization', 'torch.distributed.checkpoint.metadata',
               'torch.distributed.checkpoint.filesystem')
    cases = {f'{m}:os.system': call(pickled_global(m, 'os.system'), touch) for m in allowed}
    cases.update({
        'torch:builtins.open': call(pickled_global('torch', 'builtins.open'), str(marker), 'w'),
        'torch:builtins.exec': call(pickled_global('torch', 'builtins.exec'), f'open({str(marker)!r}, "w")'),
        'torch:importlib->subprocess': via_getattr('torch', 'builtins.getattr', call(pickled_global(
            'torch', 'importlib.import_module'), 'subprocess'), 'call', b'](' + pickled_str('touch') + pickled_str(
            str(marker)) + b'e'),
        'torch.serialization:sys.modules->os': via_getattr('torch', 'builtins.getattr', call(pickled_global(
            'torch.serialization', 'sys.modules.get'), 'os'), 'system', touch),
        'os.system': call(pickled_global('os', 'system'), touch),
        'posix.system': call(pickled_global('posix', 'system'), touch),
        'builtins.open': call(pickled_global('builtins', 'open'), str(marker), 'w'),
        'subprocess.call': call(pickled_global('subprocess', 'call'), b'](' + pickled_str('touch') + pickled_str(str(marker)) + b'e'),
        'INST os.system': b'(' + pickled_str(touch) + b'ios\nsystem\n',
        'OBJ builtins.open': b'(' + pickled_global('builtins', 'open') + pickled_str(str(marker)) + pickled_str('w') + b'o',
        'NEWOBJ disallowed': pickled_global('subprocess', 'Popen') + b')' + b'\x81',
        'REDUCE allowed, not an index': call(pickled_global('torch.serialization', '_get_layout'), 'torch.strided'),
        'NEWOBJ + BUILD allowed, not an index': pickled_global('torch.distributed.checkpoint.metadata', 'Metadata')
            + b')' + b'\x81' + b'}' + pickled_str('state_dict_metadata') + pickled_str('x') + b's' + b'b',
        'persistent_load': pickled_str('payload') + b'Q',
        'payload before the index': call(pickled_global('pathlib', 'os.system'), touch) + b'0' + valid_index,
        'payload after the index': valid_index + call(pickled_global('pathlib', 'os.system'), touch) + b'0',
        'a second pickle after the index': valid_index + b'.' + b'\x80\x04' + call(pickled_global('pathlib', 'os.system'), touch),
    })
    return {case: (ops if ops.startswith(b'\x80') else b'\x80\x04' + ops) + (b'' if ops.endswith(b'.') else b'.')
            for case, ops in cases.items()}


def sharded_checkpoint(path, meta):
    """A small .dcp directory as fsdp.save_sharded writes one (model tensors + checkpoint.json); returns the bytes
    of its index without PROTO and STOP, protocol 2, so that other opcodes can go around it."""
    import pickle
    import torch.distributed.checkpoint as dcp
    model = Transformer(tiny_model_config(vocab_size=meta['vocab_size'] + 4, block_size=32))
    dcp.save({'model': model.state_dict()}, storage_writer=dcp.FileSystemWriter(str(path)), no_dist=True)
    files.write_json(os.path.join(path, checkpoints.SHARDED_JSON), {
        'model_args': config_dict(model.config), 'meta': meta, 'config': {}, 'iter_num': 1, 'best_val_loss': 9.0})
    with open(path / '.metadata', 'rb') as f:
        index = checkpoints.SafeCheckpointReader.Unpickler(f).load()
    return pickle.dumps(index, protocol=2)[2:-1]


def test_a_crafted_sharded_index_never_runs_code(char_dataset, script_main, tmp_path):
    """Every crafted .metadata (dotted names inside the allowed modules reaching os, sys, builtins, subprocess and
    importlib; REDUCE, INST, OBJ, NEWOBJ and BUILD on allowed and other callables; a persistent id; a payload
    before or after a real index) is refused in one line and runs nothing; every script that reads checkpoints
    refuses it with exit code 2, and the untouched checkpoint still loads."""
    _, _, meta = char_dataset
    marker = tmp_path / 'payload-ran'
    path = tmp_path / 'run' / 'best.dcp'
    valid_index = sharded_checkpoint(path, meta)
    original = (path / '.metadata').read_bytes()
    assert set(checkpoints.read(str(path))['model']) == set(Transformer(tiny_model_config(
        vocab_size=meta['vocab_size'] + 4, block_size=32)).state_dict())
    for case, payload in crafted_metadata(marker, valid_index).items():
        (path / '.metadata').write_bytes(payload)
        with pytest.raises(configurator.UserError) as refused:
            checkpoints.read(str(path))
        assert '\n' not in str(refused.value) and not marker.exists(), (case, str(refused.value))
    (path / '.metadata').write_bytes(crafted_metadata(marker, valid_index)['pathlib:os.system'])
    texts = tmp_path / 'texts.txt'
    texts.write_text('some text\n')
    for script, *args in [('sample', f'--init_from={path}'), ('sample', f'--out_dir={path.parent}'),
                          ('export', f'--init_from={path}', f'--to={tmp_path / "hf"}'),
                          ('finetune', f'--init_from={path}', f'--out_dir={tmp_path / "ft"}'),
                          ('train', f'--init_from={path}', f'--out_dir={tmp_path / "tr"}', *data_args(char_dataset)),
                          ('plot', 'attention', f'--out_dir={path.parent}'),
                          ('features', f'--out_dir={path.parent}', f'--input={texts}', f'--output={tmp_path / "f.npy"}'),
                          ('fsdp', str(path.parent))]:
        code, stderr = script_main(script, *args)
        assert_one_line_error(code, stderr, 'refused')
        assert not marker.exists(), script
    (path / '.metadata').write_bytes(original)
    checkpoints.read(str(path))


# -----------------------------------------------------------------------------
# 2. no run is lost

def test_train_refuses_to_replace_a_run(char_dataset, script_main, tmp_path):
    """Training from scratch into an out_dir that holds a run stops with one line and leaves it as it was;
    --overwrite=True replaces it (the old log kept aside), --init_from=resume continues it."""
    out_dir = tmp_path / 'run'
    run('train.py', *TINY, *data_args(char_dataset), f'--out_dir={out_dir}', '--max_iters=4', '--eval_interval=2')
    before = {name: (out_dir / name).read_bytes() for name in ('best.pt', 'last.pt', 'metrics.jsonl')}
    code, err = script_main('train', *TINY, *data_args(char_dataset), f'--out_dir={out_dir}', '--max_iters=2')
    assert_one_line_error(code, err, 'already holds a run', '--init_from=resume', '--overwrite=True')
    assert {name: (out_dir / name).read_bytes() for name in before} == before
    run('train.py', f'--out_dir={out_dir}', '--init_from=resume', '--max_iters=6')
    assert torch.load(out_dir / 'last.pt', weights_only=True)['iter_num'] == 6
    run('train.py', *TINY, *data_args(char_dataset), f'--out_dir={out_dir}', '--max_iters=2', '--eval_interval=2',
        '--overwrite=True')
    assert torch.load(out_dir / 'last.pt', weights_only=True)['iter_num'] == 2
    assert (out_dir / 'metrics.previous.jsonl').exists()
    assert max(r['iter'] for r in metrics(out_dir)) == 2


@pytest.mark.parametrize('script', ['train', 'finetune'])
def test_two_runs_never_share_an_out_dir(char_dataset, tmp_path, script):
    """While a run holds out_dir (its .lock names its pid), a second run into it stops at start with one line;
    the lock of a run killed with SIGKILL is stale and taken over by the next run."""
    out_dir = tmp_path / 'run'
    first = start([*TINY, *data_args(char_dataset), f'--out_dir={out_dir}', '--max_iters=100000',
                   '--eval_interval=100000'], tmp_path, 'first')
    try:
        wait_for(lambda: (out_dir / 'metrics.jsonl').exists(), first, what='the first run')
        assert (out_dir / '.lock').read_text() == str(first.pid)
        if script == 'train':
            second = run('train.py', *TINY, *data_args(char_dataset), f'--out_dir={out_dir}', '--max_iters=2',
                         '--overwrite=True', check=False)
        else:
            second = run('finetune.py', '--init_from=scratch', f'--out_dir={out_dir}', '--device=cpu', check=False)
        assert_one_line_error(second.returncode, second.stderr, 'in use by another run', f'pid {first.pid}')
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        stop(first)
    assert (out_dir / '.lock').exists()  # SIGKILL leaves it: stale now
    run('train.py', *TINY, *data_args(char_dataset), f'--out_dir={out_dir}', '--max_iters=2', '--eval_interval=2',
        '--overwrite=True')
    assert not (out_dir / '.lock').exists()


KILL_DURING_SAVE = r'''
import os, sys, time, torch
real_save, saves = torch.save, []
def slow_save(obj, f, *args, **kwargs):  # the second save of last.pt writes half a file, then waits to be killed
    saves.append(os.path.basename(f.name).endswith('-last.pt'))
    if sum(saves) == 2 and saves[-1]:
        f.write(b'half a checkpoint'); f.flush()
        open(os.environ['SAVING_MARKER'], 'w').close()
        time.sleep(600)
    return real_save(obj, f, *args, **kwargs)
torch.save = slow_save
sys.argv = ['train.py', *sys.argv[1:]]
import configurator, train
configurator.run_main(train.main)
'''


def test_kill_during_save_keeps_the_checkpoint_and_the_next_run_cleans_up(char_dataset, tmp_path):
    """SIGKILL while last.pt is being replaced: the previous last.pt still loads, the temp file it leaves is removed
    by the next run, and that run resumes from the previous checkpoint with a log that agrees with it."""
    out_dir = tmp_path / 'run'
    marker = tmp_path / 'saving'
    (tmp_path / 'kill_during_save.py').write_text(KILL_DURING_SAVE)
    proc = subprocess.Popen([sys.executable, str(tmp_path / 'kill_during_save.py'), *TINY, *data_args(char_dataset),
                             f'--out_dir={out_dir}', '--max_iters=100', '--eval_interval=2'], cwd=REPO,
                            env={**os.environ, 'SAVING_MARKER': str(marker), 'PYTHONPATH': str(REPO)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(marker.exists, proc, what='the second save')
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        stop(proc)
    temps = [name for name in os.listdir(out_dir) if name.startswith(files.TEMP_PREFIX)]
    assert temps, os.listdir(out_dir)  # the killed save's half file
    assert torch.load(out_dir / 'last.pt', weights_only=True)['iter_num'] == 2  # the previous one, whole
    run('train.py', f'--out_dir={out_dir}', '--init_from=resume', '--max_iters=4')
    assert max(r['iter'] for r in metrics(out_dir)) == 4
    assert not [name for name in os.listdir(out_dir) if name.startswith(files.TEMP_PREFIX)]
    assert torch.load(out_dir / 'last.pt', weights_only=True)['iter_num'] == 4


FILE_SIZE_LIMIT = r'''
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG instead of killing us
limit = int(sys.argv[1])
sys.argv = ['train.py', *sys.argv[2:]]
import configurator, train
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
configurator.run_main(train.main)
'''


def test_file_size_limit_while_saving_is_one_line(char_dataset, tmp_path):
    """A write that hits a file-size limit (as a full disk) ends the run with one line naming the file, and the
    checkpoint written before stays loadable."""
    out_dir = tmp_path / 'run'
    run('train.py', *TINY, *data_args(char_dataset), f'--out_dir={out_dir}', '--max_iters=2', '--eval_interval=2')
    size = os.path.getsize(out_dir / 'last.pt')
    before = (out_dir / 'last.pt').read_bytes()
    (tmp_path / 'limited.py').write_text(FILE_SIZE_LIMIT)
    proc = subprocess.run([sys.executable, str(tmp_path / 'limited.py'), str(size // 2), f'--out_dir={out_dir}',
                           '--init_from=resume', '--max_iters=4'], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, 'PYTHONPATH': str(REPO)})
    assert_one_line_error(proc.returncode, proc.stderr, 'no space left / file too large while writing',
                          'is intact')
    assert (out_dir / 'last.pt').read_bytes() == before
    assert not [name for name in os.listdir(out_dir) if name.startswith(files.TEMP_PREFIX)]


def test_metrics_log_agrees_with_the_checkpoint_on_resume(tmp_path):
    """Resuming drops the records logged after the checkpoint's iteration and a torn last line, so nothing is logged
    twice and the next record starts a line of its own."""
    log = MetricsLog(str(tmp_path), {})
    for it in (10, 20, 30):
        log.log({'iter': it, 'train_loss': 1.0 / it})
    with open(tmp_path / 'metrics.jsonl', 'a') as f:
        f.write('{"iter": 40, "train_lo')  # killed mid-append by an older version, or a full disk
    log = MetricsLog(str(tmp_path), {}, resume_iter=20)
    log.log({'iter': 21, 'train_loss': 0.5})
    assert [r['iter'] for r in metrics(tmp_path)] == [10, 20, 21]


def test_stale_temp_files_are_removed(tmp_path):
    """Temp files of processes that are gone are removed; those of a live process (this one) stay."""
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True)
    stale = tmp_path / f"{files.TEMP_PREFIX}{int(dead.stdout)}-last.pt"
    live = tmp_path / f"{files.TEMP_PREFIX}{os.getpid()}-best.pt"
    stale.write_bytes(b'x')
    live.write_bytes(b'x')
    assert files.remove_stale_temps(str(tmp_path)) == [stale.name]
    assert live.exists() and not stale.exists()


# -----------------------------------------------------------------------------
# 3-4. nonsense settings: one line, exit 2, before anything is written

BAD_SETTINGS = [
    ('train', ['--block_size=0'], 'block_size=0'),
    ('train', ['--gradient_accumulation_steps=0'], 'gradient_accumulation_steps=0'),
    ('train', ['--eval_iters=0'], 'eval_iters=0'),
    ('train', ['--max_iters=0'], 'max_iters=0'),
    ('train', ['--max_iters=-5'], 'max_iters=-5'),
    ('train', ['--batch_size=0'], 'batch_size=0'),
    ('train', ['--batch_size=-3'], 'batch_size=-3'),
    ('train', ['--n_head=0'], 'n_head=0'),
    ('train', ['--n_head=3'], 'not divisible by n_head=3'),
    ('train', ['--eval_interval=0'], 'eval_interval=0'),
    ('train', ['--device=tpu'], "device='tpu'"),
    ('train', ['--learning_rate=0'], 'learning_rate=0'),
    ('train', ['--dropout=1.5'], 'dropout=1.5'),
    ('train', ['--lr_schedule=step'], "lr_schedule='step'"),
    ('train', ['--cpu_offload=True'], 'use it with --fsdp=True'),
    ('train', ['--fsdp=True', '--cpu_offload=True'], 'drop --cpu_offload'),
    ('train', ['--fsdp=True', '--cpu_offload=True', '--optimizer=muon'], 'use --optimizer=adamw with offload'),
    ('finetune', ['--cpu_offload=True'], 'use it with --fsdp=True'),
    ('finetune', ['--epochs=0'], 'epochs=0'),
    ('finetune', ['--batch_size=0'], 'batch_size=0'),
    ('sample', ['--temperature=-0.8'], 'temperature=-0.8'),
    ('sample', ['--top_p=1.5'], 'top_p=1.5'),
    ('sample', ['--top_p=-0.1'], 'top_p=-0.1'),
    ('sample', ['--top_k=0'], 'top_k=0'),
    ('sample', ['--num_samples=-1'], 'num_samples=-1'),
    ('sample', ['--max_new_tokens=-1'], 'max_new_tokens=-1'),
    # keys whose default is None are checked too, and settings that contradict each other
    ('train', ['--muon_lr=abc'], 'not a number'),
    ('train', ['--min_lr=abc'], 'not a number'),
    ('train', ['--lr_decay_iters=abc'], 'not a number'),
    ('train', ['--lr_decay_iters=0'], 'lr_decay_iters=0'),
    ('train', ['--min_lr=0.5', '--learning_rate=0.1'], 'above learning_rate'),
    ('train', ['--muon_momentum=1.5'], 'muon_momentum=1.5'),
    ('train', ['--pos_embedding=rope', '--n_embd=30', '--n_head=2'], 'in pairs'),
    ('train', ['--pos_embedding=rope', '--n_embd=2', '--n_head=2'], 'in pairs'),
    ('finetune', ['--block_size=abc'], 'not a number'),
    ('finetune', ['--pooling=bogus'], "pooling='bogus'"),
]


@pytest.mark.parametrize('script,args,needle', BAD_SETTINGS, ids=[' '.join(a) + f' ({s})' for s, a, _ in BAD_SETTINGS])
def test_nonsense_settings_are_one_line(char_dataset, script_main, tmp_path, script, args, needle):
    out_dir = tmp_path / 'out'
    code, err = script_main(script, *(TINY if script == 'train' else []), *args, f'--out_dir={out_dir}')
    assert_one_line_error(code, err, needle)
    assert not out_dir.exists()


def test_bad_text_files_are_one_line(char_dataset, script_main, tmp_path):
    """--start=FILE: and --predict=FILE: that is missing, empty, a directory or not UTF-8: one line each."""
    run_dir = tmp_path / 'run'
    run('train.py', *TINY, *data_args(char_dataset), f'--out_dir={run_dir}', '--max_iters=2', '--eval_interval=2')
    (tmp_path / 'empty.txt').write_text('  \n')
    (tmp_path / 'latin1.txt').write_bytes('caf\xe9'.encode('latin-1'))
    for name, needle in (('missing.txt', 'not found'), ('empty.txt', 'is empty'), ('latin1.txt', 'not UTF-8'),
                         ('', 'is a directory')):
        code, err = script_main('sample', f'--out_dir={run_dir}', f'--start=FILE:{tmp_path / name}', '--device=cpu')
        assert_one_line_error(code, err, '--start=FILE:', needle)
        code, err = script_main('finetune', f'--out_dir={run_dir}', f'--predict=FILE:{tmp_path / name}')
        assert 'Traceback' not in err and code == 2, err


def test_corrupt_meta_is_one_line(char_dataset, script_main, tmp_path):
    """A meta.json that lacks dtype / splits / vocab_size, or is not an object, is a one-line error."""
    root, name, meta = char_dataset
    for broken in ({k: v for k, v in meta.items() if k != 'dtype'}, {k: v for k, v in meta.items() if k != 'splits'},
                   {k: v for k, v in meta.items() if k != 'vocab_size'}, [1, 2, 3]):
        data_dir = tmp_path / 'data' / 'broken'
        data_dir.mkdir(parents=True, exist_ok=True)
        for split in ('train', 'val'):
            with open(os.path.join(root, name, f'{split}.bin'), 'rb') as f:
                (data_dir / f'{split}.bin').write_bytes(f.read())
        (data_dir / 'meta.json').write_text(json.dumps(broken))
        code, err = script_main('train', *TINY, f'--data_root={tmp_path / "data"}', '--dataset=broken',
                                f'--out_dir={tmp_path / "out"}')
        assert_one_line_error(code, err, 'meta.json')


# -----------------------------------------------------------------------------
# 5. round 2: nothing of an earlier run read as this one's, no non-finite weights saved, wrong answers refused

def test_overwrite_sets_the_old_run_aside_at_once(char_dataset, tmp_path):
    """--overwrite=True: the old run's best.pt / last.pt / metrics become *.previous.* before the new run writes
    anything, so no script reads the old model (another width) as the new run's while it trains."""
    out_dir = tmp_path / 'run'
    run('train.py', *TINY, *data_args(char_dataset), f'--out_dir={out_dir}', '--max_iters=4', '--eval_interval=2')
    old = (out_dir / 'best.pt').read_bytes()
    new = start([*TINY, *data_args(char_dataset), f'--out_dir={out_dir}', '--overwrite=True', '--n_embd=48',
                 '--max_iters=100000', '--eval_interval=100000', '--log_interval=1'], tmp_path, 'new')
    try:
        wait_for(lambda: (out_dir / 'metrics.previous.jsonl').exists() and (out_dir / 'metrics.jsonl').exists()
                 and 'train_loss' in (out_dir / 'metrics.jsonl').read_text(), new, what='the new run')
        assert not (out_dir / 'best.pt').exists() and not (out_dir / 'last.pt').exists()
        assert (out_dir / 'best.previous.pt').read_bytes() == old and (out_dir / 'metrics.previous.jsonl').exists()
    finally:
        stop(new)


def test_a_diverged_run_stops_and_never_saves_non_finite_weights(char_dataset, tmp_path):
    """At --learning_rate=1e6 the loss is NaN within a few steps: the run stops with one line (the iteration, the
    last good checkpoint, what to try), and every checkpoint it left holds finite weights."""
    out_dir = tmp_path / 'run'
    proc = run('train.py', *TINY, *data_args(char_dataset), f'--out_dir={out_dir}', '--learning_rate=1e6',
               '--max_iters=200', '--eval_interval=2', '--log_interval=1', '--warmup_iters=0', '--grad_clip=0',
               check=False)
    assert_one_line_error(proc.returncode, proc.stderr, 'diverged', 'at iteration', '--learning_rate')
    for path in out_dir.glob('*.pt'):
        state = torch.load(path, weights_only=True)['model']
        assert all(torch.isfinite(t).all() for t in state.values()), path


def test_resume_keeps_one_record_a_step_and_the_elapsed_time(char_dataset, tmp_path):
    out_dir = tmp_path / 'run'
    run('train.py', *TINY, *data_args(char_dataset), f'--out_dir={out_dir}', '--max_iters=4', '--eval_interval=2')
    run('train.py', '--init_from=resume', f'--out_dir={out_dir}', '--max_iters=6')
    records = [json.loads(line) for line in (out_dir / 'metrics.jsonl').read_text().splitlines()]
    evaluations = [r['iter'] for r in records if 'val_loss' in r]
    assert evaluations == [0, 2, 4, 6], evaluations
    elapsed = {r['iter']: r['elapsed_s'] for r in records if 'val_loss' in r}
    assert elapsed[6] >= elapsed[4] > 0


def test_a_char_checkpoint_is_refused_on_another_character_set(char_dataset, tmp_path):
    """The ids of a char checkpoint mean its own characters: on char data of another set, --init_from and
    resume with another --dataset are one-line errors."""
    import prepare
    data_root, name, _ = char_dataset
    (tmp_path / 'other.txt').write_text('ZYXWVUTSRQ zyxwv 0123\n' * 400, encoding='utf-8')
    prepare.prepare(source=str(tmp_path / 'other.txt'), name='other', tokenizer='char', out_root=data_root)
    out_dir = tmp_path / 'run'
    run('train.py', *TINY, *data_args(char_dataset), f'--out_dir={out_dir}', '--max_iters=2', '--eval_interval=2')
    proc = run('train.py', *TINY, f'--data_root={data_root}', '--dataset=other', f'--init_from={out_dir}',
               f'--out_dir={tmp_path / "continued"}', '--max_iters=2', check=False)
    assert_one_line_error(proc.returncode, proc.stderr, 'character set')
    proc = run('train.py', '--init_from=resume', f'--out_dir={out_dir}', '--dataset=other', '--max_iters=4',
               check=False)
    assert_one_line_error(proc.returncode, proc.stderr, 'character set')


LOCK_RACE = r'''
import sys, time
sys.path.insert(0, sys.argv[1])
from configurator import UserError
from files import run_lock
time.sleep(max(0.0, float(sys.argv[3]) - time.time()))  # all start at the same moment
try:
    with run_lock(sys.argv[2]):
        print('held', flush=True)
        time.sleep(1.5)
except UserError:
    print('refused', flush=True)
'''


def test_a_stale_lock_is_taken_by_one_run_only(tmp_path):
    """Eight runs start at once on an out_dir whose .lock a killed run left: exactly one takes it."""
    out_dir = tmp_path / 'run'
    out_dir.mkdir()
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True)
    (out_dir / '.lock').write_text(dead.stdout.strip())
    (tmp_path / 'race.py').write_text(LOCK_RACE)
    at = time.time() + 3.0
    procs = [subprocess.Popen([sys.executable, str(tmp_path / 'race.py'), str(REPO), str(out_dir), str(at)],
                              stdout=subprocess.PIPE, text=True) for _ in range(8)]
    outcomes = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert sorted(outcomes) == ['held'] + ['refused'] * 7, outcomes
