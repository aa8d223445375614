"""
Tests for the byte-level BPE that prepare.py trains on a dataset's train split (tokenizer.py), offline, on CPU:

    python -m pytest -q tests/test_tokenizer.py
"""
import functools
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # conftest.py does this too; kept so the file runs on its own
    sys.path.insert(0, str(REPO))
import tokenizer as Tok  # noqa: E402
from conftest import make_english_text  # noqa: E402

pytest.importorskip('tokenizers')  # HF's Rust trainer: prepare.py needs it only for --tokenizer=bpe:N

TRICKY = ["Hello, world! It's naïve café — 東京 🙂 ", '12345 3.14159 £2,004m', 'a\n\n  b\r\n\tc   ', '',
          "They'll SAY it's 'quoted' don't", 'e\u0301 n\u0303 \u00a0nbsp\u3000ideographic', '👍🏽 👨‍👩‍👧 🇬🇧',
          '中文字符测试 한국어 日本語のテキスト', 'x' * 300, '\x00\x1c\x7f control', '<|endoftext|> [MASK] as text']


def random_texts(n, seed=0):
    """Strings of random code points from every plane that has text (no surrogates), mixed with spaces and ASCII."""
    rng = np.random.default_rng(seed)
    ranges = [(0x20, 0x7f), (0xa0, 0x2000), (0x0300, 0x0370), (0x3000, 0xa000), (0xac00, 0xd7a4),
              (0xe000, 0x10000), (0x1f300, 0x1fa00), (0x20000, 0x2a6e0), (0x0, 0x20)]
    texts = []
    for _ in range(n):
        chars = []
        for _ in range(rng.integers(0, 40)):
            lo, hi = ranges[rng.integers(len(ranges))]
            chars.append(chr(int(rng.integers(lo, hi))) if rng.random() < 0.7 else rng.choice([' ', '  ', '\n', 'the']))
        texts.append(''.join(chars))
    return texts


@functools.lru_cache(maxsize=None)
def trained(vocab_size=512, seed=0):
    """(meta, tokenizer) of a BPE trained on ~45 KB of English, with some accents, CJK and emoji."""
    text = make_english_text(seed=seed) + ' '.join(TRICKY) * 3
    meta = Tok.bpe_meta(Tok.train_bpe(text.splitlines(keepends=True), vocab_size))
    return meta, Tok.get_tokenizer('bpe', meta)


def test_vocab_layout_and_specials():
    meta, tok = trained()
    assert tok.name == 'bpe' and tok.vocab_size == meta['vocab_size'] == 512 and len(meta['ranks']) == 507
    assert meta['ranks'][:256] == [bytes([b]).hex() for b in range(256)]  # every byte is a token, id = byte value
    assert len(set(meta['ranks'])) == len(meta['ranks'])
    assert tok.eot_id == meta['eot_id'] == 507
    assert meta['special_ids'] == {'eot': 507, 'mask': 508, 'cls': 509, 'sep': 510, 'pad': 511}
    assert Tok.special_tokens(meta) == {'mask': 508, 'cls': 509, 'sep': 510, 'pad': 511, 'eot': 507, 'n_random': 507}
    assert tok.decode([tok.eot_id, 508, 509, 510, 511]) == '<|endoftext|>[MASK][CLS][SEP][PAD]'
    assert tok.encode('<|endoftext|> [MASK]') != [507, 508]  # ordinary text: specials are never parsed
    assert max(max(tok.encode(t), default=0) for t in TRICKY + random_texts(200)) < 507
    assert meta['pat_str'] == Tok.GPT2_PAT_STR and len(meta['vocab_sha256']) == 64
    assert Tok.get_tokenizer('bpe', meta) is not None and Tok.get_tokenizer('bpe', dict(meta)).encode('the') == \
        tok.encode('the')


