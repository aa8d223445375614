"""
Pictures of runs and models: training curves, attention maps, embedding maps, word attributions, confusion
matrices, per-entity F1.

    python plot.py curves out/pretrain_small                          # -> out/pretrain_small/curves.png
    python plot.py curves out/run_a out/run_b --output=compare.png     # two configs on the same axes
    python plot.py attention --out_dir=out/pretrain_small --text="The government said it would cut taxes."
    python plot.py attention --init_from=path/to/bert --text="Paris is the capital of France." --output=attn.png
    python plot.py embeddings --out_dir=out/pretrain_small --neighbours=king,bank,match   # -> embeddings.png
    python plot.py embeddings --out_dir=out/finetune_bbc --texts=texts.jsonl --projection=tsne   # pooled texts
    python plot.py explain --out_dir=out/finetune_bbc --text="Shares in the bank rose 5% on Monday"
    python plot.py explain --explanations=texts.explain.jsonl --output=explain.png    # finetune.py --explain's file

embeddings maps the input embeddings (wte) of the n_words most frequent whole-word tokens of the training split
(or --words=a,b,c) to 2-D, labelled; with --texts, the pooled features of each text instead (features.py's),
coloured by the file's label field when it has one; --neighbours prints each word's nearest tokens by cosine.
explain shades each word by its score for a classifier's label (features.explain_text, as finetune.py --explain).

Needs matplotlib (pip install matplotlib), imported only when a picture is drawn: nothing else in the repository
needs it. train.py redraws out_dir/curves.png after every evaluation when matplotlib is installed
(try_plot_curves); finetune.py draws the test scores by its task's unit (tasks.py:
plot_confusion, plot_entity_f1).
Every PNG is written to a temp file and renamed into place, so a viewer never sees half a picture.
"""

import importlib.util
import math
import os
import sys

import numpy as np
import torch

import checkpoints
import features
import prepare
import tasks
from configurator import UserError, config_defaults, configure, require, run_main
from files import atomic_path, read_records
from runtime import setup_runtime
from tokenizer import token_text, tokenizer_of

# -----------------------------------------------------------------------------
# attention: where the model and the text come from (curves take run directories as arguments)
init_from = 'out_dir'  # 'out_dir' (best.pt, else last.pt, in out_dir), a checkpoint path, 'gpt2', an HF dir, 'hf:name'
out_dir = 'out/pretrain_small'
trust_checkpoint = False  # unpickle a checkpoint that holds more than tensors (old or foreign files): it can run code
text = "The government said on Monday that it would cut taxes for small firms."
output = None  # the PNG; default: <first run>/curves.png, or <out_dir>/<command>.png
overwrite = False  # replace an existing --output file (never a file the command reads: a checkpoint, a log, --texts)
device = 'auto'
# embeddings: a 2-D map of the input embeddings (or of texts' pooled features), and nearest neighbours
words = None  # comma-separated words to map ('king,queen,bank'); None: the n_words most frequent whole-word tokens
n_words = 100
texts = None  # a .txt (one text a line) or .jsonl file (text, and label if it has one): map their pooled features
neighbours = None  # comma-separated words: print each one's nearest tokens, by cosine of the input embeddings
projection = 'pca'  # 'pca' (numpy), 'tsne' (scikit-learn) or 'umap' (umap-learn), the last two when installed
data_dir = None  # a prepared dataset whose train split counts the words; None: the checkpoint's own, when there
# explain: the words of --text shaded by their contribution to a classifier's label, or those of a --explain file
explanations = None  # a JSON lines file of finetune.py --predict=FILE:... --explain=True; None: explain --text
explain_method = 'both'  # 'occlusion', 'integrated_gradients' or 'both'
ig_steps = 32
# -----------------------------------------------------------------------------

METRIC_SUFFIXES = ('_acc', '_accuracy', '_f1')  # scores in [0, 1] in a metrics log: the curves' second panel
SCORE_NAMES = {'val_accuracy': 'accuracy', 'val_macro_f1': 'macro-F1', 'val_entity_f1': 'entity F1',
               'mlm_acc': 'masked-token accuracy', 'mlm_baseline_acc': 'most frequent token (baseline)',
               'nsp_acc': 'next-sentence accuracy'}


