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

Also here, as plain functions for finetune.py --explain and plot.py (embeddings, explain): nearest neighbours and a
2-D map of the input embeddings, and each word's attribution to a classifier's label (occlusion, integrated
gradients), the long texts' windows combined as finetune.py combines their votes.
"""

import contextlib
import importlib.util
import os
import sys

import numpy as np
import torch

import checkpoints
import tasks
from configurator import CHOICES, UserError, config_defaults, configure, run_main
from files import atomic_path, write_jsonl
from metrics import progress
from runtime import eval_mode, setup_runtime
from tokenizer import DataError, token_text, tokenizer_of

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
        raise UserError(f"input {path} not found: give a .txt file (one text a line) or a .jsonl file")
    try:
        if path.endswith('.jsonl'):  # a line that is not a JSON object: a one-line DataError
            texts = [(n, record.get(text_field)) for n, record in tasks.read_jsonl_rows(path)]
        else:
            with open(path, encoding='utf-8') as f:
                texts = [(n, line) for n, line in enumerate(f.read().splitlines(), 1) if line.strip()]
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8: convert it first, e.g. iconv -f latin1 -t utf-8") from None
    for n, text in texts:
        if not isinstance(text, str):
            raise UserError(f"{path} line {n} has no text field {text_field!r}: pass --text_field=NAME")
    if not texts:
        raise UserError(f"{path} has no texts in it")
    return texts


def read_labels(path, lines, label_field='label'):
    """The label_field of the given lines (read_texts' line numbers) of a .jsonl file, as strings ('(none)' where a
    line has none), or None when the file is not .jsonl or no line has a label."""
    if not path.endswith('.jsonl'):
        return None
    records = dict(tasks.read_jsonl_rows(path))
    labels = [records[n].get(label_field) for n in lines]
    if all(label is None for label in labels):
        return None
    return ['(none)' if label is None else str(label) for label in labels]


def padded(sequences, pad_id, device):
    """(idx, real), both (B, T): token-id lists right-padded with pad_id to the longest, and the mask of the real
    tokens (1), which keeps the padding out of every real token's attention and out of the pooling."""
    idx = torch.nn.utils.rnn.pad_sequence([torch.tensor(ids, dtype=torch.long) for ids in sequences],
                                          batch_first=True, padding_value=pad_id)
    lengths = torch.tensor([len(ids) for ids in sequences])
    real = (torch.arange(idx.size(1)) < lengths[:, None]).long()
    return idx.to(device), real.to(device)


def pool(x, real, pooling, pooler=None):
    """(B, C) from hidden states x (B, T, C) and the padding mask real (B, T): 'last' real token, 'first' position
    (through pooler, BERT's, when given), or 'mean' over the real tokens."""
    if pooling == 'first':
        return x[:, 0] if pooler is None else pooler(x)
    if pooling == 'last':
        return x[torch.arange(x.size(0), device=x.device), real.sum(1) - 1]
    return (x * real[:, :, None]).sum(1) / real.sum(1, keepdim=True)


def encode_texts(model, tokenizer, special, texts):
    """[(ids, truncated)] of texts ([(line, text)]) for model: `[CLS] text [SEP]` for an encoder with special
    tokens, cut to block_size; one warning on stderr names the lines that were cut."""
    encoder = not model.config.causal and special is not None
    room = model.config.block_size - (2 if encoder else 0)
    encoded = []
    for line, text in texts:
        try:
            ids = tokenizer.encode(text)
        except DataError as e:  # e.g. a character the char vocabulary lacks
            raise UserError(f"line {line}: {e}") from None
        encoded.append(([special['cls'], *ids[:room], special['sep']] if encoder else ids[:room], len(ids) > room))
    truncated = [line for (line, _), (_, cut) in zip(texts, encoded) if cut]
    if truncated:
        shown = ', '.join(map(str, truncated[:5])) + (', ...' if len(truncated) > 5 else '')
        print(f"warning: {len(truncated)} of {len(texts)} texts are longer than the model's block_size "
              f"{model.config.block_size} and were cut to fit (line {shown}); the index marks them", file=sys.stderr)
    return encoded