def test_round_trip_is_byte_exact():
    meta, tok = trained()
    enc = Tok._bpe_encoding(meta)
    texts = TRICKY + random_texts(500)
    texts.append(bytes(range(256)).decode('utf-8', errors='replace'))  # invalid UTF-8, as a text API sees it
    texts.append(b'caf\xc3\xa9 \xe6\x9d\xb1\xff\xfe end'.decode('utf-8', errors='ignore'))  # as BBC News is read
    for text in texts:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert enc.decode_bytes(ids) == text.encode('utf-8')
        assert b''.join(enc.decode_single_token_bytes(i) for i in ids) == text.encode('utf-8')
    assert [ids.tolist() for ids in tok.encode_arrays(texts, 2)] == tok.encode_batch(texts, 2) == \
        [tok.encode(t) for t in texts]
    for b in range(256):  # every single byte is its own token, however it is written
        assert enc.decode_single_token_bytes(b) == bytes([b])
        assert enc.encode_single_token(bytes([b])) == b
    # tokens that are not UTF-8 alone (pieces of a multi-byte character) decode right together
    ids = tok.encode('🙂 東京 naïve')
    pieces = [enc.decode_single_token_bytes(i) for i in ids]
    assert any(not _is_utf8(piece) for piece in pieces)
    assert tok.decode(ids) == '🙂 東京 naïve'
    # a text normalised differently is other bytes, and keeps them
    composed, decomposed = 'é', unicodedata.normalize('NFD', 'é')
    assert tok.decode(tok.encode(decomposed)) == decomposed != composed


def _is_utf8(data):
    try:
        data.decode('utf-8')
        return True
    except UnicodeDecodeError:
        return False


def test_training_is_deterministic_and_exact_size():
    text = make_english_text(seed=3)
    runs = [Tok.train_bpe(iter(text.splitlines(keepends=True)), 700) for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0]) == 700 - 5
    assert Tok.bpe_meta(runs[0])['vocab_sha256'] == Tok.bpe_meta(runs[1])['vocab_sha256']
    assert Tok.bpe_meta(runs[0])['vocab_size'] == 700
    for size in (261, 262, 300):  # 261: the bytes and the specials, no merges
        assert Tok.bpe_meta(Tok.train_bpe([text], size))['vocab_size'] == size
    other = Tok.train_bpe([make_english_text(seed=4)], 700)
    assert Tok.bpe_meta(other)['vocab_sha256'] != Tok.bpe_meta(runs[0])['vocab_sha256']


def test_ranks_are_tiktoken_consistent():
    """Every merged token is the merge of two lower-ranked tokens, and encoding a token alone gives that token:
    the ranks mean the same to tiktoken's encoder as the merge order meant to the trainer."""
    meta, tok = trained()
    ranks = [bytes.fromhex(h) for h in meta['ranks']]
    rank_of = {token: rank for rank, token in enumerate(ranks)}
    for rank, token in enumerate(ranks[256:], 256):
        assert any(rank_of.get(token[:i], rank) < rank and rank_of.get(token[i:], rank) < rank
                   for i in range(1, len(token)))
    enc = Tok._bpe_encoding(meta)
    for rank, token in enumerate(ranks):
        assert enc.encode_single_token(token) == rank


def test_hf_tokenizer_json_gives_the_same_ids():
    """HF tokenizers, loaded from the tokenizer.json that prepare writes, agrees with tiktoken id for id."""
    from tokenizers import Tokenizer as HFTokenizer
    for vocab_size in (300, 512):
        meta, tok = trained(vocab_size)
        hf = HFTokenizer.from_str(Tok.bpe_tokenizer_json(meta))
        assert hf.get_vocab_size() == vocab_size
        assert [hf.token_to_id(t) for t in ('<|endoftext|>', '[MASK]', '[CLS]', '[SEP]', '[PAD]')] == \
            list(range(vocab_size - 5, vocab_size))
        texts = TRICKY[:-1] + random_texts(300, seed=1) + make_english_text(100, seed=9).splitlines()
        for text in texts:  # (HF parses special tokens written in the text; tiktoken's encode_ordinary never does)
            assert hf.encode(text).ids == tok.encode(text), text
            assert hf.decode(tok.encode(text)) == text


