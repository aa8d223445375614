"""
Tests for dedup.py's near-duplicates at corpus scale (vectorised shingles, the streaming HeldOut index), offline:

    python -m pytest -q tests/test_dedup.py
"""
import json
import os
import re
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # conftest.py does this too; kept so the file runs on its own
    sys.path.insert(0, str(REPO))
import corpus  # noqa: E402
import dedup  # noqa: E402
import prepare as P  # noqa: E402
from test_prepare import draws, random_word_docs, read_docs  # noqa: E402

MASK = (1 << 64) - 1


def reference_shingles(text, n=dedup.DEDUP_SHINGLE):
    """dedup's shingles written plainly: the words of re.findall(r'\\w+', text.lower()), each hashed as the sum of
    its code points times BASE ** position, mixed by fmix64, then n of them folded as h * M + word + 1."""
    def fmix(h):
        h ^= h >> 33
        h = h * 0xFF51AFD7ED558CCD & MASK
        h ^= h >> 33
        h = h * 0xC4CEB9FE1A85EC53 & MASK
        return h ^ (h >> 33)
    words = [fmix(sum(ord(c) * pow(dedup._BASE, i, 1 << 64) for i, c in enumerate(word)) & MASK)
             for word in re.findall(r'\w+', text.lower())]
    k = min(n, len(words))
    out = set()
    for i in range(len(words) - k + 1 if words else 0):
        h = 0
        for word in words[i:i + k]:
            h = (h * int(dedup._SHINGLE_MULTIPLIER) + word + 1) & MASK
        out.add(h)
    return sorted(out)


def test_shingles_match_the_plain_definition(monkeypatch):
    """The vectorised hashing sees the words re.findall(r'\\w+', text.lower()) sees, with Unicode's awkward cases:
    İ (two characters in lower case), Σ (lower case by context), code points above 0xFFFF, lone surrogates."""
    rng = np.random.default_rng(0)
    alphabet = list("ab1_ .,'\n\t-") + ['é', 'İ', 'Σ', 'ς', 'ß', '東', 'ǅ', '٣', '²', '\u0307', '\u212a', '\ufffe',
                                         '\uffff', '\ud83d', '\U00010400', '\U0001f642', '\U00020000']
    for trial in range(300):
        texts = [''.join(rng.choice(alphabet, size=rng.integers(0, 60))) for _ in range(rng.integers(1, 6))]
        for text, got in zip(texts, dedup.doc_shingles(texts)):
            assert got.dtype == np.uint64 and got.tolist() == reference_shingles(text), text
        everything = dedup.batch_shingles(texts)
        assert sorted(set(everything.tolist())) == sorted(set().union(*map(reference_shingles, texts)))
    assert dedup.doc_shingles([]) == [] and len(dedup.batch_shingles([''])) == 0

    monkeypatch.setattr(dedup, '_SEGMENT', 16)  # hashed 16 code points at a time: words never cut
    texts = [' '.join(''.join(rng.choice(list('abcdefghé'), size=rng.integers(1, 15))) for _ in range(40))
             for _ in range(5)]
    assert [s.tolist() for s in dedup.doc_shingles(texts)] == [reference_shingles(t) for t in texts]
    long_word = 'x' * 40 + ' and some more words after it'  # over _SEGMENT: hashed as pieces, still the same each time
    assert np.array_equal(dedup.shingles(long_word), dedup.doc_shingles(['a b', long_word])[1])


def stream_held_out(splits, texts, batch_chars=20_000):
    """dedup.HeldOut over the val and test texts, train's texts streamed past in batches of ~batch_chars."""
    held = [i for i, split in enumerate(splits) if split != 'train']
    shingles = dedup.doc_shingles([texts[i] for i in held])
    held_out = dedup.HeldOut([splits[i] for i in held], np.concatenate(shingles), [len(s) for s in shingles])
    batch, size = [], 0
    for text, split in zip(texts + [''], splits + ['train']):
        if split == 'train':
            batch.append(text)
            size += len(text)
        if size >= batch_chars or text == '' and batch:
            held_out.mark(held_out.found(dedup.batch_shingles(batch)))
            batch, size = [], 0
    moved, containment = held_out.near_duplicates(dedup.DEDUP_THRESHOLD)
    return {held[i] for i in moved}, {held[i]: c for i, c in containment.items()}


