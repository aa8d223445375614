"""
Tests for baseline.py (TF-IDF + logistic regression on finetune.py's data and split), a few seconds:

    python -m pytest -q tests/test_baseline.py
"""
import json
import sys

import numpy as np
import pytest

import baseline
import tasks
from test_train import assert_one_line_error

pytest.importorskip('sklearn')


def write_csv(path, n=200, seed=0):
    """Two classes told apart by their words, plus shared filler words."""
    rng = np.random.default_rng(seed)
    rows = ['text,label']
    for i in range(n):
        sport = i % 2 == 0
        words = list(rng.choice(['match', 'goal', 'league', 'striker', 'coach'] if sport else
                                ['shares', 'profit', 'bank', 'market', 'investor'], size=4))
        words += list(rng.choice(['the', 'said', 'on', 'monday', 'new', 'year'], size=4))
        rng.shuffle(words)
        rows.append(f'"{" ".join(words)}",{"sport" if sport else "business"}')
    path.write_text('\n'.join(rows) + '\n', encoding='utf-8')
    return path


def test_baseline_uses_finetunes_split_and_writes_its_files(tmp_path, monkeypatch):
    """The same train / val / test split as finetune.py (same fractions and seed), C chosen on val, the test table,
    test_results.json and one prediction per test example."""
    csv = write_csv(tmp_path / 'news.csv')
    out = tmp_path / 'out'
    monkeypatch.setattr(sys, 'argv', ['baseline.py', f'--data={csv}', f'--out_dir={out}'])
    baseline.main()
    results = json.loads((out / 'test_results.json').read_text())
    splits = tasks.load_task_data('classification', str(csv), seed=1337)  # finetune.py's defaults
    assert results['n_examples'] == len(splits['test']) == 20
    assert results['accuracy'] == 1.0 and results['C'] in (0.3, 1.0, 3.0, 10.0, 30.0)  # word-disjoint classes
    predictions = [json.loads(line) for line in (out / 'test_predictions.jsonl').read_text().splitlines()]
    assert [p['text'] for p in predictions] == [ex['text'] for ex in splits['test']]
    assert np.mean([p['predicted'] == p['label'] for p in predictions]) == results['accuracy']


def test_baseline_fits_on_train_only(tmp_path):
    """The vectoriser's vocabulary comes from train alone: a word that only the test split has gets no feature."""
    csv = write_csv(tmp_path / 'news.csv')
    splits = tasks.load_task_data('classification', str(csv), seed=1337)
    splits['test'] = [{'text': 'zyzzyva zyzzyva zyzzyva', 'label': 'sport'}] + splits['test']
    names = tasks.label_names(splits['train'], 'classification')
    features = baseline.vectorizer(1000).fit([ex['text'] for ex in splits['train']])
    assert features.transform(['zyzzyva zyzzyva']).nnz == 0
    _, _, report = baseline.fit_and_score(splits, names, [1.0], 1000, 0)
    assert len(report['predictions']) == len(splits['test'])


def test_baseline_errors_are_one_line(tmp_path, script_main, monkeypatch):
    code, err = script_main('baseline', '--C=-1')
    assert_one_line_error(code, err, 'C must be above 0')
    code, err = script_main('baseline', '--C_grid=1,x')
    assert_one_line_error(code, err, 'C_grid')
    code, err = script_main('baseline', f'--data={tmp_path / "none.csv"}')
    assert_one_line_error(code, err, 'not found')
    monkeypatch.setitem(sys.modules, 'sklearn', None)
    code, err = script_main('baseline', f'--data={write_csv(tmp_path / "news.csv")}')
    assert_one_line_error(code, err, 'pip install scikit-learn')
