"""
WordPiece, BERT's tokenizer, in plain Python: reads a checkpoint's vocab.txt, needs no transformers.

    from wordpiece import WordPiece
    tok = WordPiece.from_path('path/to/bert')     # a checkpoint directory, or its vocab.txt
    ids = tok.encode("Héllo, world!")             # uncased vocab: [7592, 1010, 2088, 999]
    tok.tokenize("unaffable")                     # ['una', '##ffa', '##ble']
    tok.decode(ids)                               # 'hello, world!'
    tok.cls_id, tok.sep_id, tok.mask_id, tok.pad_id, tok.unk_id

Two stages, as in Devlin et al. (2019) and Google's tokenization.py:
1. basic tokenisation: drop NUL, U+FFFD and control characters, turn whitespace into spaces, put spaces around
   CJK ideographs, NFC-normalise, split on whitespace; when the vocabulary is uncased lower-case and strip accents
   (NFD, drop the combining marks), then split off every punctuation character (ASCII symbols count).
2. greedy longest-match-first sub-words: the longest vocabulary entry that starts the word, then the longest
   '##'-prefixed entry that continues it, and so on; a word with no such split, or longer than 100 characters,
   is [UNK].
encode() treats text as text: '[MASK]' written in it is '[', 'mask', ']'. Place special ids yourself.
"""

import json
import os
import unicodedata

SPECIAL_TOKENS = ('[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]')
MAX_WORD_CHARS = 100  # longer words are [UNK] without trying, as in BERT


def is_whitespace(char):
    return char in ' \t\n\r' or unicodedata.category(char) == 'Zs'


def is_control(char):
    return char not in '\t\n\r' and unicodedata.category(char).startswith('C')


def is_punctuation(char):
    """BERT's definition: Unicode P* categories plus every ASCII non-letter, non-digit symbol ($, +, ^, `...)."""
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith('P')


def is_cjk(cp):
    """CJK Unified Ideographs and their extensions and compatibility blocks (not Hangul, Hiragana or Katakana)."""
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF
            or 0x2F800 <= cp <= 0x2FA1F)


def strip_accents(word):
    return ''.join(c for c in unicodedata.normalize('NFD', word) if unicodedata.category(c) != 'Mn')


def split_on_punctuation(word):
    """'don't!' -> ['don', "'", 't', '!']"""
    pieces, current = [], ''
    for char in word:
        if is_punctuation(char):
            if current:
                pieces.append(current)
            pieces.append(char)
            current = ''
        else:
            current += char
    if current:
        pieces.append(current)
    return pieces


class WordPiece:

    def __init__(self, vocab, do_lower_case=True, strip_accents=None):
        """vocab: the tokens in id order (the lines of vocab.txt). strip_accents None follows do_lower_case."""
        self.vocab = list(vocab)
        self.ids = {token: i for i, token in enumerate(self.vocab)}  # a repeated line: the later id wins, as in HF
        missing = [t for t in SPECIAL_TOKENS if t not in self.ids]
        if missing:
            raise ValueError(f"the vocabulary lacks {', '.join(missing)}: not a BERT vocab.txt")
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (self.ids[t] for t in SPECIAL_TOKENS)
        self.do_lower_case = do_lower_case
        self.strip_accents = do_lower_case if strip_accents is None else strip_accents
        self._seen_chars = set()
        self._translate = {}  # codepoint -> what the first pass of basic tokenisation makes of it, for chars seen
        self._word_cache = {}  # whitespace-separated word -> its ids; text repeats its words a lot

    @classmethod
    def from_path(cls, path):
        """From vocab.txt or a directory holding one. Casing comes from tokenizer_config.json beside it when there
        is one (HF's do_lower_case, strip_accents), else from the vocabulary: uncased when it has no capitals."""
        vocab_path = os.path.join(path, 'vocab.txt') if os.path.isdir(path) else path
        if not os.path.isfile(vocab_path):
            raise FileNotFoundError(f"no WordPiece vocabulary at {path}: give a vocab.txt or a directory holding one")
        vocab = read_vocab(vocab_path)
        settings = {}
        config_path = os.path.join(os.path.dirname(vocab_path), 'tokenizer_config.json')
        if os.path.isfile(config_path):
            with open(config_path, encoding='utf-8') as f:
                settings = json.load(f)
        do_lower_case = settings.get('do_lower_case')
        if do_lower_case is None:
            do_lower_case = not any(t != t.lower() for t in vocab if t not in SPECIAL_TOKENS and not t.startswith('[unused'))
        return cls(vocab, do_lower_case=do_lower_case, strip_accents=settings.get('strip_accents'))

    def __len__(self):
        return len(self.vocab)

    def _clean(self, text):
        """First pass, one character at a time: drop NUL/U+FFFD/control, whitespace -> ' ', ' x ' around CJK."""
        for char in set(text).difference(self._seen_chars):
            self._seen_chars.add(char)
            cp = ord(char)
            if cp == 0 or cp == 0xFFFD or is_control(char):
                self._translate[cp] = ''
            elif is_whitespace(char):
                self._translate[cp] = ' '
            elif is_cjk(cp):
                self._translate[cp] = f' {char} '
        return unicodedata.normalize('NFC', text.translate(self._translate))

    def _word_ids(self, word):
        ids = self._word_cache.get(word)
        if ids is None:
            ids = []
            normalized = word.lower() if self.do_lower_case else word
            if self.strip_accents:
                normalized = strip_accents(normalized)
            for piece in ' '.join(split_on_punctuation(normalized)).split():
                ids.extend(self._subwords(piece))
            if len(self._word_cache) < 1 << 20:
                self._word_cache[word] = ids
        return ids

    def _subwords(self, word):
        """Greedy longest-match-first (Wu et al. 2016): ['un', '##aff', '##able'], or [UNK] for the whole word."""
        if len(word) > MAX_WORD_CHARS:
            return [self.unk_id]
        ids, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else '##' + word[start:end]
                if piece in self.ids:
                    ids.append(self.ids[piece])
                    start = end
                    break
            else:
                return [self.unk_id]
        return ids

    def encode(self, text):
        """Token ids of text, without [CLS]/[SEP]."""
        ids = []
        for word in self._clean(text).split():
            ids.extend(self._word_ids(word))
        return ids

    def tokenize(self, text):
        return [self.vocab[i] for i in self.encode(text)]

    def decode(self, ids, skip_special=True):
        """Ids back to text: sub-words joined ('##' removed), words by spaces. Lower-cased and accent-stripped
        text does not come back as it was."""
        special = {self.pad_id, self.cls_id, self.sep_id, self.mask_id} if skip_special else set()
        tokens = [self.vocab[i] if 0 <= i < len(self.vocab) else '[UNK]' for i in ids if i not in special]
        return ' '.join(tokens).replace(' ##', '').strip()

    def special_ids(self):
        return {'pad': self.pad_id, 'unk': self.unk_id, 'cls': self.cls_id, 'sep': self.sep_id, 'mask': self.mask_id}


def read_vocab(path):
    """The lines of vocab.txt, newline stripped (a token may contain other whitespace), in id order."""
    with open(path, encoding='utf-8') as f:
        return [line.rstrip('\n') for line in f]
