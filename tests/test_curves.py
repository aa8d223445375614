"""
What pretraining buys: fewer labels (--train_examples), the fair from-scratch control (--init_from=scratch:PATH)
and the label-efficiency curves (curves.py), on tiny models and data, about a minute:

    python -m pytest -q tests/test_curves.py
"""
import json
import subprocess
import sys
from collections import Counter

import pytest
import torch

import baseline
import checkpoints
import finetune
import tasks
from conftest import REPO
from test_finetune import GPT2_META, finetune_in_process, save_tiny_checkpoint, write_news_csv

pytest.importorskip('sklearn')


def labelled(counts):
    return [{'text': f'{label} text {i}', 'label': label} for label, n in counts.items() for i in range(n)]


def test_subsample_is_stratified_and_fixed_by_its_seed():
    examples = labelled({'business': 510, 'sport': 511, 'tech': 401, 'politics': 417, 'entertainment': 386})
    sample = tasks.subsample(examples, 50, seed=0)
    assert len(sample) == len(set(sample)) == 50 and sample == sorted(sample)
    counts = Counter(examples[i]['label'] for i in sample)
    assert set(counts) == {'business', 'sport', 'tech', 'politics', 'entertainment'}
    assert all(8 <= n <= 12 for n in counts.values()), counts  # each class its share of 50
    assert tasks.subsample(examples, 50, seed=0) == sample
    assert tasks.subsample(examples, 50, seed=1) != sample
    assert tasks.subsample(examples, 10_000, seed=0) == list(range(len(examples)))
    rare = labelled({'common': 98, 'rare': 2})
    assert Counter(rare[i]['label'] for i in tasks.subsample(rare, 5, seed=3))['rare'] >= 1  # every class present
    with pytest.raises(tasks.DataError, match='fewer than the 5 classes'):
        tasks.subsample(examples, 3, seed=0)


def test_finetune_and_baseline_draw_the_same_sample(tmp_path, tiny_config, monkeypatch):
    """--train_examples=N --seed=S: finetune.py and baseline.py train on the same stratified sample (the same
    fingerprint in test_results.json), val and test stay whole, and the sample is recorded."""
    write_news_csv(tmp_path / 'news.csv')
    save_tiny_checkpoint(tmp_path / 'base.pt', tiny_config(vocab_size=50304, block_size=32), GPT2_META)
    finetune_in_process(monkeypatch, f'--init_from={tmp_path}/base.pt', f'--data={tmp_path}/news.csv', '--epochs=1',
                        f'--out_dir={tmp_path}/ft', '--train_examples=12', '--seed=3', '--split_seed=1337',
                        '--batch_size=4', '--device=cpu', '--dtype=float32')
    monkeypatch.setattr(sys, 'argv', ['baseline.py', f'--data={tmp_path}/news.csv', f'--out_dir={tmp_path}/tfidf',
                                      '--train_examples=12', '--seed=3', '--split_seed=1337'])
    baseline.main()
    tuned, linear = (json.loads((tmp_path / run / 'test_results.json').read_text()) for run in ('ft', 'tfidf'))
    assert tuned['train_examples'] == linear['train_examples'] == 12
    assert tuned['train_sample'] == linear['train_sample']
    assert tuned['n_examples'] == linear['n_examples'] == 16  # the whole test split
    splits = tasks.load_task_data('classification', str(tmp_path / 'news.csv'), seed=1337)
    drawn = [splits['train'][i] for i in tasks.subsample(splits['train'], 12, 3)]
    assert tasks.sample_fingerprint(drawn) == tuned['train_sample']
    assert checkpoints.read(str(tmp_path / 'ft' / 'best.pt'))['config']['train_examples'] == 12


def test_scratch_path_is_the_same_model_with_fresh_weights(tmp_path, tiny_config):
    """init_from='scratch:PATH': PATH's architecture, tokenizer and special tokens; weights drawn afresh."""
    meta = {**GPT2_META, 'special_tokens': {'eot': 50256, 'mask': 50257, 'cls': 50258, 'sep': 50259, 'pad': 50260,
                                            'n_random': 50257}}
    saved = save_tiny_checkpoint(tmp_path / 'base.pt', tiny_config(vocab_size=50304, block_size=32, norm='rms',
                                                                   mlp='swiglu', pos_embedding='rope'), meta)
    torch.manual_seed(1)
    fresh, fresh_meta = finetune.scratch_twin(f'{tmp_path}/base.pt')
    pretrained, pretrained_meta, _ = checkpoints.load(f'{tmp_path}/base.pt', dropout=0.0)
    assert fresh.config == pretrained.config == saved.config
    assert fresh_meta == pretrained_meta and fresh_meta['special_tokens'] == meta['special_tokens']
    fresh_state, saved_state = fresh.state_dict(), saved.state_dict()
    assert {k: v.shape for k, v in fresh_state.items()} == {k: v.shape for k, v in saved_state.items()}
    assert not torch.equal(fresh_state['transformer.wte.weight'], saved_state['transformer.wte.weight'])
    torch.testing.assert_close(pretrained.state_dict()['transformer.wte.weight'], saved_state['transformer.wte.weight'])