def require_matplotlib():
    """A one-line UserError that says how to install matplotlib when it is missing."""
    require('matplotlib', "pictures need matplotlib, which is not installed: pip install matplotlib")


def figure(width, height, layout='constrained'):
    """A matplotlib Figure on the file-only Agg canvas: no pyplot, no GUI, no global state."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def save(fig, path, dpi=110):
    """Write fig as a PNG to path atomically (temp file, then rename); returns path."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format='png', dpi=dpi)
    return path


# -----------------------------------------------------------------------------
# training curves

def read_metrics(run_dir):
    """The records of run_dir/metrics.jsonl, in order. A line that is not a JSON object (torn by a crash or a full
    disk, or the run is logging right now) is skipped with a warning."""
    path = os.path.join(run_dir, 'metrics.jsonl')
    if not os.path.isfile(path):
        raise UserError(f"{path} not found: {run_dir} is not a train.py / finetune.py run directory, "
                               f"or it has not logged anything yet")
    records, torn = read_records(path)
    with open(path, encoding='utf-8', errors='replace') as f:
        n_lines = len(f.read().splitlines())
    if torn and torn != [n_lines]:  # the last line alone may be one being written
        print(f"warning: {path}: skipped {len(torn)} line(s) that are not JSON records (line {torn[0]}...)",
              file=sys.stderr)
    if not any('train_loss' in r or 'val_loss' in r for r in records):
        raise UserError(f"{path} has no loss records yet: nothing to plot")
    return records


def series(records, key, x_key):
    """(x, y) arrays of key over x_key. A log that goes back (a run resumed from an earlier checkpoint, or started
    again in the same directory) is read as the later run replacing what was logged from that point on."""
    points = []
    for r in records:
        if isinstance(r.get(key), (int, float)) and x_key in r:
            while points and points[-1][0] >= r[x_key]:
                points.pop()
            points.append((r[x_key], r[key]))
    return np.array([x for x, _ in points], dtype=float), np.array([y for _, y in points], dtype=float)


def token_axis(max_tokens):
    """(divisor, axis label) for a count of tokens: tokens seen (k / M / B)."""
    for divisor, unit in ((1e9, 'B'), (1e6, 'M'), (1e3, 'k')):
        if max_tokens >= divisor:
            return divisor, f"tokens seen ({unit})"
    return 1, "tokens seen"