@torch.no_grad()
def extract(model, sequences, runtime, pooled_out, tokens_out=None, pooling='auto', batch_size=32, pooler=None):
    """Features of sequences (token-id lists) in input order: pooled ones (pool) into pooled_out (N, C), and every
    token's hidden state into tokens_out (sum of lengths, C) when given; numpy arrays or memmaps. Returns the
    (N + 1,) offsets of each sequence's rows in tokens_out."""
    if pooling not in POOLINGS:
        raise UserError(f"pooling {pooling!r} unknown: use one of {', '.join(POOLINGS)}")
    if pooling == 'auto':
        pooling = 'last' if model.config.causal else 'first'
    lengths = np.array([len(ids) for ids in sequences])
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    model.eval()
    order = np.argsort(-lengths, kind='stable')  # batches of similar length: little padding
    update = progress(len(sequences), 'extracting features', unit='texts')
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        idx, real = padded([sequences[i] for i in rows], 0, runtime.device)  # (B, T) each
        with runtime.autocast():
            x = model.hidden_states(idx, attn_mask=real).float()  # (B, T, C)
        pooled_out[rows] = pool(x, real, pooling, pooler).cpu().numpy()
        if tokens_out is not None:
            for b, i in enumerate(rows):
                tokens_out[offsets[i]:offsets[i + 1]] = x[b, :lengths[i]].cpu().numpy()
        update(len(rows))
    update(None)
    return offsets


def output_paths(output, per_token):
    """{'pooled', 'index'[, 'tokens', 'offsets']}: paths named after output (a .npy path)."""
    if not output or not output.endswith('.npy'):
        raise UserError(f"--output must name a .npy file for the pooled features, got {output!r}")
    stem = output[:-len('.npy')]
    per_token_paths = {'tokens': f'{stem}.tokens.npy', 'offsets': f'{stem}.offsets.npy'} if per_token else {}
    return {'pooled': output, 'index': f'{stem}.index.jsonl', **per_token_paths}


# -----------------------------------------------------------------------------
# the input embeddings: nearest neighbours and a 2-D map (plot.py embeddings)

def ordinary_ids(tokenizer, special, n_rows):
    """The ids that stand for text: not eot, not a special token, not a padding row of an n_rows embedding table."""
    skip = {tokenizer.eot_id, *(i for name, i in (special or {}).items() if name != 'n_random')}
    return [i for i in range(min(tokenizer.vocab_size, n_rows)) if i not in skip]


def word_ids(tokenizer, word):
    """The token ids of word as it reads inside a sentence (' word'), whitespace-only tokens left out."""
    try:
        ids = tokenizer.encode(' ' + word)
    except DataError as e:  # a character the char vocabulary lacks
        raise UserError(f"word {word!r}: {e}") from None
    ids = [i for i in ids if token_text(tokenizer, i).strip()]
    if not ids:
        raise UserError(f"word {word!r} has no tokens of its own: give a word with letters in it")
    return ids


def frequent_words(tokenizer, ids, n, counts=None):
    """[(word, id)]: up to n of ids that are whole words (two letters or more, as single letters are mostly the
    start of a longer word, except in a char vocabulary; a byte-level BPE's with its leading space), one a spelling,
    the most frequent first when counts (a count an id, e.g. of the training split) is given, else in id order (a
    BPE's ids follow its merges: roughly by frequency)."""
    spelled = {}
    for i in sorted(ids, key=lambda i: -counts[i]) if counts is not None else ids:
        text = token_text(tokenizer, i)
        starts_word = tokenizer.name not in ('gpt2', 'bpe') or tokenizer.decode([i]).startswith(' ')
        long_enough = len(text) > 1 or tokenizer.name == 'char'  # a char vocabulary's letters are all it has
        if long_enough and text.isalpha() and starts_word and (counts is None or counts[i] > 0):
            spelled.setdefault(text, i)
    return list(spelled.items())[:n]


