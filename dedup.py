"""
Near-duplicates across splits: a val or test document that mostly repeats a train document measures memorisation,
not generalisation. prepare.py (and tasks.py for BBC News's fine-tuning split) move such documents to train.

    doc_shingles = [shingles(text) for text in texts]                # hashed word 8-shingles, sorted, distinct
    moved, containment = near_duplicates(splits, doc_shingles, 0.5)  # splits[i]: 'train', 'val' or 'test'
    moved, report = streamed_near_duplicates(make_events, 0.5, 2)    # a corpus of any size, read twice, 2 threads

    held_out = HeldOut(held_out_splits, np.concatenate(held_out_shingles), lengths)  # which does: the val and test
    for texts in batches_of_train_documents:                                          # documents' shingles held,
        held_out.mark(held_out.found(batch_shingles(texts)))                          # train's streamed past them,
    moved, containment = held_out.near_duplicates(0.5)                                # decided as near_duplicates

Each document is a set of hashed word 8-shingles; a val document with at least DEDUP_THRESHOLD of its shingles in
train's, or a test document with that much in train's or val's, moves to train (nothing is thrown away, and a
near-copy in train teaches what its twin does). HeldOut decides: it holds only the val and test documents'
shingles (15-17 bytes a held-out word) and asks of each train shingle whether it is one of them, so its memory does
not grow with train; near_duplicates hands it every document's shingles at once (8 bytes a word). Hashing is
vectorised over batches of documents (~1 MB of text at a time; numpy releases the GIL, so batches hash in parallel
threads). numpy and the standard library only.
"""
import collections
import functools
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# a val/test document with at least this fraction of its word
# 8-shingles in train moves to train. BBC News's 319 val+test articles (containment in train's shingles):
# 287 below 0.1, 13 in 0.1-0.3, 6 in 0.3-0.5 (a later rewrite of a story sharing paragraphs: kept, a fair test),
# none in 0.50-0.70, 13 above 0.70 (11 above 0.9: the same article, edited): 0.5 moves those 13
DEDUP_THRESHOLD, DEDUP_SHINGLE = 0.5, 8

_WORD = re.compile(r'\w+')
# A word's hash: sum of its lower-cased code points times _BASE ** position (mod 2**64), mixed by _mix; a shingle's:
# its word hashes folded as h = h * _SHINGLE_MULTIPLIER + word + 1. Both odd multipliers, arithmetic wrapping mod 2**64.
_BASE = 0xD6E8FEB86659FD93
_SHINGLE_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
_SEGMENT = 1 << 18  # code points hashed per prefix sum (8 bytes each): the tables of powers hold this many
_SPECIAL = 0xFFFFFFFF  # in the code point table: ask Python
_CHUNK = 1 << 18  # shingles at a time where temporaries of a whole array would cost memory
BATCH_CHARS = 1 << 20  # text streamed_near_duplicates hashes at a time, in one of its threads


@functools.lru_cache(maxsize=None)
def _powers(n):
    """_BASE ** i and _BASE ** -i (mod 2**64) for i < n."""
    base, inverse = np.full(n, _BASE, np.uint64), np.full(n, pow(_BASE, -1, 1 << 64), np.uint64)
    base[0] = inverse[0] = 1
    return np.cumprod(base), np.cumprod(inverse)


@functools.lru_cache(maxsize=None)
def _code_point_table():
    """For each code point below 0x10000: its lower case where that is a \\w character, 0 where it is not, _SPECIAL
    where a table can't tell (İ lower-cases to two characters, Σ by its context; 0xFFFF stands for the code points
    above, which np.take clips to it)."""
    lowers = (chr(c).lower() for c in range(0x10000))
    return np.array([_SPECIAL if len(lower) != 1 or c in (0x3A3, 0xFFFF) else ord(lower) if _WORD.match(lower) else 0
                     for c, lower in enumerate(lowers)], dtype=np.uint32)


def _word_code_points(text, lowered=False):
    """text's code points lower-cased, 0 where not a \\w character: the characters _WORD.findall(text.lower()) keeps,
    as uint32. None where text needs str.lower() first (lowered: text is lower case already)."""
    cps = np.frombuffer(text.encode('utf-32-le', 'surrogatepass'), dtype=np.uint32)
    values = _code_point_table().take(cps, mode='clip')
    if not len(values) or values.max() != _SPECIAL:
        return values
    odd = np.flatnonzero(values == _SPECIAL)
    distinct, inverse = np.unique(cps[odd], return_inverse=True)
    if not lowered and distinct[0] < 0xFFFF:  # İ or Σ, the only ones below it
        return None
    lowers = [chr(c).lower() for c in distinct.tolist()]  # above 0xFFFF: one character each
    values[odd] = np.array([ord(lower) if _WORD.match(lower) else 0 for lower in lowers], dtype=np.uint32)[inverse]
    return values