def test_bbc_news_ids_equal_hf():
    """On real news text: trained on 300 BBC News articles, tiktoken's ids equal HF's on 40 others."""
    import corpus
    from tokenizers import Tokenizer as HFTokenizer
    texts = [text for _, _, text in corpus.bbc_news_articles()[::5]]
    meta = Tok.bpe_meta(Tok.train_bpe(texts[:300], 2000))
    tok, hf = Tok.get_tokenizer('bpe', meta), HFTokenizer.from_str(Tok.bpe_tokenizer_json(meta))
    for text in texts[300:340]:
        assert hf.encode(text).ids == tok.encode(text)
        assert tok.decode(tok.encode(text)) == text


def test_word_seen_only_outside_training_is_not_one_token():
    meta, tok = trained()
    assert len(tok.encode(' council')) == 1  # frequent in the training text
    assert len(tok.encode(' Zyxwvutsrq')) > 1


def test_bpe_errors():
    for name in ('bpe:100', 'bpe:260', 'bpe:many', 'bpe:', 'bpe:8192.5'):
        with pytest.raises(Tok.DataError, match=r'give bpe:N with N an integer of at least 261'):
            Tok.get_tokenizer(name)
    with pytest.raises(Tok.DataError, match=r'trained on a corpus by prepare.py: .*--tokenizer=bpe:N'):
        Tok.get_tokenizer('bpe:8192')
    with pytest.raises(Tok.DataError, match=r"get_tokenizer\('bpe', load_meta"):
        Tok.get_tokenizer('bpe')
    with pytest.raises(Tok.DataError, match=r'only \d+ distinct merges, fewer than .* use --tokenizer=bpe:\d+ or less'):
        Tok.train_bpe(['ab ab ab'], 4000)
    meta, _ = trained()
    corrupt = dict(meta, ranks=meta['ranks'][:-1] + ['00'], vocab_sha256='0' * 64)
    with pytest.raises(Tok.DataError, match='do not match its vocab_sha256'):
        Tok.get_tokenizer('bpe', corrupt)


# -----------------------------------------------------------------------------
# prepare.py --tokenizer=bpe:N

def val_document_numbers(n_documents, val_fraction, seed=1337):
    """Which of n documents prepare's seeded draws send to val."""
    import prepare as P
    events = [(None, 'x', 1), (None, None, 0)] * n_documents
    splits = [split for split, text, _ in P._assign_splits(events, val_fraction, 0, seed) if text is None]
    return [i for i, split in enumerate(splits) if split == 'val']


def test_prepare_trains_on_train_only(tmp_path):
    import json
    import prepare as P
    from tokenizers import Tokenizer as HFTokenizer
    lines = make_english_text(seed=5).splitlines(keepends=True)
    docs = [''.join(lines[i:i + 20]) for i in range(0, len(lines), 20)]
    val = val_document_numbers(len(docs), 0.2)
    assert 0 < len(val) < len(docs) // 2
    for i in val:  # a word only val has, often enough that a BPE trained on val too would make it one token
        docs[i] += ' Zyxwvutsrq' * 300 + '\n'
    (tmp_path / 'docs.jsonl').write_text(''.join(json.dumps({'text': d}) + '\n' for d in docs))
    data_dir = P.prepare(tmp_path / 'docs.jsonl', tokenizer='bpe:300', out_root=tmp_path / 'data', val_fraction=0.2)
    meta = P.load_meta(data_dir)
    assert meta['tokenizer'] == 'bpe' and meta['vocab_size'] == 300 and meta['dtype'] == 'uint16'
    assert list(meta)[-1] == 'ranks' and meta['prepared_with']['tokenizer'] == 'bpe:300'
    train_docs = [docs[i] for i in range(len(docs)) if i not in val]  # under Tok.BPE_SAMPLE_BYTES: all of them
    assert meta['bpe_sample'] == {'documents': len(train_docs), 'bytes': len(''.join(train_docs).encode()), 'rate': 1.0}
    tok = Tok.get_tokenizer('bpe', meta)
    ids = {split: np.asarray(P.open_split(data_dir, split)).tolist() for split in ('train', 'val')}
    assert ids['val'] == [i for d in val for i in tok.encode(docs[d]) + [tok.eot_id]]  # re-encoded: the same ids
    assert ids['train'] == [i for d in range(len(docs)) if d not in val for i in tok.encode(docs[d]) + [tok.eot_id]]
    assert len(tok.encode(' Zyxwvutsrq')) > 2
    with_val = Tok.get_tokenizer('bpe', Tok.bpe_meta(Tok.train_bpe(docs, 300)))  # the control: trained on val too
    assert len(with_val.encode(' Zyxwvutsrq')) == 1
    hf = HFTokenizer.from_file(str(tmp_path / 'data' / 'docs' / 'tokenizer.json'))
    assert hf.encode(docs[val[0]]).ids == tok.encode(docs[val[0]])

    again = P.prepare(tmp_path / 'docs.jsonl', name='again', tokenizer='bpe:300', out_root=tmp_path / 'data',
                      val_fraction=0.2)
    assert P.load_meta(again)['ranks'] == meta['ranks']  # deterministic end to end
    other = P.prepare(tmp_path / 'docs.jsonl', name='other', tokenizer='bpe:320', out_root=tmp_path / 'data',
                      val_fraction=0.2)
    assert P.load_meta(other)['vocab_sha256'] != meta['vocab_sha256']  # what train.py's check_compatible compares
    assert P.load_meta(other)['ranks'][:295] == meta['ranks']  # more merges of the same counts extend the list