def nearest_tokens(embedding, tokenizer, vector, candidates, k=8, exclude=()):
    """[(token text, cosine)]: the k ids of candidates whose rows of embedding (V, C) point most nearly the way
    vector (C,) does, nearest first; ids in exclude (the query's own tokens) left out."""
    ids = np.array([i for i in candidates if i not in set(exclude)])
    rows = embedding[ids]
    cosine = rows @ vector / np.maximum(np.linalg.norm(rows, axis=1) * np.linalg.norm(vector), 1e-12)
    top = np.argsort(-cosine, kind='stable')[:k]
    return [(token_text(tokenizer, int(ids[j])), float(cosine[j])) for j in top]


def check_projection(projection):
    """A one-line UserError for a projection that is unknown, or whose package is not installed."""
    if projection not in CHOICES['projection']:
        raise UserError(f"projection {projection!r} unknown: use one of {', '.join(CHOICES['projection'])}")
    module, name = {'tsne': ('sklearn', 'scikit-learn'), 'umap': ('umap', 'umap-learn')}.get(projection, (None, None))
    if module and importlib.util.find_spec(module) is None:
        raise UserError(f"projection={projection!r} needs {name}, which is not installed: pip install {name}, "
                        f"or use projection='pca'")


def project_2d(X, projection='pca', seed=0):
    """((N, 2) coordinates of the rows of X, the two axis names): PCA by numpy's SVD of the centred rows (each axis
    names the share of the variance it keeps), or t-SNE (scikit-learn) / UMAP (umap-learn) when installed."""
    X = np.asarray(X, dtype=np.float64)
    check_projection(projection)
    if len(X) < 3:
        raise UserError(f"a map needs at least 3 points, got {len(X)}")
    if projection == 'pca':
        centred = X - X.mean(0)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        share = s ** 2 / max(float((s ** 2).sum()), 1e-30)
        return centred @ vt[:2].T, [f"PC{n + 1} ({share[n]:.0%} of the variance)" for n in range(2)]
    if projection == 'tsne':
        from sklearn.manifold import TSNE
        points = TSNE(n_components=2, perplexity=min(30.0, (len(X) - 1) / 3), init='pca', random_state=seed)
        return points.fit_transform(X), ['t-SNE 1', 't-SNE 2']
    import umap
    return umap.UMAP(n_neighbors=min(15, len(X) - 1), random_state=seed).fit_transform(X), ['UMAP 1', 'UMAP 2']


# -----------------------------------------------------------------------------
# attributions: how much each word of a text moves a classifier's label (finetune.py --explain, plot.py explain)
#
# A word is a whitespace-separated piece of the text, punctuation attached. The text is read with its whitespace
# collapsed to single spaces and encoded word by word (' word' after the first), which for byte-level BPE, chars and
# WordPiece gives the ids of encoding the collapsed text whole, so each token belongs to exactly one word. A long
# text is cut as finetune.py cuts it (tasks.text_windows), and what is explained is what its prediction averages:
# f = the mean over the windows of log p(label | window) (tasks.text_logprobs).

EXPLAIN_METHODS = ('occlusion', 'integrated_gradients')


def word_tokens(tokenizer, words):
    """(ids, owner): the token ids of the words joined by single spaces, and the index of the word of each id."""
    pieces = [tokenizer.encode(word if n == 0 else ' ' + word) for n, word in enumerate(words)]
    return [i for ids in pieces for i in ids], [n for n, ids in enumerate(pieces) for _ in ids]


def classifier_windows(model, tokenizer, special, words, truncation='head', max_windows=4):
    """[(ids, owner)], a window each: what the classifier reads of the words, `window <eot>` (causal) or
    `[CLS] window [SEP]`, cut as finetune.py cuts a text, and the word of each position (-1: a special token)."""
    ids, owner = word_tokens(tokenizer, words)
    head, tail = ([], [special['eot']]) if model.config.causal else ([special['cls']], [special['sep']])
    room = model.config.block_size - len(head) - len(tail)
    return [(head + ids[start:end] + tail, [-1] * len(head) + owner[start:end] + [-1] * len(tail))
            for start, end in tasks.text_windows(len(ids), room, truncation, max_windows)[0]]


