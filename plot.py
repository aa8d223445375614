"""
Pictures of runs and models: training curves, attention maps, confusion matrices, per-entity F1.

    python plot.py curves out/pretrain_small                          # -> out/pretrain_small/curves.png
    python plot.py curves out/run_a out/run_b --output=compare.png     # two configs on the same axes
    python plot.py attention --out_dir=out/pretrain_small --text="The government said it would cut taxes."
    python plot.py attention --init_from=path/to/bert --text="Paris is the capital of France." --output=attn.png

Needs matplotlib (pip install matplotlib), imported only when a picture is drawn: nothing else in the repository
needs it. train.py redraws out_dir/curves.png after every evaluation when matplotlib is installed
(try_plot_curves); finetune.py draws its confusion matrix (plot_confusion) and per-entity F1 (plot_entity_f1).
Every PNG is written to a temp file and renamed into place, so a viewer never sees half a picture.
"""

import importlib.util
import json
import math
import os
import sys

import numpy as np
import torch

import common
import sample
from configurator import configure, config_defaults

# -----------------------------------------------------------------------------
# attention: where the model and the text come from (curves take run directories as arguments)
init_from = 'out_dir'  # 'out_dir' (best.pt, else last.pt, in out_dir), a checkpoint path, 'gpt2', an HF dir, 'hf:name'
out_dir = 'out/pretrain_small'
trust_checkpoint = False  # unpickle a checkpoint that holds more than tensors (old or foreign files): it can run code
text = "The government said on Monday that it would cut taxes for small firms."
output = None  # the PNG; default: <first run>/curves.png, or <out_dir>/attention.png
device = 'auto'
# -----------------------------------------------------------------------------

METRIC_SUFFIXES = ('_acc', '_accuracy', '_f1')  # scores in [0, 1] in a metrics log: the curves' second panel
SCORE_NAMES = {'val_accuracy': 'accuracy', 'val_macro_f1': 'macro-F1', 'val_entity_f1': 'entity F1',
               'mlm_acc': 'masked-token accuracy', 'mlm_baseline_acc': 'most frequent token (baseline)',
               'nsp_acc': 'next-sentence accuracy'}


def require_matplotlib():
    """A one-line UserError that says how to install matplotlib when it is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise common.UserError("pictures need matplotlib, which is not installed: pip install matplotlib") from None


def figure(width, height):
    """A matplotlib Figure on the file-only Agg canvas: no pyplot, no GUI, no global state."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), layout='constrained')
    FigureCanvasAgg(fig)
    return fig


def save(fig, path, dpi=110):
    """Write fig as a PNG to path atomically (temp file, then rename); returns path."""
    with common.atomic_path(path) as tmp:
        fig.savefig(tmp, format='png', dpi=dpi)
    return path


# -----------------------------------------------------------------------------
# training curves

