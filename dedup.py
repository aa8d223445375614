"""
Near-duplicates across splits: a val or test document that mostly repeats a train document measures memorisation,
not generalisation. prepare.py (and tasks.py for BBC News's fine-tuning split) move such documents to train.

    word_ids = {}
    doc_shingles = [shingles(text, word_ids) for text in texts]      # hashed word 8-shingles, sorted, distinct
    moved, containment = near_duplicates(splits, doc_shingles, 0.5)  # splits[i]: 'train', 'val' or 'test'

Each document is a set of hashed word 8-shingles; a val document with at least DEDUP_THRESHOLD of its shingles in
train's, or a test document with that much in train's or val's, moves to train (nothing is thrown away, and a
near-copy in train teaches what its twin does). Memory: 8 bytes per word of train for its shingle set, plus a dict
of the distinct words; for corpora of many GB, MinHash would do. numpy and the standard library only.
"""
import re

import numpy as np

# a val/test document with at least this fraction of its word
# 8-shingles in train moves to train. BBC News's 319 val+test articles (containment in train's shingles):
# 287 below 0.1, 13 in 0.1-0.3, 6 in 0.3-0.5 (a later rewrite of a story sharing paragraphs: kept, a fair test),
# none in 0.50-0.70, 13 above 0.70 (11 above 0.9: the same article, edited): 0.5 moves those 13
DEDUP_THRESHOLD, DEDUP_SHINGLE = 0.5, 8

_WORD = re.compile(r'\w+')
_SHINGLE_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd: n-gram hashes of word ids, wrapping mod 2**64


def shingles(text, word_ids, n=DEDUP_SHINGLE):
    """The distinct hashed n-shingles of text (numpy uint64, sorted): n-grams of its lower-cased \\w+ words, the
    words numbered by word_ids (a dict that grows), each n-gram hashed to 64 bits. Fewer than n words: one shingle."""
    words = _WORD.findall(text.lower())
    if not words:
        return np.zeros(0, dtype=np.uint64)
    ids = np.fromiter((word_ids.setdefault(word, len(word_ids)) for word in words), dtype=np.uint64, count=len(words))
    k = min(n, len(ids))
    hashes = np.zeros(len(ids) - k + 1, dtype=np.uint64)
    for i in range(k):
        hashes = hashes * _SHINGLE_MULTIPLIER + ids[i:len(ids) - k + 1 + i] + np.uint64(1)
    return _sorted_distinct(hashes)


def _sorted_distinct(*arrays):
    """The distinct values of the arrays together, sorted (np.unique's hashing is several times slower here)."""
    values = np.sort(np.concatenate(arrays)) if arrays else np.zeros(0, dtype=np.uint64)
    return values[np.concatenate(([True], values[1:] != values[:-1]))] if len(values) else values


def containment_of(doc, pool):
    """The fraction of doc's shingles that are in pool (both sorted and distinct)."""
    if not len(doc) or not len(pool):
        return 0.0
    pos = np.minimum(np.searchsorted(pool, doc), len(pool) - 1)
    return float((pool[pos] == doc).mean())


def near_duplicates(splits, doc_shingles, threshold):
    """Which val/test documents move to train, and the containment of each at the start. splits[i] is document i's
    split, doc_shingles[i] its shingles(). A val document moves with at least threshold of its shingles in train's,
    a test document with that much in train's and val's; a moved document's shingles join train's, so this repeats
    until nothing moves (then no val document is a near-copy of train, no test one of train or val).
    Returns (set of moved i, {i: containment})."""
    pool = _sorted_distinct(*(s for split, s in zip(splits, doc_shingles) if split == 'train'))
    moved, containment = set(), {}
    while True:
        newly = set()
        for split in ('val', 'test'):
            against = pool if split == 'val' else _sorted_distinct(
                pool, *(doc_shingles[i] for i, s in enumerate(splits) if s == 'val' and i not in moved))
            for i, s in enumerate(splits):
                if s == split and i not in moved:
                    fraction = containment_of(doc_shingles[i], against)
                    containment.setdefault(i, fraction)
                    if fraction >= threshold:
                        newly.add(i)
        if not newly:
            return moved, containment
        moved |= newly
        pool = _sorted_distinct(pool, *(doc_shingles[i] for i in sorted(newly)))


def dedup_report(splits, containment, moved, threshold):
    """The meta.json 'dedup' entry: threshold, shingle size, documents moved to train, and the containment
    distribution of val and test before moving (how many at least 0.3 / 0.5 / 0.9, and the mean)."""
    report = {'threshold': threshold, 'shingle': DEDUP_SHINGLE, 'moved_to_train': {}, 'containment': {}}
    for split in ('val', 'test'):
        values = np.array([c for i, c in containment.items() if splits[i] == split])
        if not len(values) and split == 'test':
            continue
        report['moved_to_train'][split] = sum(splits[i] == split for i in moved)
        report['containment'][split] = {'documents': len(values), **{f'>={t}': int((values >= t).sum()) for t in
                                        (0.3, 0.5, 0.9)}, 'mean': round(float(values.mean()), 4) if len(values) else 0}
    return report


def summary_line(report):
    moved = report['moved_to_train']
    dist = '; '.join(f"{split} >=0.3/0.5/0.9: {c['>=0.3']}/{c['>=0.5']}/{c['>=0.9']} of {c['documents']}, mean "
                     f"{c['mean']:.3f}" for split, c in report['containment'].items())
    return (f"near-duplicates: moved {' and '.join(f'{n} {split}' for split, n in moved.items())} documents to train "
            f"(>= {report['threshold']} of their {report['shingle']}-word shingles in train's; test: train's and val's); "
            f"containment {dist}")