def _mix(h):
    """MurmurHash3's 64-bit finaliser (fmix64): every bit of h moves every bit of the result."""
    for multiplier in (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53):
        h = (h ^ (h >> np.uint64(33))) * np.uint64(multiplier)
    return h ^ (h >> np.uint64(33))


def _word_hashes(values):
    """(hash of each word, where each word starts) of _word_code_points' values: a word is a run of non-zero values.
    A run longer than _SEGMENT (256K code points without a space) counts as words of _SEGMENT code points."""
    is_word = np.concatenate(([False], values != 0, [False]))
    edges = np.flatnonzero(is_word[1:] != is_word[:-1])  # where a word starts, then where it ends, and so on
    starts, ends = edges[0::2], edges[1::2]
    if len(starts) and (ends - starts).max() > _SEGMENT:
        pieces = [(s, min(s + _SEGMENT, e)) for s, e in zip(starts.tolist(), ends.tolist()) for s in range(s, e, _SEGMENT)]
        starts, ends = (np.array(part, dtype=np.int64) for part in zip(*pieces))
    powers, inverse_powers = _powers(_SEGMENT)
    hashes = np.empty(len(starts), dtype=np.uint64)
    done = 0
    while done < len(starts):  # segments of whole words, each under _SEGMENT code points
        base = starts[done]
        stop = int(np.searchsorted(ends, base + _SEGMENT, side='right'))
        prefix = np.zeros(ends[stop - 1] - base + 1, dtype=np.uint64)
        np.multiply(values[base:ends[stop - 1]], powers[:len(prefix) - 1], out=prefix[1:])
        np.cumsum(prefix[1:], out=prefix[1:])
        s, e = starts[done:stop] - base, ends[done:stop] - base
        hashes[done:stop] = (prefix[e] - prefix[s]) * inverse_powers[s]  # sum of code point * _BASE ** position
        done = stop
    return _mix(hashes), starts


def _batch_shingles(texts, n=DEDUP_SHINGLE):
    """(hashed n-shingles of each text, in order and with repeats; how many each text has)."""
    texts = list(texts)
    values = _word_code_points('\n'.join(texts))  # joined by a character no word spans
    if values is None:
        texts = [text.lower() for text in texts]  # (lower-casing may change their lengths)
        values = _word_code_points('\n'.join(texts), lowered=True)
    words, word_starts = _word_hashes(values)
    text_starts = np.cumsum([0] + [len(text) + 1 for text in texts])
    counts = np.diff(np.searchsorted(word_starts, text_starts))  # words of each text
    per_text = np.where(counts >= n, counts - n + 1, np.minimum(counts, 1))
    # each shingle's first word and length: n words at every word of a text, or all its words when it has fewer
    offsets, shingle_offsets = np.cumsum(counts) - counts, np.cumsum(per_text) - per_text  # each text's first ones
    first = np.arange(per_text.sum()) + np.repeat(offsets - shingle_offsets, per_text)
    length = np.repeat(np.minimum(counts, n), per_text)
    padded = np.concatenate((words + np.uint64(1), np.zeros(n - 1, np.uint64)))  # (+1 as the fold adds it)
    folds, out = np.zeros(len(words), dtype=np.uint64), np.empty(len(first), dtype=np.uint64)
    for i in range(n):  # folds: of the i + 1 words from each word on
        folds *= _SHINGLE_MULTIPLIER
        folds += padded[i:i + len(words)]
        done = length == i + 1
        out[done] = folds[first[done]]
    return out, per_text


def batch_shingles(texts):
    """The hashed word 8-shingles of all the texts together (uint64, unsorted, with repeats): what HeldOut.found
    looks up. One vectorised pass: give it ~1 MB of text at a time."""
    return _batch_shingles(texts)[0]


def doc_shingles(texts):
    """The distinct hashed word 8-shingles of each text (a list of sorted uint64 arrays), in one vectorised pass."""
    values, per_text = _batch_shingles(texts)
    return [_sorted_distinct(part) for part in np.split(values, np.cumsum(per_text)[:-1])] if len(per_text) else []


def shingles(text):
    """The distinct hashed n-shingles of text (numpy uint64, sorted): n-grams of its lower-cased \\w+ words, each word
    hashed to 64 bits from its characters, each n-gram hashed from its words. Fewer than n words: one shingle."""
    return doc_shingles([text])[0]


