"""
Tests for fsdp.py and the fsdp=True paths of train.py and finetune.py: 2 gloo processes on the CPU (torchrun),
fp32, tiny models. Losses against 1-process training, per-rank state bytes against DDP, sharded checkpoints
resumed on another number of processes, a rank killed during a save, fine-tuning, safe loading.

    python -m pytest -q tests/test_fsdp.py
"""
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch

import checkpoints
import configurator
import files
import fsdp
from conftest import REPO
from test_finetune import save_tiny_checkpoint, write_news_csv
from test_train import TINY, data_args, metrics, run
from tokenizer import GPT2_META

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason='torch.distributed not built')
TORCHRUN = ('-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2')
ONE_THREAD = {'OMP_NUM_THREADS': '1'}  # two processes share the cores
LOSS_TOLERANCE = 1e-4  # fp32: the sharded run reduces the same gradients in another order (observed <= 2e-6)


def train_losses(out_dir):
    return {r['iter']: r['train_loss'] for r in metrics(out_dir) if 'train_loss' in r}


def weights(path):
    return checkpoints.read(str(path))['model']


# -----------------------------------------------------------------------------
# training

@pytest.mark.parametrize('objective,optimizer', [('clm', 'muon'), ('mlm', 'adamw')])
def test_fsdp_matches_one_process_with_doubled_accumulation(char_dataset, tmp_path, objective, optimizer):
    """2 FSDP processes x 1 micro-batch give the losses and weights of 1 plain process x 2 micro-batches over 5
    steps (fp32; Muon orthogonalises the gathered matrix and keeps each rank's rows; the masked-LM evaluation
    calls hidden_states and a head, not forward). AdamW on GPT-style runs: the resume test below."""
    args = [*TINY, *data_args(char_dataset), '--max_iters=5', '--eval_interval=5', '--eval_iters=1',
            f'--optimizer={optimizer}', f'--objective={objective}', f'--causal={objective == "clm"}']
    run('train.py', *args, f'--out_dir={tmp_path / "fsdp"}', '--fsdp=True', launcher=TORCHRUN, env=ONE_THREAD)
    run('train.py', *args, f'--out_dir={tmp_path / "single"}', '--gradient_accumulation_steps=2', env=ONE_THREAD)
    sharded, single = train_losses(tmp_path / 'fsdp'), train_losses(tmp_path / 'single')
    assert sorted(sharded) == sorted(single) == [1, 2, 3, 4, 5]
    for it in single:
        assert sharded[it] == pytest.approx(single[it], abs=LOSS_TOLERANCE), it
    assert os.path.isdir(tmp_path / 'fsdp' / 'last.dcp') and not os.path.exists(tmp_path / 'fsdp' / 'last.pt')
    sharded_evals = [r['val_loss'] for r in metrics(tmp_path / 'fsdp') if 'val_loss' in r]
    single_evals = [r['val_loss'] for r in metrics(tmp_path / 'single') if 'val_loss' in r]
    assert sharded_evals == pytest.approx(single_evals, abs=LOSS_TOLERANCE) and len(single_evals) == 2
    ours, theirs = weights(tmp_path / 'fsdp' / 'last.dcp'), weights(tmp_path / 'single' / 'last.pt')
    assert ours.keys() == theirs.keys()
    for name in theirs:
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-5, rtol=0, msg=name)