@torch.no_grad()
def label_logprobs(model, sequences, pad_id, batch_size=64):
    """(N, num_labels) float32 on the CPU: a classifier's log-probabilities for token-id lists, in padded batches
    (the padding masked, so each sequence scores as it would alone)."""
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(sequences), batch_size):
        idx, real = padded(sequences[start:start + batch_size], pad_id, device)
        logits, _ = model(idx, attn_mask=real)
        out.append(torch.log_softmax(logits.float(), -1).cpu())
    return torch.cat(out)


def occlusion(model, windows, label, pad_id, n_words, batch_size=64):
    """(n_words,): each word's drop in f when its tokens are removed from the windows that hold them (the other
    windows read as they are); NaN for a word no window holds. Every occluded window goes through the model in
    batches of batch_size, after the whole ones."""
    whose = [(w, word) for w, (_, owner) in enumerate(windows) for word in sorted(set(owner) - {-1})]
    variants = [[i for i, o in zip(*windows[w]) if o != word] for w, word in whose]  # the window without the word
    logp = label_logprobs(model, [ids for ids, _ in windows] + variants, pad_id, batch_size)[:, label].tolist()
    drops = [(word, logp[w] - occluded) for (w, word), occluded in zip(whose, logp[len(windows):])]
    return word_scores(drops, n_words, len(windows))


def word_scores(pairs, n_words, n_windows):
    """(n_words,): the values of the (word, value) pairs summed by word and divided by n_windows (a word's mean over
    the windows), NaN for a word that has none (no window holds it)."""
    words, scores = np.array([word for word, _ in pairs], dtype=np.int64), np.zeros(n_words)
    np.add.at(scores, words, [value / n_windows for _, value in pairs])
    scores[np.bincount(words, minlength=n_words) == 0] = np.nan
    return scores


@contextlib.contextmanager
def token_embeddings(model, embeddings):
    """Inside the block the model's token-embedding lookup (wte) returns embeddings (B, T, C) whatever ids it is
    given, so the forward runs on chosen input embeddings; a forward hook, removed on the way out."""
    handle = model.transformer.wte.register_forward_hook(lambda module, args, output: embeddings)
    try:
        yield
    finally:
        handle.remove()


IG_TOLERANCE = 0.01  # nats of f the trapezoid rule may miss over the path (and per unit of it, in one interval)
IG_SPLITS, IG_ROUNDS = 8, 4  # an interval splits into 8, at most 4 times over; each round splits the ig_steps worst


def path_gradients(model, idx, x, delta, alphas, label, batch_size=64):
    """(f (S,), h (S, T)) at the points x - (1 - alpha) delta of the path, alpha in alphas (S,): log p(label) of
    the window idx (1, T) read with those token embeddings, and each position's gradient . delta. batch_size points
    a forward and backward; the embeddings go in by a forward hook on wte (token_embeddings)."""
    f, h = [], []
    for start in range(0, len(alphas), batch_size):
        a = alphas[start:start + batch_size, None, None]
        path = (x - (1 - a) * delta).requires_grad_()  # (S, T, C)
        with torch.enable_grad(), token_embeddings(model, path):
            logits, _ = model(idx.expand(len(a), -1))
            logp = torch.log_softmax(logits.float(), -1)[:, label]  # (S,)
            grad, = torch.autograd.grad(logp.sum(), path)
        f.append(logp.detach())
        h.append((grad * delta).sum(-1))  # (S, T)
    return torch.cat(f), torch.cat(h)