def test_curves_end_to_end(tmp_path, tiny_config):
    """curves.py on a tiny model and CSV: every (method, size, seed) scored, full fine-tuning at the sizes asked
    (finetune.py, pretrained and scratch), and the table, the JSON and the picture written."""
    write_news_csv(tmp_path / 'news.csv')
    save_tiny_checkpoint(tmp_path / 'base.pt', tiny_config(vocab_size=50304, block_size=32), GPT2_META)
    out = tmp_path / 'curves'
    (tmp_path / 'probe_config.py').write_text('probe = True\n')  # as config/finetune_bbc.py: the fine-tuned runs train anyway
    proc = subprocess.run([sys.executable, 'curves.py', f'--init_from={tmp_path}/base.pt', f'--data={tmp_path}/news.csv',
                           f'--config={tmp_path}/probe_config.py', '--sizes=4,8,all', '--seeds=0,1', '--finetune_sizes=8', '--finetune_max_epochs=2',
                           f'--out_dir={out}', '--device=cpu', '--dtype=float32'],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    runs = json.loads((out / 'curves.json').read_text())['runs']
    cells = Counter((r['method'], r['size']) for r in runs)
    for method in ('pretrained', 'scratch', 'tfidf'):
        assert cells[method, 4] == cells[method, 8] == cells[method, 128] == 2, cells
    assert cells['pretrained fine-tuned', 8] == cells['scratch fine-tuned', 8] == 2
    assert all(0.0 <= r['test'] <= 1.0 for r in runs)
    table = (out / 'curves.md').read_text()
    assert '| 128 (all) |' in table and 'scratch fine-tuned' in table
    assert (out / 'curves.png').stat().st_size > 1000
    for run in ('pretrained_n8_s0', 'scratch_n8_s1'):  # every weight trained: a best epoch (a probe has none)
        assert json.loads((out / 'runs' / run / 'test_results.json').read_text())['best_epoch'] >= 1


def test_curves_pool_several_pretraining_runs(tmp_path, tiny_config):
    """--init_from=A,B (pretraining seeds of one recipe): 'pretrained' scores each checkpoint under every seed, the
    scratch twin is A's model once a seed; a checkpoint of another shape is a one-line error."""
    write_news_csv(tmp_path / 'news.csv')
    config = tiny_config(vocab_size=50304, block_size=32)
    for seed in (0, 1):
        save_tiny_checkpoint(tmp_path / f'run{seed}.pt', config, GPT2_META, seed=seed)
    save_tiny_checkpoint(tmp_path / 'wide.pt', tiny_config(vocab_size=50304, block_size=32, n_embd=64), GPT2_META)

    def curves(init_from, out):
        return subprocess.run([sys.executable, 'curves.py', f'--init_from={init_from}', f'--data={tmp_path}/news.csv',
                               '--sizes=4,all', '--seeds=0,1', f'--out_dir={tmp_path / out}', '--device=cpu',
                               '--dtype=float32'], cwd=REPO, capture_output=True, text=True, timeout=600)
    proc = curves(f'{tmp_path}/run0.pt,{tmp_path}/run1.pt', 'two')
    assert proc.returncode == 0, proc.stderr
    runs = json.loads((tmp_path / 'two' / 'curves.json').read_text())['runs']
    pretrained = Counter((r['init_from'], r['size']) for r in runs if r['method'] == 'pretrained')
    assert pretrained == {(f'{tmp_path}/run{i}.pt', n): 2 for i in (0, 1) for n in (4, 128)}
    assert Counter(r['size'] for r in runs if r['method'] == 'scratch') == {4: 2, 128: 2}
    assert '(0.' in (tmp_path / 'two' / 'curves.md').read_text()
    proc = curves(f'{tmp_path}/run0.pt,{tmp_path}/wide.pt', 'mixed')
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: init_from: {tmp_path}/wide.pt is not the model and tokenizer of {tmp_path}/run0.pt: the pretrained "
        "curve pools runs of one recipe (e.g. its seeds); run curves.py once for each"]


def test_curves_bad_sizes_are_one_line(script_main, tmp_path):
    code, stderr = script_main('curves', '--sizes=25,lots', f'--out_dir={tmp_path}')
    assert code == 2 and 'lots' in stderr and len(stderr.strip().splitlines()) == 1, stderr


def test_probe_fits_the_head_that_the_model_then_computes(tmp_path, tiny_config, monkeypatch, capsys):
    """finetune.py --probe=True: no epochs; the sequence head becomes a logistic regression on the frozen features
    (its standardisation folded into the weights), so best.pt predicts, scores and explains like any fine-tuned
    model, and the trunk is the pretrained one, unchanged."""
    write_news_csv(tmp_path / 'news.csv')
    base = save_tiny_checkpoint(tmp_path / 'base.pt', tiny_config(vocab_size=50304, block_size=32), GPT2_META)
    out = tmp_path / 'probe'
    finetune_in_process(monkeypatch, f'--init_from={tmp_path}/base.pt', f'--data={tmp_path}/news.csv', '--probe=True',
                        f'--out_dir={out}', '--device=cpu', '--dtype=float32')
    scores = json.loads((out / 'test_results.json').read_text())
    assert scores['accuracy'] >= 0.9, scores['accuracy']  # word-disjoint classes, even for random features
    checkpoint = checkpoints.read(str(out / 'best.pt'))
    for name, value in base.state_dict().items():
        torch.testing.assert_close(checkpoint['model'][name], value)  # the trunk as pretrained
    capsys.readouterr()
    finetune.run_predict('The goal striker league match coach', str(out), 'cpu')
    assert capsys.readouterr().out.split('\t')[0] == 'sport'