def _sorted_distinct(values):
    """The distinct values, sorted (np.unique's hashing is several times slower here)."""
    values = np.sort(values)
    return values[np.concatenate(([True], values[1:] != values[:-1]))] if len(values) else values


def near_duplicates(splits, doc_shingles, threshold):
    """Which val/test documents move to train, and the containment of each at the start. splits[i] is document i's
    split, doc_shingles[i] its shingles(). A val document moves with at least threshold of its shingles in train's,
    a test document with that much in train's and val's; a moved document's shingles join train's, so this repeats
    until nothing moves (then no val document is a near-copy of train, no test one of train or val). HeldOut decides,
    train's shingles passed in one piece. Returns (set of moved i, {i: containment})."""
    held = [i for i, split in enumerate(splits) if split != 'train']
    held_out = _held_out([splits[i] for i in held], [doc_shingles[i] for i in held])
    train_shingles = [s for split, s in zip(splits, doc_shingles) if split == 'train']
    held_out.mark(held_out.found(np.concatenate([np.zeros(0, np.uint64), *train_shingles])))
    moved, containment = held_out.near_duplicates(threshold)
    return {held[i] for i in moved}, {held[i]: fraction for i, fraction in containment.items()}


def _held_out(splits, doc_shingles):
    """A HeldOut of the documents of splits, doc_shingles[i] (a shingles() array) document i's."""
    return HeldOut(splits, np.concatenate([np.zeros(0, np.uint64), *doc_shingles]), [len(s) for s in doc_shingles])


class HeldOut:
    """The val and test documents' shingles, and which of them occur in train: train's shingles are streamed past
    (found, then mark), so memory is the held-out documents' alone: 15-17 bytes a shingle (~25 while it is built).
    near_duplicates then decides which move, by the rule the function near_duplicates states."""

    def __init__(self, splits, shingles, lengths):
        """splits[i] ('val' or 'test') of each held-out document; shingles: their shingles() one after another,
        lengths[i] of them document i's."""
        self.splits = np.array(splits)
        self.doc_starts = np.cumsum(np.concatenate(([0], lengths)), dtype=np.int64)
        self.pool = _sorted_distinct(shingles)  # every held-out shingle once, sorted
        self.doc_index = np.empty(len(shingles), dtype=np.int32 if len(self.pool) < 2 ** 31 else np.int64)
        for start in range(0, len(shingles), _CHUNK):  # each document's shingles as positions in pool
            chunk = shingles[start:start + _CHUNK]
            order = np.argsort(chunk)  # (sorted keys find their places several times faster)
            self.doc_index[start:start + _CHUNK][order] = np.searchsorted(self.pool, chunk[order])
        self.in_train = np.zeros(len(self.pool), dtype=bool)
        # a Bloom filter of 16-32 bits per pool shingle, two of them set for each (at its top and its bottom bits):
        # 1 train shingle in ~100-300 passes by chance, and is looked up in pool
        bits = max(16, len(self.pool).bit_length() + 4)
        self.shift, self.low = np.uint64(64 - bits), np.uint64((1 << bits) - 1)
        self.filter = np.zeros(1 << (bits - 3), dtype=np.uint8)
        for start in range(0, len(self.pool), _CHUNK):
            chunk = self.pool[start:start + _CHUNK]
            for bit in (chunk >> self.shift, chunk & self.low):
                np.bitwise_or.at(self.filter, bit >> np.uint64(3), np.left_shift(1, bit & np.uint64(7)).astype(np.uint8))

    def _in_filter(self, bit):
        return (self.filter[bit >> np.uint64(3)] >> (bit & np.uint64(7)).astype(np.uint8)) & 1 != 0

    @property
    def nbytes(self):
        return sum(a.nbytes for a in vars(self).values() if isinstance(a, np.ndarray))  # every array it holds

    def found(self, values):
        """The positions in pool of those of values (train shingles, any order) that are held-out shingles. Only
        reads: threads may call it at once."""
        maybe = values[self._in_filter(values >> self.shift)]
        maybe = maybe[self._in_filter(maybe & self.low)]  # the second bit, for those that have the first
        maybe.sort()  # (sorted keys find their places several times faster)
        pos = np.minimum(np.searchsorted(self.pool, maybe), max(len(self.pool) - 1, 0))
        return pos[self.pool[pos] == maybe]

    def mark(self, found):
        """Record found() positions as shingles train has."""
        self.in_train[found] = True

    def _hits(self, against):
        """How many of each document's shingles are flagged in against (a bool per pool shingle)."""
        hits = np.zeros(len(self.splits), dtype=np.int64)
        doc = 0
        while doc < len(self.splits):  # documents of about _CHUNK shingles at a time
            end = max(doc + 1, int(np.searchsorted(self.doc_starts, self.doc_starts[doc] + _CHUNK, side='right')) - 1)
            lo, hi = self.doc_starts[doc], self.doc_starts[end]
            prefix = np.zeros(hi - lo + 1, dtype=np.int64)
            np.cumsum(against[self.doc_index[lo:hi]], out=prefix[1:])
            hits[doc:end] = prefix[self.doc_starts[doc + 1:end + 1] - lo] - prefix[self.doc_starts[doc:end] - lo]
            doc = end
        return hits

    def _flag(self, flags, documents):
        """Set flags (a bool per pool shingle) at the shingles of the documents (a bool per document)."""
        flags[self.doc_index[np.repeat(documents, np.diff(self.doc_starts))]] = True

    def near_duplicates(self, threshold):
        """(set of moved i, {i: containment}) as near_duplicates() returns them, i numbering the held-out documents."""
        in_pool = self.in_train.copy()  # train's, then the moved documents' too
        lengths = np.diff(self.doc_starts)
        moved, containment = np.zeros(len(self.splits), dtype=bool), {}
        while True:
            newly = np.zeros(len(self.splits), dtype=bool)
            for split in ('val', 'test'):
                if not (self.splits == split).any():
                    continue
                against = in_pool
                if split == 'test':  # and the val documents' that stay
                    against = in_pool.copy()
                    self._flag(against, (self.splits == 'val') & ~moved)
                fraction = self._hits(against) / np.maximum(lengths, 1)
                for i in np.flatnonzero((self.splits == split) & ~moved).tolist():
                    containment.setdefault(i, float(fraction[i]))
                    newly[i] = fraction[i] >= threshold
            if not newly.any():
                return set(np.flatnonzero(moved).tolist()), containment
            moved |= newly
            self._flag(in_pool, newly)