def integrated_gradients(model, windows, label, baseline_id, n_words, steps=32, batch_size=64):
    """(scores (n_words,), f, f at the baseline, points of the path evaluated): integrated gradients (Sundararajan
    et al. 2017, "Axiomatic attribution for deep networks") of f on the token embeddings. The baseline puts the
    embedding of baseline_id (the [PAD] token, a blank) at every text position; special tokens and positions stay.
    A token's attribution is (x - baseline) . (the mean gradient along the straight path), a word's the sum over its
    tokens (NaN for a word no window holds); they sum to f - f(baseline) (completeness) up to the integration error.
    The integral is the trapezoid rule on steps intervals; f is known at every point, so while the rule misses f's
    change by more than IG_TOLERANCE over the path, the intervals that miss more than IG_TOLERANCE x their width are
    split (a saturated classifier can turn within 1/1000 of the path, which no uniform grid of a few dozen points
    sees)."""
    wte = model.transformer.wte
    device = wte.weight.device
    pairs, f, f_baseline, n_points = [], 0.0, 0.0, 0  # pairs: (word, its tokens' attribution in a window)
    for ids, owner in windows:
        idx = torch.tensor([ids], device=device)
        x = wte.weight[idx[0]].detach()  # (T, C)
        is_text = torch.tensor(owner, device=device)[:, None] >= 0  # (T, 1)
        delta = torch.where(is_text, x - wte.weight[baseline_id].detach(), torch.zeros_like(x))  # x - baseline
        alphas = torch.linspace(0, 1, steps + 1, device=device)
        path_f, h = path_gradients(model, idx, x, delta, alphas, label, batch_size)
        for _ in range(IG_ROUNDS):
            width = alphas.diff()
            missed = (path_f.diff() - width * (h[1:] + h[:-1]).sum(-1) / 2).abs()  # (intervals,)
            worst = missed.argsort(descending=True)[:steps]
            split = worst[missed[worst] > IG_TOLERANCE * width[worst]]
            if missed.sum() <= IG_TOLERANCE or not len(split):
                break
            new = (alphas[split, None] + width[split, None] * torch.arange(1, IG_SPLITS, device=device) / IG_SPLITS)
            new_f, new_h = path_gradients(model, idx, x, delta, new.flatten(), label, batch_size)
            alphas, order = torch.cat([alphas, new.flatten()]).sort()
            path_f, h = torch.cat([path_f, new_f])[order], torch.cat([h, new_h])[order]
        per_token = (alphas.diff()[:, None] * (h[1:] + h[:-1]) / 2).sum(0)  # (T,)
        pairs += [(word, value) for value, word in zip(per_token.tolist(), owner) if word >= 0]
        f += path_f[-1].item() / len(windows)
        f_baseline += path_f[0].item() / len(windows)
        n_points += len(alphas)
    return word_scores(pairs, n_words, len(windows)), f, f_baseline, n_points


def explain_text(model, tokenizer, special, names, text, truncation='head', max_windows=4, methods=EXPLAIN_METHODS,
                 ig_steps=32, label=None, batch_size=64):
    """What a classifier predicts for text and which words decide it, as one JSON-ready record: 'text' (its
    whitespace collapsed), 'label' (the one explained: the predicted one unless label names another),
    'probabilities' {name: p} (as finetune.py --predict gives them: the softmax of the windows' mean
    log-probabilities), 'words', 'n_windows', 'logprob' (f of the label); per method a score a word (None: a word
    no window holds, cut off by truncation); for integrated gradients also 'baseline_logprob', 'ig_points' (of
    the path, all windows) and 'completeness_gap' (the scores' sum minus f - f(baseline))."""
    if model.config.task_head != 'sequence':
        head = f"a {model.config.task_head} head" if model.config.task_head else 'no task head'
        raise UserError(f"explanations are of a text classifier's label, and this model has {head}: use a "
                        f"checkpoint fine-tuned with task='classification'")
    words = text.split()
    if not words:
        raise UserError("the text to explain is empty")
    try:
        windows = classifier_windows(model, tokenizer, special, words, truncation, max_windows)
    except DataError as e:  # a character the char vocabulary lacks
        raise UserError(str(e)) from None
    with eval_mode(model):
        logprobs = label_logprobs(model, [ids for ids, _ in windows], special['pad'], batch_size).mean(0)  # (labels,)
        label = int(logprobs.argmax()) if label is None else names.index(label)
        record = {'text': ' '.join(words), 'label': names[label],
                  'probabilities': {name: round(p, 6) for name, p in zip(names, logprobs.softmax(-1).tolist())},
                  'words': words, 'n_windows': len(windows), 'logprob': round(float(logprobs[label]), 6)}
        if 'occlusion' in methods:
            record['occlusion'] = rounded(occlusion(model, windows, label, special['pad'], len(words), batch_size))
        if 'integrated_gradients' in methods:
            scores, f, f_baseline, n_points = integrated_gradients(model, windows, label, special['pad'], len(words),
                                                                   ig_steps, batch_size)
            record.update(integrated_gradients=rounded(scores), baseline_logprob=round(f_baseline, 6),
                          ig_points=n_points, completeness_gap=round(float(np.nansum(scores)) - (f - f_baseline), 6))
    return record