def test_sharded_checkpoint_resumes_on_another_number_of_processes(char_dataset, tmp_path):
    """Saved by 2 processes, resumed by 1 (and 1 -> 2): the next steps' losses are those of an unbroken run; the
    accumulation is rescaled so that an iteration keeps its tokens. Then the run is consolidated into one .pt."""
    args = [*TINY, *data_args(char_dataset), '--eval_interval=4', '--eval_iters=1', '--lr_decay_iters=8']
    run('train.py', *args, f'--out_dir={tmp_path / "unbroken"}', '--max_iters=8', '--gradient_accumulation_steps=2',
        env=ONE_THREAD)
    unbroken = train_losses(tmp_path / 'unbroken')
    # 2 -> 1
    run('train.py', *args, f'--out_dir={tmp_path / "a"}', '--max_iters=4', '--fsdp=True', launcher=TORCHRUN, env=ONE_THREAD)
    proc = run('train.py', '--init_from=resume', f'--out_dir={tmp_path / "a"}', '--max_iters=8', env=ONE_THREAD)
    assert 'gradient_accumulation_steps = 2' in proc.stdout
    # 1 -> 2
    run('train.py', *args, f'--out_dir={tmp_path / "b"}', '--max_iters=4', '--fsdp=True',
        '--gradient_accumulation_steps=2', env=ONE_THREAD)
    run('train.py', '--init_from=resume', f'--out_dir={tmp_path / "b"}', '--max_iters=8', launcher=TORCHRUN, env=ONE_THREAD)
    for name in ('a', 'b'):
        resumed = train_losses(tmp_path / name)
        assert sorted(resumed) == list(range(1, 9)), name
        for it in range(5, 9):
            assert resumed[it] == pytest.approx(unbroken[it], abs=LOSS_TOLERANCE), (name, it)
    # one .pt of the sharded run, read like any other checkpoint
    proc = subprocess.run([sys.executable, 'fsdp.py', str(tmp_path / 'a' / 'last.dcp')], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    single = torch.load(tmp_path / 'a' / 'last.pt', weights_only=True)
    assert single['iter_num'] == 8 and 'optimizer' not in single
    for name, tensor in weights(tmp_path / 'unbroken' / 'last.pt').items():
        torch.testing.assert_close(single['model'][name], tensor, atol=1e-5, rtol=0, msg=name)
    proc = subprocess.run([sys.executable, 'fsdp.py', str(tmp_path / 'a' / 'last.dcp')], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and 'exists' in proc.stderr  # nothing is overwritten


def test_sigterm_saves_a_sharded_checkpoint_from_every_rank(char_dataset, tmp_path):
    """SIGTERM to torchrun (which passes it to both ranks, each at its own moment): the ranks agree on one
    iteration, write last.dcp together and stop; the checkpoint holds that iteration and the log agrees."""
    out_dir = tmp_path / 'run'
    args = [*TINY, *data_args(char_dataset), f'--out_dir={out_dir}', '--eval_interval=100000', '--max_iters=100000',
            '--fsdp=True']
    with open(tmp_path / 'stderr.txt', 'w') as stderr:
        proc = subprocess.Popen([sys.executable, *TORCHRUN, 'train.py', *args], cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=stderr, env={**os.environ, **ONE_THREAD})
        deadline = time.time() + 120
        while time.time() < deadline and not (os.path.exists(out_dir / 'metrics.jsonl') and len(metrics(out_dir)) >= 4):
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    saved = checkpoints.read_sharded_json(str(out_dir / 'last.dcp'))
    assert saved['iter_num'] == metrics(out_dir)[-1]['iter'] >= 3
    checkpoints.read(str(out_dir / 'last.dcp'))


def test_fsdp_halves_per_rank_state_bytes(tmp_path):
    """Per rank, FSDP at 2 processes holds about half the parameter, gradient and optimizer bytes of DDP (measured
    from the sharded tensors' local sizes)."""
    out = tmp_path / 'bytes.json'
    run('tests/fsdp_worker.py', 'memory', out, launcher=TORCHRUN, env=ONE_THREAD)
    rows = json.loads(out.read_text())
    for row in rows:
        for kind in ('params', 'grads', 'optimizer'):
            assert row['ddp'][kind] > 0, kind
            assert row['fsdp'][kind] / row['ddp'][kind] == pytest.approx(0.5, abs=0.05), (kind, row)
    total = sum(sum(row['fsdp'].values()) for row in rows)
    assert total == pytest.approx(sum(rows[0]['ddp'].values()), rel=0.02)  # the shards add up to one copy


def test_a_rank_killed_during_a_sharded_save_leaves_the_previous_checkpoint(tmp_path):
    """kill -9 of rank 1 in the middle of a sharded save: the run fails, last.dcp is still the previous checkpoint
    (it loads, with its weights), the half-written temp directory is there and the next run removes it."""
    proc = run('tests/fsdp_worker.py', 'kill', tmp_path, launcher=TORCHRUN, env=ONE_THREAD, check=False, timeout=120)
    assert proc.returncode != 0 and 'the kill did not happen' not in proc.stderr
    temps = [name for name in os.listdir(tmp_path) if name.startswith(files.TEMP_PREFIX)]
    assert len(temps) == 1 and temps[0].endswith('last.dcp')  # the save was cut off mid-way
    reference = torch.load(tmp_path / 'reference.pt', weights_only=True)
    loaded = weights(tmp_path / 'last.dcp')
    for name in reference:
        torch.testing.assert_close(loaded[name], reference[name], atol=0, rtol=0, msg=name)
    assert files.remove_stale_temps(str(tmp_path)) == temps and not os.path.exists(tmp_path / temps[0])


# -----------------------------------------------------------------------------
# fine-tuning

def test_finetune_with_fsdp_matches_ddp(tmp_path, tiny_config):
    """Fine-tuning (LoRA) a small CSV with fsdp=True at 2 processes reaches the accuracy and val loss of DDP at
    2 processes: the same batches, the same gradients; best.pt is a plain model either way."""
    write_news_csv(tmp_path / 'news.csv')
    save_tiny_checkpoint(tmp_path / 'base.pt', tiny_config(vocab_size=50304, block_size=32), GPT2_META)
    results = {}
    for name, extra in (('ddp', []), ('fsdp', ['--fsdp=True'])):
        run('finetune.py', f'--init_from={tmp_path}/base.pt', f'--data={tmp_path}/news.csv', f'--out_dir={tmp_path / name}',
            '--epochs=3', '--batch_size=8', '--learning_rate=1e-2', '--lora_rank=4', '--dtype=float32', '--device=cpu',
            *extra, launcher=TORCHRUN, env=ONE_THREAD)
        results[name] = json.loads((tmp_path / name / 'test_results.json').read_text())
    assert results['fsdp']['accuracy'] == results['ddp']['accuracy']
    assert results['fsdp']['loss'] == pytest.approx(results['ddp']['loss'], abs=1e-4)
    ours, theirs = weights(tmp_path / 'fsdp' / 'best.pt'), weights(tmp_path / 'ddp' / 'best.pt')
    assert ours.keys() == theirs.keys() and not any('lora' in k for k in ours)
    for name in theirs:
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-4, rtol=0, msg=name)


# -----------------------------------------------------------------------------
# pieces, in one process

def test_activation_checkpointing_gives_the_same_gradients(tiny_config):
    """A block that recomputes its activations in backward gives the gradients of one that stores them, and keeps
    its parameter names."""
    from model import Transformer
    torch.manual_seed(0)
    plain = Transformer(tiny_config())
    recomputing = Transformer(tiny_config())
    recomputing.load_state_dict(plain.state_dict())
    for block in recomputing.transformer.h:
        fsdp.checkpoint_activations(block)
    assert recomputing.state_dict().keys() == plain.state_dict().keys()
    x = torch.randint(0, 64, (2, 16))
    for model in (plain, recomputing):
        model(x, x)[1].backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), recomputing.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_split_and_merge_are_inverse():
    tree = {'state': {'w': {'step': 3, 'exp_avg': torch.ones(2)}}, 'param_groups': [{'lr': 0.1, 'params': ['w']}]}
    tensors, plain = fsdp.split_tensors(tree)
    assert tensors == {'state': {'w': {'exp_avg': tree['state']['w']['exp_avg']}}}
    assert json.loads(json.dumps(plain)) == plain  # plain values only: checkpoint.json
    assert fsdp.merge(tensors, plain) == tree


