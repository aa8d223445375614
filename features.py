"""
Hidden states of a model for a file of texts, as .npy arrays for other tools (probes, clustering, search).

    python features.py --out_dir=out/pretrain_small --input=texts.txt --output=feats.npy
    python features.py --out_dir=out/pretrain_bert_small --input=docs.jsonl --text_field=body --output=feats.npy
    python features.py --init_from=gpt2 --input=texts.txt --output=feats.npy --pooling=mean --per_token=True

The input is one text a line (.txt; blank lines are skipped) or one JSON object a line (.jsonl, the text in
text_field). Written, for N texts in input order:
  feats.npy              (N, n_embd) float32: one pooled vector a text. pooling 'auto' takes the last real token
                         for causal models (the only one that has read the whole text) and the first position
                         ([CLS]) for bidirectional ones; 'mean', 'last' and 'first' ask for one of them.
  feats.index.jsonl      one line a text: {"line": line number in the input, "text": its first 80 characters,
                         "n_tokens": tokens fed to the model, "truncated": whether it was cut}
  with --per_token=True  feats.tokens.npy (sum of n_tokens, n_embd) float32, the final hidden state of every token,
                         and feats.offsets.npy (N + 1,) int64: text i's rows are tokens[offsets[i]:offsets[i + 1]].
Encoders see `[CLS] text [SEP]` (their special tokens count in n_tokens). A text longer than the model's block_size
is cut to its first block_size tokens, with a warning. Outputs go to temp files renamed into place at the end; an
existing output is never replaced unless --overwrite=True.
"""

import json
import os
import sys

import numpy as np
import torch

import common
import sample
from configurator import configure, config_defaults
from tokenizer import DataError

# -----------------------------------------------------------------------------
init_from = 'out_dir'  # 'out_dir' (best.pt, else last.pt, in out_dir), a checkpoint path, 'gpt2', an HF dir, 'hf:name'
out_dir = 'out/pretrain_small'
trust_checkpoint = False  # unpickle a checkpoint that holds more than tensors (old or foreign files): it can run code
input = None  # texts: .txt (one a line) or .jsonl
text_field = 'text'  # .jsonl: the field holding the text
output = None  # the pooled features, a .npy path; the other outputs are named after it
pooling = 'auto'  # 'auto', 'last', 'first' or 'mean' (over the real tokens)
per_token = False  # also every token's hidden state (.tokens.npy + .offsets.npy)
batch_size = 32
overwrite = False
device = 'auto'
dtype = 'float32'  # 'auto' is faster on GPUs and bf16 CPUs; features are stored as float32 either way
# -----------------------------------------------------------------------------

POOLINGS = ('auto', 'last', 'first', 'mean')


def read_texts(path, text_field='text'):
    """[(line number, text)] of a .txt file (one text a line, blank lines skipped) or a .jsonl file."""
    if not os.path.isfile(path):
        raise common.UserError(f"input {path} not found: give a .txt file (one text a line) or a .jsonl file")
    texts = []
    with open(path, encoding='utf-8') as f:
        try:
            lines = f.read().splitlines()
        except UnicodeDecodeError:
            raise common.UserError(f"{path} is not UTF-8: convert it first, e.g. iconv -f latin1 -t utf-8") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if path.endswith('.jsonl'):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise common.UserError(f"{path} line {n} is not JSON: one JSON object a line in a .jsonl file") from None
            if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                raise common.UserError(f"{path} line {n} has no text field {text_field!r}: pass --text_field=NAME")
            line = record[text_field]
        texts.append((n, line))
    if not texts:
        raise common.UserError(f"{path} has no texts in it")
    return texts


def encode(tokenizer, text, block_size, special=None):
    """(ids, truncated): text's token ids, inside [CLS] ... [SEP] when special is given (encoders), cut to fit
    block_size."""
    ids = tokenizer.encode(text)
    room = block_size - (2 if special else 0)
    truncated = len(ids) > room
    ids = ids[:room]
    return ([special['cls'], *ids, special['sep']] if special else ids), truncated


@torch.no_grad()
def hidden_states(model, sequences, runtime):
    """Final hidden states (B, T, n_embd) of a batch of token-id lists, right-padded, and the (B, T) key-padding
    mask (1 for real tokens) that keeps the padding out of every real token's attention."""
    T = max(len(ids) for ids in sequences)
    idx = torch.zeros(len(sequences), T, dtype=torch.long)
    real = torch.zeros(len(sequences), T, dtype=torch.long)
    for row, ids in enumerate(sequences):
        idx[row, :len(ids)] = torch.tensor(ids)
        real[row, :len(ids)] = 1
    idx, real = idx.to(runtime.device), real.to(runtime.device)
    with runtime.autocast():
        x = model.hidden_states(idx, attn_mask=real)
    return x.float(), real


def pool(x, real, pooling):
    """(B, C) from hidden states x (B, T, C) and the padding mask real (B, T): 'last' real token, 'first' position,
    or 'mean' over the real tokens."""
    if pooling == 'first':
        return x[:, 0]
    if pooling == 'last':
        return x[torch.arange(x.size(0), device=x.device), real.sum(1) - 1]
    return (x * real[:, :, None]).sum(1) / real.sum(1, keepdim=True)