def test_bpe_sample_is_bounded_and_seeded(tmp_path, monkeypatch):
    """A corpus of more train text than BPE_SAMPLE_BYTES: the BPE is trained on a seeded sample of whole train
    documents spread over the corpus, of at most about that much text, and meta.json says how much."""
    import json
    import prepare as P
    docs = [f'document {i:03d} ' + 'word ' * 50 + '\n' for i in range(400)]  # 264 bytes each, ~100 KB in all
    events = [event for doc in docs for event in ((None, doc, len(doc)), (None, None, 0))]
    monkeypatch.setattr(Tok, 'BPE_SAMPLE_BYTES', 20_000)
    samples = []
    for seed in (1337, 1337, 1):
        sample = {}
        pieces = P._document_pieces(P._assign_splits(iter(events), 0.2, 0.0, seed), lambda n: None)
        samples.append((list(Tok.bpe_sample(pieces, 400 * 264 * 0.8, seed, sample)), sample))
    texts, sample = samples[0]
    splits = dict(zip(docs, (split for split, text, _ in P._assign_splits(iter(events), 0.2, 0.0, 1337) if text is None)))
    assert all(splits[text] == 'train' for text in texts) and texts == sorted(texts, key=docs.index)
    assert sample == {'documents': len(texts), 'bytes': 264 * len(texts),
                      'rate': pytest.approx(20_000 / (400 * 264 * 0.8))}
    assert 20_000 <= sample['bytes'] < 20_000 + 264 and docs.index(texts[-1]) > 200  # spread over the corpus
    assert samples[1] == samples[0] and samples[2][0] != texts  # seeded

    (tmp_path / 'docs.jsonl').write_text(''.join(json.dumps({'text': d}) + '\n' for d in docs))
    data_dir = P.prepare(tmp_path / 'docs.jsonl', tokenizer='bpe:300', out_root=tmp_path / 'data', val_fraction=0.2)
    recorded = P.load_meta(data_dir)['bpe_sample']
    assert recorded['bytes'] < 20_000 + 264 and recorded['documents'] == recorded['bytes'] // 264 > 50
    assert recorded['documents'] < P.load_meta(data_dir)['splits']['train']['documents']


def test_prepare_bpe_errors(tmp_path):
    import subprocess
    (tmp_path / 'c.txt').write_text('the cat sat on the mat\n' * 50)
    for size in ('100', 'lots'):
        result = subprocess.run([sys.executable, 'prepare.py', str(tmp_path / 'c.txt'), f'--tokenizer=bpe:{size}',
                                 f'--out_root={tmp_path}'], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and result.stderr.count('\n') == 1
        assert result.stderr.startswith(f'error: --tokenizer=bpe:{size}: give bpe:N with N an integer of at least 261')
    import prepare as P
    with pytest.raises(Tok.DataError, match=r'only \d+ distinct merges'):
        P.prepare(tmp_path / 'c.txt', tokenizer='bpe:5000', out_root=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['c.txt']  # nothing left behind