def streamed_near_duplicates(events, threshold, num_threads, progress=lambda desc: lambda nbytes: None):
    """near_duplicates() for a corpus of any size, read twice: events() gives a fresh iterator of prepare.py's events
    (split, text, nbytes), a document's text in pieces and None at its end. The val and test documents' shingles are
    held (HeldOut), then train's documents stream past them; both passes hash batches of ~BATCH_CHARS characters in
    num_threads threads. progress(desc) gives an update(nbytes) for each pass. Returns (the numbers of the documents
    to move to train, counted from 0 in order; the dedup_report)."""
    numbers, splits, held_out_shingles = [], [], []
    for batch, shingles_of_batch in _in_threads(lambda batch: (batch, doc_shingles([text for _, _, text in batch])),
                                                _batches(events, ('val', 'test'), progress('the val and test documents')),
                                                num_threads):
        numbers += [number for number, _, _ in batch]
        splits += [split for _, split, _ in batch]
        held_out_shingles += shingles_of_batch
    held_out = _held_out(splits, held_out_shingles)
    del held_out_shingles
    for found in _in_threads(lambda batch: held_out.found(batch_shingles([text for _, _, text in batch])),
                             _batches(events, ('train',), progress('train streamed past them')), num_threads):
        held_out.mark(found)
    moved, containment = held_out.near_duplicates(threshold)
    return {numbers[i] for i in moved}, dedup_report(splits, containment, moved, threshold)


def _batches(events, wanted, update):
    """Lists of (number, split, text) of the documents of events() whose split is in wanted, each list about
    BATCH_CHARS characters of text; documents are numbered 0, 1, ... in order, each text whole."""
    batch, batch_chars, number, parts = [], 0, 0, []
    for split, text, nbytes in events():
        update(nbytes)
        if text is None:
            if split in wanted:
                batch.append((number, split, ''.join(parts)))
                batch_chars += len(batch[-1][2])
                if batch_chars >= BATCH_CHARS:
                    yield batch
                    batch, batch_chars = [], 0
            number, parts = number + 1, []
        elif text and split in wanted:
            parts.append(text)
    update(None)
    if batch:
        yield batch


def _in_threads(fn, items, num_threads):
    """fn(item) for each of items, in order, computed in num_threads threads while items are read (a few ahead)."""
    with ThreadPoolExecutor(num_threads) as pool:
        pending = collections.deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) > 2 * num_threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # stopped early (an error, Ctrl-C): what has not started never will
            pool.shutdown(cancel_futures=True)


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