def plot_curves(run_dirs, path, labels=None):
    """Train and val loss against tokens seen, the learning rate on a second y axis, a panel of val bits per byte
    when the logs have it (tokenizer-independent, so runs of different vocabularies compare), and a panel with the
    task scores (keys ending in _acc, _accuracy, _f1: val_accuracy, val_macro_f1, val_entity_f1, mlm_acc, nsp_acc)
    when the logs have any; several runs on the same axes, one colour each. Returns path."""
    runs = [read_metrics(d) for d in run_dirs]
    if labels is None:
        names = [os.path.basename(os.path.normpath(d)) for d in run_dirs]
        labels = names if len(set(names)) == len(names) else [os.path.normpath(d) for d in run_dirs]
    x_key = 'tokens' if all(any('tokens' in r for r in records) for records in runs) else 'iter'
    max_x = max(max((r.get(x_key, 0) for r in records), default=0) for records in runs)
    divisor, x_label = token_axis(max_x) if x_key == 'tokens' else (1, 'iterations')
    metrics = sorted({k for records in runs for r in records for k in r if k.endswith(METRIC_SUFFIXES)})
    bpb = any('val_bpb' in r for records in runs for r in records)
    n_panels = 1 + bool(metrics) + bpb
    fig = figure(8, 4.5 + 3 * (n_panels - 1))
    axes = fig.subplots(n_panels, 1, sharex=True, squeeze=False)[:, 0]
    score_ax, bpb_ax = axes[1] if metrics else None, axes[-1] if bpb else None
    loss_ax, lr_ax = axes[0], axes[0].twinx()
    max_lr = max((r['lr'] for records in runs for r in records if isinstance(r.get('lr'), (int, float))), default=0)
    lr_exp = round(math.log10(max_lr)) if max_lr > 0 else 0  # the label says 'x 1e-3', the ticks 0.2 .. 1.0
    several = len(runs) > 1

    def curve(ax, records, key, scale=1.0, **style):
        """The line of records' key over the x axis."""
        x, y = series(records, key, x_key)
        ax.plot(x / divisor, y / scale, **style)

    for n, (records, label) in enumerate(zip(runs, labels)):
        prefix, colour = (f"{label}: ", f'C{n}') if several else ('', None)  # several runs: one colour each
        curve(loss_ax, records, 'train_loss', color=colour or 'C0', lw=1, alpha=0.7, label=f"{prefix}train loss")
        curve(loss_ax, records, 'val_loss', color=colour or 'C1', lw=1.8, marker='o', ms=3.5,
              ls='--' if several else '-', label=f"{prefix}val loss")
        curve(lr_ax, records, 'lr', 10.0 ** lr_exp, color=colour or '0.45', lw=1, ls=':',
              label=f"{prefix}learning rate")
        if bpb_ax is not None:
            curve(bpb_ax, records, 'val_bpb', color=colour or 'C1', lw=1.8, marker='o', ms=3.5, label=label)
        for m, key in enumerate(metrics):
            if any(key in r for r in records):  # a run that logs the score
                curve(score_ax, records, key, color=colour or f'C{m}', ms=3.5, marker='os^vD*'[m % 6],
                      ls=':' if 'baseline' in key else '-', label=prefix + SCORE_NAMES.get(key, key))
    fig.suptitle(' vs '.join(labels))
    y_labels = {loss_ax: "cross-entropy loss (nats)", score_ax: "score (validation)", bpb_ax: "val bits per byte"}
    for ax in axes:
        ax.set_ylabel(y_labels[ax])
        ax.grid(alpha=0.3)
    lr_ax.set(ylabel="learning rate" + (f" (x 1e{lr_exp})" if lr_exp else ''), ylim=(0, None))
    # one row a run: every train loss, then every val loss (the loss axis holds a run's two in turn), then every lr
    above(loss_ax, [*loss_ax.lines[::2], *loss_ax.lines[1::2], *lr_ax.lines], ncols=3)
    if metrics:
        above(score_ax, score_ax.lines, ncols=min(len(metrics), 4) if not several else len(metrics))
    axes[-1].set_xlabel(x_label)
    return save(fig, path)


def above(ax, handles, ncols):
    """A legend in a band above ax, where it covers no line."""
    ax.legend(handles, [h.get_label() for h in handles], loc='lower left', bbox_to_anchor=(0, 1.01), ncols=ncols,
              fontsize=8, frameon=False, borderaxespad=0, columnspacing=2.5)


def try_plot_curves(out_dir):
    """Redraw out_dir/curves.png for a running train.py / finetune.py: nothing when matplotlib is missing, and a
    warning on stderr, never an exception, when drawing fails (a picture is not worth a training run)."""
    if importlib.util.find_spec('matplotlib') is None:
        return None
    try:
        return plot_curves([out_dir], os.path.join(out_dir, 'curves.png'))
    except Exception as e:
        print(f"warning: could not draw {os.path.join(out_dir, 'curves.png')}: {type(e).__name__}: {e}", file=sys.stderr)


# -----------------------------------------------------------------------------
# attention maps

def plot_attention(weights, tokens, path, title=None):
    """A grid of attention maps, one row a layer and one column a head, from weights (n_layer, n_head, T, T) and
    the T token strings: row i of a map is how query token i spreads its attention over the keys. Cells a query
    may not see (future tokens of a causal model, padding) are left blank. Legible up to ~64 tokens. Returns path."""
    weights = np.asarray(weights.float().cpu() if torch.is_tensor(weights) else weights, dtype=np.float32)
    n_layer, n_head, T, _ = weights.shape
    if len(tokens) != T:
        raise ValueError(f"{len(tokens)} token strings for attention maps over {T} positions")
    labels = [tick_label(t) for t in tokens]
    fontsize = 7 if T <= 24 else 6 if T <= 40 else 5
    panel = max(1.8, T * fontsize * 1.45 / 72)  # inches: one line of tick text a token
    longest = max(len(s) for s in labels) * fontsize * 0.6 / 72  # inches taken by the tick labels
    fig = figure(n_head * panel + longest + 1.6, n_layer * panel + longest + 1.2)
    axes = fig.subplots(n_layer, n_head, sharex=True, sharey=True, squeeze=False)
    vmax = float(weights.max()) or 1.0
    for (layer, head), ax in np.ndenumerate(axes):
        image = ax.imshow(np.ma.masked_equal(weights[layer, head], 0.0), cmap='viridis', vmin=0, vmax=vmax,
                          interpolation='nearest')
        ax.tick_params(length=1.5, pad=1, labelsize=fontsize)
        if layer == 0:
            ax.set_title(f"head {head}", fontsize=9)
        if head == 0:
            ax.set_ylabel(f"layer {layer}\nquery token", fontsize=9)
        if layer == n_layer - 1:
            ax.set_xlabel("key token", fontsize=9)
            ax.tick_params(axis='x', labelrotation=90)
    axes[-1, 0].set_xticks(range(T), labels, parse_math=False)  # shared: every panel of the row and column
    axes[0, 0].set_yticks(range(T), labels, parse_math=False)
    fig.colorbar(image, ax=axes, shrink=0.6, aspect=30).set_label("attention weight")
    fig.suptitle(title or f"attention weights, {n_layer} layers x {n_head} heads")
    return save(fig, path, dpi=100)