def reference_near_duplicates(splits, doc_shingles, threshold):
    """dedup.near_duplicates's rule written plainly with Python sets: a val document moves with at least threshold
    of its shingles in train's, a test one with that much in train's and the remaining val documents'; moved
    documents join train and the rule repeats until nothing moves. Containment: each document's first."""
    docs = [set(s.tolist()) for s in doc_shingles]
    pool = set().union(*(doc for doc, split in zip(docs, splits) if split == 'train'))
    moved, containment = set(), {}
    while True:
        newly = set()
        for split in ('val', 'test'):
            against = pool if split == 'val' else pool.union(
                *(docs[i] for i, s in enumerate(splits) if s == 'val' and i not in moved))
            for i in (i for i, s in enumerate(splits) if s == split and i not in moved):
                fraction = len(docs[i] & against) / len(docs[i]) if docs[i] else 0.0
                containment.setdefault(i, fraction)
                if fraction >= threshold:
                    newly.add(i)
        if not newly:
            return moved, containment
        moved |= newly
        pool = pool.union(*(docs[i] for i in newly))


def test_near_duplicates_follow_the_plain_rule():
    """Random small documents over a small vocabulary of shingles, so that copies chain (a val document moved to
    train takes a test one with it): the same moved documents and containments as the rule written with sets."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 12))
        splits = rng.choice(['train', 'val', 'test'], size=n).tolist()
        docs = [np.unique(rng.integers(0, 24, size=int(rng.integers(0, 12)))).astype(np.uint64) for _ in range(n)]
        threshold = float(rng.choice([0.3, 0.5, 0.8]))
        assert dedup.near_duplicates(splits, docs, threshold) == reference_near_duplicates(splits, docs, threshold)


def test_streaming_decides_as_the_plain_rule_on_bbc_news():
    """BBC News's seeded split: the streaming index and near_duplicates move the same 13 articles as the rule
    written with sets, with the same containment for every val and test article."""
    articles = corpus.bbc_news_articles()
    split_of = corpus.split_articles([path for path, _, _ in articles], corpus.BBC_VAL_FRACTION,
                                     corpus.BBC_TEST_FRACTION, corpus.BBC_SEED)
    splits, texts = [split_of[path] for path, _, _ in articles], [text for _, _, text in articles]
    doc_shingles = [dedup.shingles(text) for text in texts]
    expected = reference_near_duplicates(splits, doc_shingles, dedup.DEDUP_THRESHOLD)
    assert dedup.near_duplicates(splits, doc_shingles, dedup.DEDUP_THRESHOLD) == expected and len(expected[0]) == 13
    streamed = stream_held_out(splits, texts)
    assert streamed == expected
    assert sorted(articles[i][0] for i in streamed[0]) == corpus.bbc_news_split_of(articles)[1]['moved_paths']


def plant_near_duplicates(docs, splits, n_planted, seed=0):
    """Lightly edited copies of n_planted held-out documents written over train documents (every 25th word changed,
    the last sentence's worth of words dropped, the case changed): (docs, the held-out numbers planted)."""
    rng = np.random.default_rng(seed)
    held = [i for i, split in enumerate(splits) if split != 'train']
    train = [i for i, split in enumerate(splits) if split == 'train']
    planted = sorted(rng.choice(held, size=n_planted, replace=False).tolist())
    docs = list(docs)
    for original, copy in zip(planted, rng.choice(train, size=n_planted, replace=False).tolist()):
        words = docs[original].split()
        words = [word if i % 25 else 'edited' for i, word in enumerate(words)][:-6]
        docs[copy] = ' '.join(words).upper() + '\n'
    return docs, planted


def test_planted_near_duplicates_are_found_streaming(tmp_path, monkeypatch):
    """prepare.py's streaming removal, many small batches in two threads: every planted near-copy moves to train,
    nothing else does."""
    docs = random_word_docs(400, seed=3)
    splits = draws(len(docs), 0.1, 0.1)
    docs, planted = plant_near_duplicates(docs, splits, 12)
    (tmp_path / 'docs.jsonl').write_text(''.join(json.dumps({'text': d}) + '\n' for d in docs))
    monkeypatch.setattr(dedup, 'BATCH_CHARS', 3000)
    data_dir = P.prepare(tmp_path / 'docs.jsonl', out_root=tmp_path / 'data', val_fraction=0.1, test_fraction=0.1,
                         num_threads=2)
    dedup_meta = P.load_meta(data_dir)['dedup']
    assert sum(dedup_meta['moved_to_train'].values()) == 12
    assert dedup_meta['containment']['val']['>=0.5'] + dedup_meta['containment']['test']['>=0.5'] == 12
    kept = [i for i, split in enumerate(splits) if split != 'train' and i not in planted]
    assert read_docs(data_dir, 'val') + read_docs(data_dir, 'test') == \
        [docs[i] for i in kept if splits[i] == 'val'] + [docs[i] for i in kept if splits[i] == 'test']
    assert read_docs(data_dir, 'train') == [docs[i] for i, split in enumerate(splits) if split == 'train'
                                            or i in planted]
    assert stream_held_out(splits, docs)[0] == set(planted)


def test_held_out_memory_does_not_grow_with_train():
    """The index holds the held-out documents' shingles alone: its size, and the peak memory of streaming train
    past it, stay the same when 10 times the train text streams past."""
    held_out_docs = random_word_docs(50, seed=1)
    shingles = dedup.doc_shingles(held_out_docs)
    held_out = dedup.HeldOut(['val'] * 50, np.concatenate(shingles), [len(s) for s in shingles])
    size = held_out.nbytes
    assert size < 30 * sum(map(len, shingles)) + 2 ** 14  # ~21 bytes a shingle, and a 16-bit filter at the least
    rng = np.random.default_rng(2)
    vocab = np.array([''.join(rng.choice(list('abcdefghijklmnopqrstuvwxyz'), size=6)) for _ in range(3000)])
    train_batches = [[' '.join(words) for words in rng.choice(vocab, size=(300, 80))] for _ in range(55)]  # ~170 KB each
    peaks = []
    tracemalloc.start()  # numpy's arrays are traced too
    try:
        for batches in (train_batches[:5], train_batches[5:]):
            tracemalloc.reset_peak()
            for batch in batches:
                held_out.mark(held_out.found(dedup.batch_shingles(batch)))
            peaks.append(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()
    assert held_out.nbytes == size
    assert peaks[1] < 1.1 * peaks[0], peaks
    assert not held_out.in_train.any()  # random words: no 8-word shingle shared by chance


def test_interrupted_removal_leaves_nothing(tmp_path, monkeypatch):
    """Ctrl-C (or any error) while train streams past the held-out documents, in a hashing thread: no dataset, no
    build directory; the next run prepares it."""
    (tmp_path / 'docs.jsonl').write_text(''.join(json.dumps({'text': d}) + '\n' for d in random_word_docs(200)))
    monkeypatch.setattr(dedup, 'BATCH_CHARS', 2000)
    calls = []

    def interrupted(texts):
        calls.append(len(texts))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return dedup.batch_shingles(texts)
    with monkeypatch.context() as m:
        m.setattr(dedup, 'batch_shingles', interrupted)
        with pytest.raises(KeyboardInterrupt):
            P.prepare(tmp_path / 'docs.jsonl', out_root=tmp_path / 'data', num_threads=2)
    assert len(calls) >= 3 and list((tmp_path / 'data').iterdir()) == []
    data_dir = P.prepare(tmp_path / 'docs.jsonl', out_root=tmp_path / 'data', num_threads=2)
    assert sorted(os.listdir(tmp_path / 'data')) == ['docs'] and P.load_meta(data_dir)['dedup']['moved_to_train']


def test_val_left_empty_by_removal_gets_a_drawn_train_document(tmp_path):
    """When removal moves every val document to train, val gets train's last document, as when the draws give it
    none."""
    docs = random_word_docs(30, seed=4)
    splits = draws(len(docs), 0.1)
    [val] = [i for i, split in enumerate(splits) if split == 'val']  # (document 17)
    train = [i for i, split in enumerate(splits) if split == 'train']
    docs[val] = docs[train[0]]  # the only val document is a copy
    (tmp_path / 'docs.jsonl').write_text(''.join(json.dumps({'text': d}) + '\n' for d in docs))
    data_dir = P.prepare(tmp_path / 'docs.jsonl', out_root=tmp_path / 'data', val_fraction=0.1)
    assert P.load_meta(data_dir)['dedup']['moved_to_train'] == {'val': 1}
    assert read_docs(data_dir, 'val') == [docs[train[-1]]]
    assert read_docs(data_dir, 'train') == [docs[i] for i in sorted(train[:-1] + [val])]
    splits_meta = P.load_meta(data_dir)['splits']
    assert splits_meta['val']['documents'] == 1 and splits_meta['train']['documents'] == len(train)
    assert splits_meta['val']['bytes'] == len(docs[train[-1]].encode())