def encode_texts(model, tokenizer, special, texts):
    """[(ids, truncated)] of texts ([(line, text)]) for model: `[CLS] text [SEP]` for an encoder with special
    tokens, cut to block_size; one warning on stderr names the lines that were cut."""
    encoder = not model.config.causal and special is not None
    encoded = []
    for line, text in texts:
        try:
            encoded.append(encode(tokenizer, text, model.config.block_size, special if encoder else None))
        except DataError as e:  # e.g. a character the char vocabulary lacks
            raise common.UserError(f"line {line}: {e}") from None
    truncated = [line for (line, _), (_, cut) in zip(texts, encoded) if cut]
    if truncated:
        shown = ', '.join(map(str, truncated[:5])) + (', ...' if len(truncated) > 5 else '')
        print(f"warning: {len(truncated)} of {len(texts)} texts are longer than the model's block_size "
              f"{model.config.block_size} and were cut to fit (line {shown}); the index marks them", file=sys.stderr)
    return encoded


def extract(model, sequences, runtime, pooling='auto', batch_size=32, pooled_out=None, tokens_out=None):
    """Features of sequences (token-id lists) in input order: pooled ones into pooled_out (N, C), and every
    token's hidden state into tokens_out (sum of lengths, C) when given; numpy arrays or memmaps. Returns the
    (N + 1,) offsets of each sequence's rows in tokens_out."""
    if pooling not in POOLINGS:
        raise common.UserError(f"pooling {pooling!r} unknown: use one of {', '.join(POOLINGS)}")
    if pooling == 'auto':
        pooling = 'last' if model.config.causal else 'first'
    lengths = np.array([len(ids) for ids in sequences])
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    model.eval()
    order = np.argsort(-lengths, kind='stable')  # batches of similar length: little padding
    update = common.progress(len(sequences), 'extracting features', unit='texts')
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        x, real = hidden_states(model, [sequences[i] for i in rows], runtime)
        pooled = pool(x, real, pooling).cpu().numpy()
        for b, i in enumerate(rows):
            if pooled_out is not None:
                pooled_out[i] = pooled[b]
            if tokens_out is not None:
                tokens_out[offsets[i]:offsets[i + 1]] = x[b, :lengths[i]].cpu().numpy()
        update(len(rows))
    update(None)
    return offsets


def output_paths(output, per_token):
    """{'pooled', 'index'[, 'tokens', 'offsets']}: paths named after output (a .npy path)."""
    if not output or not output.endswith('.npy'):
        raise common.UserError(f"--output must name a .npy file for the pooled features, got {output!r}")
    stem = output[:-len('.npy')]
    paths = {'pooled': output, 'index': f'{stem}.index.jsonl'}
    if per_token:
        paths.update(tokens=f'{stem}.tokens.npy', offsets=f'{stem}.offsets.npy')
    return paths


def main():
    globals().update(configure(config_defaults(globals()), sys.argv[1:]))
    if not input:
        raise common.UserError("--input is missing: a .txt file (one text a line) or a .jsonl file of texts")
    paths = output_paths(output, per_token)
    existing = [p for p in paths.values() if os.path.exists(p)]
    if existing and not overwrite:
        raise common.UserError(f"{existing[0]} exists: pass --overwrite=True to replace it, or choose another --output")
    if pooling not in POOLINGS:
        raise common.UserError(f"pooling {pooling!r} unknown: use one of {', '.join(POOLINGS)}")
    texts = read_texts(input, text_field)
    runtime = common.setup_runtime(device, dtype)
    model, tokenizer, special = sample.load_model(init_from, out_dir, runtime.device, trust_checkpoint)
    encoded = encode_texts(model, tokenizer, special, texts)
    pooled_by = pooling if pooling != 'auto' else 'last token' if model.config.causal else 'first position'
    sequences = [ids for ids, _ in encoded]
    C, n_tokens = model.config.n_embd, sum(len(ids) for ids in sequences)
    tmp = {name: f'{path}.tmp-{os.getpid()}' for name, path in paths.items()}
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    try:
        pooled_out = np.lib.format.open_memmap(tmp['pooled'], mode='w+', dtype=np.float32, shape=(len(texts), C))
        tokens_out = np.lib.format.open_memmap(tmp['tokens'], mode='w+', dtype=np.float32,
                                               shape=(n_tokens, C)) if per_token else None
        offsets = extract(model, sequences, runtime, pooling, batch_size, pooled_out, tokens_out)
        for array in (pooled_out, tokens_out):
            if array is not None:
                array.flush()
        del pooled_out, tokens_out  # closes the memmaps before the rename
        if per_token:
            with open(tmp['offsets'], 'wb') as f:
                np.save(f, offsets)
        with open(tmp['index'], 'w', encoding='utf-8') as f:
            for (line, text), (ids, cut) in zip(texts, encoded):
                f.write(json.dumps({'line': line, 'text': text[:80], 'n_tokens': len(ids), 'truncated': cut},
                                   ensure_ascii=False) + '\n')
        for name, path in paths.items():
            os.replace(tmp[name], path)
    finally:
        for path in tmp.values():
            if os.path.exists(path):
                os.remove(path)
    n_cut = sum(cut for _, cut in encoded)
    print(f"wrote {output} ({len(texts):,} x {C} float32, pooled by {pooled_by}) and {paths['index']}"
          + (f", {paths['tokens']} ({int(offsets[-1]):,} tokens) and {paths['offsets']}" if per_token else '')
          + (f"; {n_cut} text(s) truncated" if n_cut else ''))


if __name__ == '__main__':
    common.run_main(main)