def tick_label(token):
    """A token string that shows as itself on an axis: whitespace made visible, one line."""
    if token.isspace() or not token:
        return ''.join({' ': '\u2423', '\n': '\\n', '\t': '\\t'}.get(c, repr(c)[1:-1]) for c in token) or "''"
    return token.replace('\n', '\\n')


def attention_for_text(model, tokenizer, special, text):
    """(weights (n_layer, n_head, T, T), token strings) of model on text: `[CLS] text [SEP]` when the model is an
    encoder with special tokens. A text longer than block_size is cut to its first block_size tokens, with a
    warning on stderr."""
    ids = tokenizer.encode(text)
    if not ids:
        raise UserError("--text is empty: give the text whose attention to draw")
    encoder = not model.config.causal and special is not None
    room = model.config.block_size - (2 if encoder else 0)
    if len(ids) > room:
        print(f"warning: the text is {len(ids)} tokens, more than the {room} that fit the model's block_size "
              f"{model.config.block_size}: drawing the first {room}", file=sys.stderr)
        ids = ids[:room]
    if encoder:
        ids = [special['cls'], *ids, special['sep']]
    device = next(model.parameters()).device
    weights = model.eval().attention_maps(torch.tensor([ids], device=device))[:, 0]  # (n_layer, n_head, T, T)
    return weights.float().cpu().numpy(), [token_text(tokenizer, i, special) for i in ids]


# -----------------------------------------------------------------------------
# embedding maps and neighbours

def plot_map(points, axis_names, path, names=None, classes=None, title=None):
    """A scatter of 2-D points (N, 2) with the two axis names: each point labelled with names[i] when names are
    given; coloured by classes[i] (a class name a point, one colour a class, a legend) when classes are. Returns
    path."""
    points = np.asarray(points, dtype=float)
    fig = figure(9, 7.5)
    ax = fig.subplots()
    if classes is not None:
        for n, name in enumerate(sorted(set(classes))):
            ax.scatter(*points[np.asarray(classes) == name].T, s=14, color=f'C{n % 10}', label=name, alpha=0.8)
        ax.legend(fontsize=8, markerscale=1.5)
    else:
        ax.scatter(*points.T, s=8, color='C0', alpha=0.6)
    for i, name in enumerate(names or []):
        ax.annotate(name, points[i], xytext=(2, 2), textcoords='offset points', fontsize=7, parse_math=False)
    ax.set(xlabel=axis_names[0], ylabel=axis_names[1], title=title or f"{len(points)} points")
    ax.grid(alpha=0.3)
    return save(fig, path)


def token_counts(data_dir, meta):
    """A count an id of the tokens of data_dir's train split; a one-line error when its tokenizer is not meta's."""
    data_meta = prepare.load_meta(data_dir)
    if any(data_meta.get(key) != meta.get(key) for key in ('tokenizer', 'vocab_size', 'vocab_sha256', 'chars')):
        raise UserError(f"{data_dir} was tokenized with {data_meta['tokenizer']} ({data_meta['vocab_size']:,} "
                               f"ids), not the checkpoint's tokenizer: pass --data_dir of the data it was trained on")
    return np.bincount(prepare.open_split(data_dir, 'train'), minlength=data_meta['vocab_size'])