def read_metrics(run_dir):
    """The records of run_dir/metrics.jsonl, in order. A line that is not a JSON object (torn by a crash or a full
    disk, or the run is logging right now) is skipped with a warning."""
    path = os.path.join(run_dir, 'metrics.jsonl')
    if not os.path.isfile(path):
        raise common.UserError(f"{path} not found: {run_dir} is not a train.py / finetune.py run directory, "
                               f"or it has not logged anything yet")
    with open(path, encoding='utf-8', errors='replace') as f:
        lines = f.read().splitlines()
    records, torn = [], []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            torn.append(n)
    if torn and torn != [len(lines)]:  # the last line alone may be one being written
        print(f"warning: {path}: skipped {len(torn)} line(s) that are not JSON records (line {torn[0]}...)",
              file=sys.stderr)
    if not any('train_loss' in r or 'val_loss' in r for r in records):
        raise common.UserError(f"{path} has no loss records yet: nothing to plot")
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
    run_dirs = [run_dirs] if isinstance(run_dirs, (str, os.PathLike)) else list(run_dirs)
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
    lr_scale = 10.0 ** lr_exp
    several = len(runs) > 1
    lines = {'train': [], 'val': [], 'lr': [], 'scores': []}
    for n, (records, label) in enumerate(zip(runs, labels)):
        prefix = f"{label}: " if several else ''
        x, y = series(records, 'train_loss', x_key)
        lines['train'] += loss_ax.plot(x / divisor, y, color=f'C{n}' if several else 'C0', lw=1, alpha=0.7,
                                       label=f"{prefix}train loss")
        x, y = series(records, 'val_loss', x_key)
        lines['val'] += loss_ax.plot(x / divisor, y, color=f'C{n}' if several else 'C1', lw=1.8, marker='o', ms=3.5,
                                     ls='--' if several else '-', label=f"{prefix}val loss")
        x, y = series(records, 'lr', x_key)
        lines['lr'] += lr_ax.plot(x / divisor, y / lr_scale, color=f'C{n}' if several else '0.45', lw=1, ls=':',
                                  label=f"{prefix}learning rate")
        if bpb_ax is not None:
            x, y = series(records, 'val_bpb', x_key)
            bpb_ax.plot(x / divisor, y, color=f'C{n}' if several else 'C1', lw=1.8, marker='o', ms=3.5, label=label)
        for m, key in enumerate(metrics):
            x, y = series(records, key, x_key)
            if len(x):
                lines['scores'] += score_ax.plot(x / divisor, y, color=f'C{n if several else m}', marker='os^vD*'[m % 6],
                                                ms=3.5, ls=':' if 'baseline' in key else '-',
                                                label=prefix + SCORE_NAMES.get(key, key))
    fig.suptitle(labels[0] if not several else ' vs '.join(labels))
    loss_ax.set_ylabel("cross-entropy loss (nats)")
    lr_ax.set_ylabel("learning rate" + (f" (x 1e{lr_exp})" if lr_exp else ''))
    lr_ax.set_ylim(bottom=0)
    loss_ax.grid(alpha=0.3)
    above(loss_ax, lines['train'] + lines['val'] + lines['lr'], ncols=3)  # one row a run
    if metrics:
        score_ax.set_ylabel("score (validation)")
        score_ax.grid(alpha=0.3)
        above(score_ax, lines['scores'], ncols=min(len(metrics), 4) if not several else len(metrics))
    if bpb_ax is not None:
        bpb_ax.set_ylabel("val bits per byte")
        bpb_ax.grid(alpha=0.3)
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
        return None


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
    for layer in range(n_layer):
        for head in range(n_head):
            ax = axes[layer, head]
            image = ax.imshow(np.ma.masked_equal(weights[layer, head], 0.0), cmap='viridis', vmin=0, vmax=vmax,
                              interpolation='nearest')
            ax.set_xticks(range(T))
            ax.set_yticks(range(T))
            ax.tick_params(length=1.5, pad=1, labelsize=fontsize)
            if layer == 0:
                ax.set_title(f"head {head}", fontsize=9)
            if head == 0:
                ax.set_ylabel(f"layer {layer}\nquery token", fontsize=9)
            if layer == n_layer - 1:
                ax.set_xlabel("key token", fontsize=9)
                ax.tick_params(axis='x', labelrotation=90)
    axes[-1, 0].set_xticklabels(labels, parse_math=False)  # shared: every panel of the row and column
    axes[0, 0].set_yticklabels(labels, parse_math=False)
    colorbar = fig.colorbar(image, ax=axes, shrink=0.6, aspect=30)
    colorbar.set_label("attention weight")
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
        raise common.UserError("--text is empty: give the text whose attention to draw")
    encoder = not model.config.causal and special is not None
    room = model.config.block_size - (2 if encoder else 0)
    if len(ids) > room:
        print(f"warning: the text is {len(ids)} tokens, more than the {room} that fit the model's block_size "
              f"{model.config.block_size}: drawing the first {room}", file=sys.stderr)
        ids = ids[:room]
    if encoder:
        ids = [special['cls'], *ids, special['sep']]
    names = {}
    for name, token_id in (special or {}).items():
        if name != 'n_random':
            names.setdefault(token_id, f"[{name.upper()}]")
    device = next(model.parameters()).device
    weights = model.eval().attention_maps(torch.tensor([ids], device=device))[:, 0]  # (n_layer, n_head, T, T)
    return weights.float().cpu().numpy(), [names.get(i) or sample.token_text(tokenizer, i) for i in ids]


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
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{matrix[i, j]:,}", ha='center', va='center', fontsize=fontsize,
                    color='white' if matrix[i, j] > threshold else 'black')
    ax.set_xticks(range(k), [str(n) for n in names], rotation=45 if k > 3 else 0, ha='right' if k > 3 else 'center',
                  fontsize=fontsize, parse_math=False)
    ax.set_yticks(range(k), [str(n) for n in names], fontsize=fontsize, parse_math=False)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    total = int(matrix.sum())
    accuracy = np.trace(matrix) / total if total else float('nan')
    ax.set_title(title or f"confusion matrix: {total:,} examples, accuracy {accuracy:.3f}")
    fig.colorbar(image, ax=ax, shrink=0.8).set_label("examples")
    return save(fig, path)