def rounded(scores):
    """A list of floats rounded to 6 decimals for JSON, None for NaN."""
    return [None if np.isnan(s) else round(float(s), 6) for s in scores]


def explanation_table(record):
    """Lines to print for an explain_text record: the label, then a word a line with its scores (tab-separated)."""
    methods = [m for m in EXPLAIN_METHODS if m in record]
    lines = [f"{record['label']}\t{record['probabilities'][record['label']]:.3f}\t(log-probability "
             f"{record['logprob']:.3f}; scores: its drop without the word / integrated gradients)",
             '\t'.join(['word', *methods])]
    for n, word in enumerate(record['words']):
        lines.append('\t'.join([word, *('-' if record[m][n] is None else f"{record[m][n]:+.4f}" for m in methods)]))
    if 'completeness_gap' in record:
        total = record['logprob'] - record['baseline_logprob']
        lines.append(f"integrated gradients ({record['ig_points']} points of the path from a [PAD] baseline): the "
                     f"scores sum to {total + record['completeness_gap']:.4f}, the log-probability gained over the "
                     f"baseline is {total:.4f} (completeness gap {record['completeness_gap']:+.4f})")
    return lines


def main():
    globals().update(configure(config_defaults(globals()), sys.argv[1:], choices={'pooling': POOLINGS}))
    if not input:
        raise UserError("--input is missing: a .txt file (one text a line) or a .jsonl file of texts")
    paths = output_paths(output, per_token)
    for path in paths.values():  # never over an existing file unless --overwrite, never over the input
        checkpoints.check_output(path, [input], overwrite)
    texts = read_texts(input, text_field)
    runtime = setup_runtime(device, dtype)
    model, meta, _ = checkpoints.load(out_dir if init_from == 'out_dir' else init_from, runtime.device, trust_checkpoint)
    tokenizer, special = tokenizer_of(meta)
    encoded = encode_texts(model, tokenizer, special, texts)
    pooled_by = pooling if pooling != 'auto' else 'last token' if model.config.causal else 'first position'
    sequences = [ids for ids, _ in encoded]
    C, n_tokens = model.config.n_embd, sum(len(ids) for ids in sequences)
    with contextlib.ExitStack() as stack:  # every output written to a temp file, all renamed into place at the end
        tmp = {name: stack.enter_context(atomic_path(path)) for name, path in paths.items()}
        pooled_out = np.lib.format.open_memmap(tmp['pooled'], mode='w+', dtype=np.float32, shape=(len(texts), C))
        tokens_out = np.lib.format.open_memmap(tmp['tokens'], mode='w+', dtype=np.float32,
                                               shape=(n_tokens, C)) if per_token else None
        offsets = extract(model, sequences, runtime, pooled_out, tokens_out, pooling, batch_size)
        del pooled_out, tokens_out  # flushes and closes the memmaps before the rename
        if per_token:
            np.save(tmp['offsets'], offsets)  # the temp name ends in .npy too, so np.save adds nothing
        write_jsonl(tmp['index'], ({'line': line, 'text': text[:80], 'n_tokens': len(ids), 'truncated': cut}
                                   for (line, text), (ids, cut) in zip(texts, encoded)))
    n_cut = sum(cut for _, cut in encoded)
    print(f"wrote {output} ({len(texts):,} x {C} float32, pooled by {pooled_by}) and {paths['index']}"
          + (f", {paths['tokens']} ({int(offsets[-1]):,} tokens) and {paths['offsets']}" if per_token else '')
          + (f"; {n_cut} text(s) truncated" if n_cut else ''))