def source_of(config):
    """What --init_from names: out_dir's run directory for 'out_dir', else itself."""
    return config['out_dir'] if config['init_from'] == 'out_dir' else config['init_from']


def embeddings_command(config, runtime):
    """plot.py embeddings: neighbours printed, then the map of words (or of --texts) drawn; returns the PNG path."""
    features.check_projection(config['projection'])  # before anything is loaded
    model, meta, checkpoint = checkpoints.load(source_of(config), runtime.device, config['trust_checkpoint'])
    tokenizer, special = tokenizer_of(meta)
    embedding = model.transformer.wte.weight.detach().float().cpu().numpy()  # (V, C) input embeddings
    candidates = features.ordinary_ids(tokenizer, special, len(embedding))
    for word in [w.strip() for w in (config['neighbours'] or '').split(',') if w.strip()]:
        ids = features.word_ids(tokenizer, word)
        near = features.nearest_tokens(embedding, tokenizer, embedding[ids].mean(0), candidates, exclude=ids)
        pieces = f" ({len(ids)} tokens, {'|'.join(token_text(tokenizer, i) for i in ids)}: their mean)"
        print(f"{word}{pieces if len(ids) > 1 else ''}: " + ', '.join(f"{text} {cosine:.2f}" for text, cosine in near))
    names, classes, stem = None, None, 'embeddings'  # the points' labels, their colours, the default PNG's name
    if config['texts']:
        rows = features.read_texts(config['texts'])
        encoded = features.encode_texts(model, tokenizer, special, rows)
        vectors = np.zeros((len(rows), model.config.n_embd), dtype=np.float32)  # (N, C) pooled features
        features.extract(model, [ids for ids, _ in encoded], runtime, vectors)
        classes = features.read_labels(config['texts'], [line for line, _ in rows])
        what, stem = f"pooled features of {len(rows)} texts", 'texts_map'
    elif config['words']:
        names = [w.strip() for w in config['words'].split(',') if w.strip()]
        # a word's vector: the mean of its tokens' input embeddings
        vectors = np.stack([embedding[features.word_ids(tokenizer, word)].mean(0) for word in names])
        what = f"input embeddings of {len(names)} given words"
    else:
        # --data_dir, else the dataset a train.py checkpoint names when prepared there (an HF checkpoint names none)
        trained = (checkpoint or {}).get('config', {})
        data_dir = config['data_dir']
        if not data_dir and isinstance(trained.get('data_root'), str) and isinstance(trained.get('dataset'), str):
            found = os.path.join(trained['data_root'], trained['dataset'])
            data_dir = found if os.path.isfile(os.path.join(found, 'meta.json')) else None
        counts = token_counts(data_dir, meta) if data_dir else None
        if counts is None:
            print("note: no training data found (pass --data_dir=data/NAME): the words are taken in token-id order, "
                  "for a BPE its merge order, roughly by frequency", file=sys.stderr)
        chosen = features.frequent_words(tokenizer, candidates, config['n_words'], counts)
        names, vectors = [word for word, _ in chosen], embedding[[i for _, i in chosen]]
        what = f"input embeddings of {len(names)} {'most frequent words' if counts is not None else 'words'}"
    points, axis_names = features.project_2d(vectors, config['projection'])
    return plot_map(points, axis_names, config['output'] or default_output(config, stem), names=names, classes=classes,
                    title=f"{what}, {source_of(config)} ({config['projection'].upper()})")


def default_output(config, name):
    """<out_dir>/<name>.png for a run directory, else <name>.png here."""
    return os.path.join(config['out_dir'], f'{name}.png') if config['init_from'] == 'out_dir' else f'{name}.png'


# -----------------------------------------------------------------------------
# word attributions of a classifier (features.explain_text)

def read_explanations(path):
    """The records of a finetune.py --explain JSON lines file; a one-line error for a line that is not one."""
    if not os.path.isfile(path):
        raise UserError(f"--explanations={path} not found: write one with finetune.py --predict=FILE:... --explain=True")
    records = []
    for n, record in tasks.read_jsonl_rows(path):  # a line that is not a JSON object: a one-line DataError
        if not ({'words', 'label', 'probabilities'} <= set(record)
                and any(m in record for m in features.EXPLAIN_METHODS)):
            raise UserError(f"{path} line {n} is not a finetune.py --explain record (words, label, scores)")
        records.append(record)
    if not records:
        raise UserError(f"{path} holds no explanations")
    return records