class RunsCode:
    """A pickle payload: unpickling it would create a file (an attacker would run anything)."""
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, 'w'))


def test_a_sharded_checkpoint_cannot_run_code(char_dataset, tmp_path):
    """The .metadata index of a sharded checkpoint is a pickle: one with anything but the index's own classes is
    refused in one line and never runs; so is a checkpoint holding pickled Python objects besides tensors. (And
    resuming a sharded run with --fsdp=False is a one-line error naming the fix.)"""
    args = [*TINY, *data_args(char_dataset), '--eval_interval=2', '--eval_iters=1', '--max_iters=2']
    run('train.py', *args, f'--out_dir={tmp_path / "s"}', '--fsdp=True', env=ONE_THREAD)
    proc = run('train.py', '--init_from=resume', f'--out_dir={tmp_path / "s"}', '--fsdp=False', '--max_iters=4',
               check=False)
    assert proc.returncode == 2 and 'drop the flag' in proc.stderr and 'Traceback' not in proc.stderr
    path = tmp_path / 's' / 'last.dcp'
    checkpoints.read(str(path))  # as written: fine
    payload = tmp_path / 'payload-ran'
    with open(path / '.metadata', 'wb') as f:
        pickle.dump(RunsCode(str(payload)), f)
    with pytest.raises(configurator.UserError, match='could run code'):
        checkpoints.read(str(path))
    proc = run('sample.py', f'--out_dir={tmp_path / "s"}', '--init_from=' + str(path), '--max_new_tokens=2', check=False)
    assert proc.returncode == 2 and 'could run code' in proc.stderr
    assert not payload.exists()
    # a DCP with a pickled object among its values (torch would unpickle it with weights_only=False)
    import torch.distributed.checkpoint as dcp
    dcp.save({'model': {'w': torch.ones(2)}, 'extra': {'x': RunsCode(str(payload))}},
             storage_writer=dcp.FileSystemWriter(str(tmp_path / 'objects.dcp')), no_dist=True)
    (tmp_path / 'objects.dcp' / checkpoints.SHARDED_JSON).write_text('{"model_args": {}}')
    with pytest.raises(configurator.UserError, match='pickled Python objects'):
        checkpoints.read(str(tmp_path / 'objects.dcp'))
    assert not payload.exists()


