"""
Tests for bench.py's helpers and the GPU check .ci/gpu, on CPU (its --dry-run runs every step on a tiny model):

    python -m pytest -q tests/test_bench.py
"""

import json
import os
import subprocess
import sys

import torch

import bench

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPU_CHECK = os.path.join(ROOT, '.ci', 'gpu')


def test_table_prints_markdown_and_keeps_it_for_out(capsys):
    bench.RESULTS.clear()
    bench.table('a title', ('name', 'ms'), (row for row in [('x', 1), ('y', 2.5)]), ['a note'])
    assert capsys.readouterr().out == "\n## a title\n| name | ms |\n|---|---|\n| x | 1 |\n| y | 2.5 |\na note\n"
    assert bench.RESULTS == [{'title': 'a title', 'header': ['name', 'ms'], 'rows': [['x', '1'], ['y', '2.5']],
                              'notes': ['a note']}]


def test_first_divergence_counts_tokens_equal_in_every_row():
    a = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert bench.first_divergence(a, a.clone()) == 4
    b = a.clone()
    b[1, 2] = 0
    assert bench.first_divergence(a, b) == 2


def run_gpu_check(*args, **env):
    return subprocess.run([sys.executable, GPU_CHECK, *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


def test_gpu_check_refuses_without_cuda_and_without_outdir(tmp_path):
    proc = run_gpu_check(str(tmp_path / 'out'), CUDA_VISIBLE_DEVICES='')
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        "error: .ci/gpu needs a CUDA device and this machine has none (to check the script on CPU: "
        ".ci/gpu OUTDIR --dry-run)"]
    assert not (tmp_path / 'out').exists()
    proc = run_gpu_check()
    assert proc.returncode == 1 and proc.stderr.strip() == "usage: .ci/gpu OUTDIR [--dry-run]"


def test_gpu_check_dry_run_writes_every_figure_to_one_file(tmp_path):
    """The three steps on CPU with a tiny model: tests, the bench's training table, the main config's evaluations."""
    proc = run_gpu_check(str(tmp_path), '--dry-run', OMP_NUM_THREADS='1')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads((tmp_path / 'results.json').read_text())
    assert results['dry_run'] and results['seconds'] < 120
    assert all(results[step]['returncode'] == 0 for step in ('gpu_tests', 'gpt2_bench', 'main_config'))
    assert 'skipped' in results['gpu_tests']['summary']
    training = results['gpt2_bench']['tables'][0]
    assert training['title'].startswith('training') and training['header'][:4] == ['path', 'ms/step', 'tokens/s', 'MFU']
    assert len(training['rows']) == 5 and set(results['gpt2_bench']['peak_flops']) >= {'float32'}
    assert [e['iter'] for e in results['main_config']['evaluations']] == [0, 1, 2]
    assert results['main_config']['last_step']['train_loss'] > 0
    assert all((tmp_path / f'{step}.log').exists() for step in ('gpu_tests', 'gpt2_bench', 'main_config'))


def test_prepare_peak_rss_is_the_child_own(tmp_path):
    """bench.run_prepare reports prepare.py's own peak, not this process's carried over from the fork: with 800 MB
    held here, a tiny corpus still peaks far below it (a child's ru_maxrss would read above 800 MB)."""
    if not os.path.exists('/proc/self/status'):
        return  # elsewhere run_prepare reads ru_maxrss, and says it may include the parent's
    held = b'\x01' * (800 * 2**20)  # written, so every page is resident
    (tmp_path / 'corpus.txt').write_text("The cat sat on the mat.\n" * 2000)
    wall, cpu, peak = bench.run_prepare([str(tmp_path / 'corpus.txt'), '--name=tiny', f'--out_root={tmp_path}'],
                                        str(tmp_path / 'log.txt'))
    assert (tmp_path / 'tiny' / 'train.bin').exists() and wall > 0 and cpu > 0
    assert 20e6 < peak < 500e6, f"{peak / 1e6:.0f} MB"
    del held


def test_float32_times_an_fp32_only_machine_and_a_short_vocabulary_is_refused(tmp_path):
    """--dtype=float32 runs every path in fp32 on any CPU (as a CPU without bf16 would), its MFU against the fp32
    peak alone; a --vocab_size below the data's ids is a one-line error, not an IndexError from the embedding."""
    tiny = ['--sections=train', '--n_layer=1', '--n_head=2', '--n_embd=32', '--block_size=16', '--batch_size=2',
            '--steps=1', '--repeats=1']
    proc = subprocess.run([sys.executable, 'bench.py', *tiny, '--dtype=float32', f'--out={tmp_path / "b.json"}'],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / 'b.json').read_text())
    assert list(results['peak_flops']) == ['float32']
    assert results['tables'][0]['rows'][-1][0] == 'default: float32 + fused AdamW + fused loss'
    proc = subprocess.run([sys.executable, 'bench.py', *tiny, '--vocab_size=64'], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1] == (
        "error: --vocab_size=64 is below the 50,257 ids of data/bbc_news (GPT-2's BPE): leave it at 50304")