def explain_command(config, runtime):
    """The records plot.py explain draws: those of --explanations, or --text explained with the checkpoint."""
    if config['explanations']:
        return read_explanations(config['explanations'])
    path = source_of(config)
    model, meta, checkpoint = checkpoints.load(path, runtime.device, config['trust_checkpoint'])
    if not (meta.get('task') in tasks.TASKS and tasks.TASKS[meta['task']].explainable):
        raise UserError(f"{path} is not a fine-tuned classifier (task {meta.get('task')!r}): plot.py explain "
                        f"needs one, e.g. --out_dir=out/finetune_bbc")
    trained = (checkpoint or {}).get('config') or {}
    methods = features.EXPLAIN_METHODS if config['explain_method'] == 'both' else (config['explain_method'],)
    return [features.explain_text(model, tokenizer_of(meta)[0], meta['special_tokens'], meta['label_names'],
                                  config['text'], trained.get('truncation', 'head'), trained.get('max_windows', 4),
                                  methods, config['ig_steps'])]


def plot_explanations(records, path, line_chars=110):
    """Each record's words (features.explain_text) laid out as text, one block a method, each word on a colour
    for its score: red raises the explained label's log-probability, blue lowers it, white is none, the full colour
    each block's largest |score|; grey: a word the model never read (cut off). Returns path."""
    require_matplotlib()
    from matplotlib import colormaps
    from matplotlib.patches import Rectangle
    cmap = colormaps['RdBu_r']
    headings, placed, top = [], [], 0  # [(y, heading)], [(x, y, word, colour)]; y counts text lines from the top
    for n, record in enumerate(records):
        text_name = f"text {n + 1}: " if len(records) > 1 else ''
        for method in [m for m in features.EXPLAIN_METHODS if m in record]:
            scores = record[method]
            scale = max((abs(s) for s in scores if s is not None), default=0.0) or 1.0
            gap = f", completeness gap {record['completeness_gap']:+.3f}" if method == 'integrated_gradients' else ''
            headings.append((top + 0.5, f"{text_name}{method.replace('_', ' ')} for '{record['label']}' (p "
                             f"{record['probabilities'][record['label']]:.3f}); full colour = {scale:.3g} nats{gap}"))
            x, line = 0, 0
            for word, score in zip(record['words'], scores):
                if x and x + len(word) > line_chars:
                    x, line = 0, line + 1
                colour = '0.8' if score is None else cmap(0.5 + 0.45 * score / scale)
                placed.append((x, top + 1.5 + line, word, colour))
                x += len(word) + 1
            top += line + 3  # the heading, the words' lines, a blank line
    fontsize = 9
    fig = figure(line_chars * fontsize * 0.6 / 72 + 0.4, top * fontsize * 1.9 / 72 + 0.6, layout=None)
    ax = fig.add_axes((0.01, 0.01, 0.98, 0.98))
    ax.set_axis_off()
    ax.set(xlim=(0, line_chars), ylim=(top, 0))
    for y, heading in headings:
        ax.text(0, y, heading, fontsize=fontsize, fontweight='bold', va='center', parse_math=False)
    for x, y, word, colour in placed:
        ax.add_patch(Rectangle((x - 0.1, y - 0.42), len(word) + 0.2, 0.84, color=colour, lw=0))
        ax.text(x, y, word, fontsize=fontsize, family='monospace', va='center', parse_math=False)
    return save(fig, path)


# -----------------------------------------------------------------------------
# fine-tuning results (called by finetune.py after evaluation)