if __name__ == '__main__':
    run_main(main)


# -----------------------------------------------------------------------------
# a classifier head fitted on frozen features: finetune.py --probe=True and curves.py

def head_inputs(model, windows, runtime, batch_size=32):
    """(windows, n_embd) float32: the vector model's sequence head (model.classifier) pools from each encoded
    window ({'ids'}), the trunk as it is: the last real token (causal), the first (through BERT's pooler when the
    model has one) or the mean, as ClassifierHead computes it before its Linear."""
    out = np.zeros((len(windows), model.config.n_embd), dtype=np.float32)
    extract(model, [w['ids'] for w in windows], runtime, out, pooling=model.classifier.pooling, batch_size=batch_size,
            pooler=getattr(model, 'pooler', None))
    return out


def text_scores(window_logprobs, windows):
    """(accuracy, mean negative log-likelihood) over texts of window log-probabilities (windows, classes), a text's
    windows averaged as finetune.py averages them."""
    # (texts, classes): each text's mean over its windows (the log-softmax there leaves log-probabilities as they are)
    total = tasks.text_logprobs(windows, [window_logprobs])
    gold = np.zeros(len(total), dtype=np.int64)
    gold[[w['text_id'] for w in windows]] = [w['labels'] for w in windows]
    return float((total.argmax(1) == gold).mean()), float(-total[np.arange(len(total)), gold].mean())


PROBE_C = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)  # the regressions fit_head tries (0.01 was the edge at 200+ texts)


def fit_head(model, train_x, train_windows, val_x, val_windows, C_values=PROBE_C, seed=0):
    """Set model.classifier (num_labels x n_embd) to a logistic regression on the frozen features train_x of the
    training windows (each labelled with its text's label), its C the one of C_values with the lowest val loss over
    texts (smoother than val accuracy, which ties often on a small val split). The standardisation of the features
    is folded into the weights, so the model computes the regression's log-probabilities by itself. Returns (C, val
    accuracy)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    y = np.array([w['labels'] for w in train_windows])
    scaler = StandardScaler().fit(train_x)
    num_labels = model.classifier.weight.size(0)
    fits = []
    for c in sorted(C_values):
        clf = LogisticRegression(C=c, max_iter=3000, random_state=seed).fit(scaler.transform(train_x), y)
        logprobs = np.full((len(val_x), num_labels), -30.0)
        logprobs[:, clf.classes_] = clf.predict_log_proba(scaler.transform(val_x))  # columns: the classes seen
        fits.append((*text_scores(logprobs, val_windows), c, clf))  # (accuracy, loss, C, model)
    accuracy, _, c, clf = min(fits, key=lambda fit: fit[1])  # the lowest val loss, the first (smallest C) in a tie
    coef, intercept = clf.coef_, clf.intercept_
    if len(clf.classes_) == 2:  # sklearn's binary model: one row, the logit of the second class against the first
        coef, intercept = np.concatenate([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    weight, bias = np.zeros((num_labels, coef.shape[1])), np.full(num_labels, -30.0)  # an unseen class: never
    weight[clf.classes_], bias[clf.classes_] = coef / scaler.scale_, intercept - (coef / scaler.scale_) @ scaler.mean_
    with torch.no_grad():
        model.classifier.weight.copy_(torch.from_numpy(weight))
        model.classifier.bias.copy_(torch.from_numpy(bias))
    return c, accuracy


def head_logprobs(model, x):
    """(windows, classes) log-probabilities model.classifier gives the pooled features x (head_inputs), in numpy."""
    weight, bias = (p.detach().double().cpu().numpy() for p in (model.classifier.weight, model.classifier.bias))
    logits = x.astype(np.float64) @ weight.T + bias
    return logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