# -----------------------------------------------------------------------------
# GPU

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_gpu_fsdp_bf16_activation_checkpointing(char_dataset, tmp_path):
    """On CUDA (NCCL, one process per GPU): FSDP in bf16 with activation checkpointing (and CPU offload) trains,
    and its loss follows the plain bf16 run's."""
    n_gpus = torch.cuda.device_count()
    launcher = ('-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={min(n_gpus, 2)}')
    args = [*[a for a in TINY if not a.startswith(('--device', '--dtype'))], *data_args(char_dataset),
            '--device=cuda', '--dtype=bfloat16', '--max_iters=20', '--eval_interval=10', '--eval_iters=2']
    run('train.py', *args, f'--out_dir={tmp_path / "plain"}', f'--gradient_accumulation_steps={min(n_gpus, 2)}')
    run('train.py', *args, f'--out_dir={tmp_path / "fsdp"}', '--fsdp=True', '--activation_checkpointing=True',
        launcher=launcher)
    run('train.py', *args, f'--out_dir={tmp_path / "offload"}', '--fsdp=True', '--cpu_offload=True', launcher=launcher)
    plain = [r['val_loss'] for r in metrics(tmp_path / 'plain') if 'val_loss' in r]
    for name in ('fsdp', 'offload'):
        evals = [r['val_loss'] for r in metrics(tmp_path / name) if 'val_loss' in r]
        assert evals[-1] < evals[0] - 0.3, (name, evals)
        assert evals[-1] == pytest.approx(plain[-1], abs=0.05), (name, evals, plain)