def plot_confusion(matrix, names, path, title=None):
    """Confusion matrix: rows the true class, columns the predicted one, the count in every cell, class names on
    both axes. Returns path."""
    matrix = np.asarray(matrix)
    k = len(names)
    if matrix.shape != (k, k):
        raise ValueError(f"confusion matrix of shape {matrix.shape} for {k} class names")
    size = max(4.0, 0.55 * k + 2.5)
    fig = figure(size + 1.0, size)
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap='Blues', interpolation='nearest')
    fontsize = 9 if k <= 10 else 7 if k <= 20 else 5
    threshold = matrix.max() / 2 if matrix.size else 0
    for i, j in np.ndindex(k, k):
        ax.text(j, i, f"{matrix[i, j]:,}", ha='center', va='center', fontsize=fontsize,
                color='white' if matrix[i, j] > threshold else 'black')
    ax.set_xticks(range(k), [str(n) for n in names], rotation=45 if k > 3 else 0, ha='right' if k > 3 else 'center',
                  fontsize=fontsize, parse_math=False)
    ax.set_yticks(range(k), [str(n) for n in names], fontsize=fontsize, parse_math=False)
    total = int(matrix.sum())
    accuracy = np.trace(matrix) / total if total else float('nan')
    ax.set(xlabel="predicted class", ylabel="true class",
           title=title or f"confusion matrix: {total:,} examples, accuracy {accuracy:.3f}")
    fig.colorbar(image, ax=ax, shrink=0.8).set_label("examples")
    return save(fig, path)


def plot_entity_f1(per_type, path, title=None):
    """Bar chart of entity-level F1 per entity type, from per_type = {type: {'precision', 'recall', 'f1',
    'support'}}, the support (entities in the reference) written on each bar. Returns path."""
    if not per_type:
        raise ValueError("no entity types to plot")
    types = sorted(per_type, key=lambda t: -per_type[t].get('support', 0))
    fig = figure(max(5.0, 0.7 * len(types) + 2.0), 4.2)
    ax = fig.subplots()
    bars = ax.bar(range(len(types)), [per_type[t]['f1'] for t in types], color='C0')
    for bar, t in zip(bars, types):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.01,
                f"{bar.get_height():.2f}\nn={per_type[t].get('support', 0):,}", ha='center', va='bottom', fontsize=7)
    ax.set_xticks(range(len(types)), types, rotation=45 if len(types) > 5 else 0,
                  ha='right' if len(types) > 5 else 'center', parse_math=False)
    ax.set(ylim=(0, 1.15), xlabel="entity type (n = entities in the reference)", ylabel="entity-level F1",
           title=title or "entity-level F1 per type")
    ax.grid(axis='y', alpha=0.3)
    return save(fig, path)


# -----------------------------------------------------------------------------

def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv else None
    if command not in ('curves', 'attention', 'embeddings', 'explain'):
        raise UserError("usage: python plot.py curves RUN_DIR [RUN_DIR ...] [--output=FILE], or python plot.py "
                               "attention|embeddings|explain --out_dir=RUN_DIR [--text='...'] [--output=FILE]")
    positional = [a for a in argv[1:] if not a.startswith('--')]
    require_matplotlib()  # before a model is loaded for nothing
    config = configure(config_defaults(globals()), [a for a in argv[1:] if a.startswith('--')], quiet=True)
    if config['output']:  # never over what this command reads
        inputs = [os.path.join(run_dir, 'metrics.jsonl') for run_dir in positional] if command == 'curves' else \
            checkpoints.files_read(source_of(config)) + [p for p in (config['texts'], config['explanations']) if p]
        checkpoints.check_output(config['output'], inputs, config['overwrite'])
    if command == 'curves':
        if not positional:
            raise UserError("plot.py curves needs at least one run directory: python plot.py curves out/run")
        path = plot_curves(positional, config['output'] or os.path.join(positional[0], 'curves.png'))
    elif positional:
        raise UserError(f"plot.py {command} takes --key=value options only, not {positional[0]!r}: "
                               f"--out_dir=RUN_DIR ...")
    elif command == 'embeddings':
        path = embeddings_command(config, setup_runtime(config['device'], 'float32'))
    elif command == 'explain':
        records = explain_command(config, setup_runtime(config['device'], 'float32'))
        path = plot_explanations(records, config['output'] or (default_output(config, 'explain') if not
                                 config['explanations'] else os.path.splitext(config['explanations'])[0] + '.png'))
    else:
        runtime = setup_runtime(config['device'], 'float32')
        model, meta, _ = checkpoints.load(source_of(config), runtime.device, config['trust_checkpoint'])
        weights, tokens = attention_for_text(model, *tokenizer_of(meta), config['text'])
        kind = 'causal' if model.config.causal else 'bidirectional'
        path = plot_attention(weights, tokens, config['output'] or default_output(config, 'attention'),
                              title=f"attention of {source_of(config)} ({kind}, {len(tokens)} tokens)")
    print(f"wrote {path}")


if __name__ == '__main__':
    run_main(main)