def plot_entity_f1(per_type, path, title=None):
    """Bar chart of entity-level F1 per entity type, from per_type = {type: {'precision', 'recall', 'f1',
    'support'}}, the support (entities in the reference) written on each bar. Returns path."""
    if not per_type:
        raise ValueError("no entity types to plot")
    types = sorted(per_type, key=lambda t: -per_type[t].get('support', 0))
    f1 = [per_type[t]['f1'] for t in types]
    fig = figure(max(5.0, 0.7 * len(types) + 2.0), 4.2)
    ax = fig.subplots()
    bars = ax.bar(range(len(types)), f1, color='C0')
    for bar, t in zip(bars, types):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.01,
                f"{bar.get_height():.2f}\nn={per_type[t].get('support', 0):,}", ha='center', va='bottom', fontsize=7)
    ax.set_xticks(range(len(types)), types, rotation=45 if len(types) > 5 else 0,
                  ha='right' if len(types) > 5 else 'center', parse_math=False)
    ax.set_ylim(0, 1.15)
    ax.set_xlabel("entity type (n = entities in the reference)")
    ax.set_ylabel("entity-level F1")
    ax.grid(axis='y', alpha=0.3)
    ax.set_title(title or "entity-level F1 per type")
    return save(fig, path)


# -----------------------------------------------------------------------------

def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv else None
    if command not in ('curves', 'attention'):
        raise common.UserError("usage: python plot.py curves RUN_DIR [RUN_DIR ...] [--output=FILE], or "
                               "python plot.py attention --out_dir=RUN_DIR --text='...' [--output=FILE]")
    positional = [a for a in argv[1:] if not a.startswith('--')]
    require_matplotlib()  # before a model is loaded for nothing
    config = configure(config_defaults(globals()), [a for a in argv[1:] if a.startswith('--')], quiet=True)
    if command == 'curves':
        if not positional:
            raise common.UserError("plot.py curves needs at least one run directory: python plot.py curves out/run")
        path = plot_curves(positional, config['output'] or os.path.join(positional[0], 'curves.png'))
    else:
        if positional:
            raise common.UserError(f"plot.py attention takes --key=value options only, not {positional[0]!r}: "
                                   f"--out_dir=RUN_DIR --text='...'")
        runtime = common.setup_runtime(config['device'], 'float32')
        model, tokenizer, special = sample.load_model(config['init_from'], config['out_dir'], runtime.device,
                                                   config['trust_checkpoint'])
        weights, tokens = attention_for_text(model, tokenizer, special, config['text'])
        source = config['out_dir'] if config['init_from'] == 'out_dir' else config['init_from']
        default = os.path.join(config['out_dir'], 'attention.png') if config['init_from'] == 'out_dir' else 'attention.png'
        kind = 'causal' if model.config.causal else 'bidirectional'
        path = plot_attention(weights, tokens, config['output'] or default,
                              title=f"attention of {source} ({kind}, {len(tokens)} tokens)")
    print(f"wrote {path}")


if __name__ == '__main__':
    common.run_main(main)
