"""
Label-efficiency curves: what pretraining buys. Test accuracy against the number of labelled training examples
for the pretrained model, the same architecture with fresh weights, and the TF-IDF baseline, on the same
stratified samples of the training split (tasks.subsample, as finetune.py and baseline.py draw them) over seeds.

    python curves.py                                       # BBC News from out/pretrain_small (~5 min on 2 cores)
    python curves.py --sizes=25,50,all --seeds=0,1         # another grid
    python curves.py --data=rt_reviews --out_dir=out/curves_rt   # movie reviews, fresh / rotten: another domain
    python curves.py --data=reviews.csv --init_from=out/mine --out_dir=out/curves_reviews
    python curves.py --finetune_sizes=50,all               # also full fine-tuning by finetune.py at those sizes
    python curves.py --init_from=out/pretrain_small,out/seed1,out/seed2   # pretraining seeds pooled (--seed=1, ...)

Each model is read as finetune.py reads it for classification (config's block_size, truncation and max_windows:
a long text becomes windows of `text <eot>`, or `[CLS] text [SEP]` for encoders), and given finetune.py's sequence
head. The vector that head pools from each window (the last real token for causal models, the first for
bidirectional ones) is computed once, the trunk frozen; for every (size, seed) the head is fitted as a logistic
regression on the sample's windows, its C the one with the lowest val loss over texts, and scored on the test
split with a text's windows averaged: exactly `finetune.py --probe=True` (features.fit_head), the feature-based
approach of Devlin et al. 2019 (sec. 5.3). 'scratch' is the same architecture, tokenizer and special tokens with
fresh weights (finetune.py's --init_from=scratch:PATH), a new initialisation per seed: the two differ in the weights
alone.
'tfidf' is baseline.py's model on the same sample. --finetune_sizes adds finetune.py runs that train all weights,
of the pretrained model and of its scratch twin, with epochs scaled so that a small sample still gets
finetune_min_passes text passes. Writes out_dir/curves.json (every run), curves.md (mean and min-max per size)
and curves.png (accuracy against labelled examples, log x, the min-max spread shaded).
"""

import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import torch

import baseline
import checkpoints
import features
import finetune
import tasks
from configurator import UserError, config_defaults, configure, run_main
from files import atomic_path, write_json
from model import Transformer
from runtime import setup_runtime
from tokenizer import get_tokenizer

# -----------------------------------------------------------------------------
init_from = 'out/pretrain_small'  # the pretrained model (any checkpoint finetune.py's init_from takes); several,
# comma-separated (pretraining seeds of one recipe): 'pretrained' pools them, each under every seed
data = 'bbc_news'  # classification data, as finetune.py takes it
text_column = 'text'
label_column = 'label'
config = 'config/finetune_bbc.py'  # finetune.py's config: how texts are read (block_size, truncation, max_windows,
# pooling)
pooling = ''  # the head's pooled vector, if not the config's: 'auto' (last token / [CLS]) or 'mean' (of the tokens)
sizes = '25,50,100,200,500,all'  # labelled training examples; 'all': the whole training split
seeds = '0,1,2'  # one stratified sample (and one scratch initialisation) per seed
split_seed = 1337  # the seed of a single file's train / val / test split, the same for every sample
C_grid = '0.001,0.003,0.01,0.03,0.1,0.3,1'  # the head's logistic regression: the C with the lowest val loss
finetune_sizes = ''  # e.g. '50,all': also full fine-tuning (finetune.py) at these sizes
finetune_min_passes = 1000  # fine-tuning: epochs = max(config's, ceil(this / size)) up to finetune_max_epochs
finetune_max_epochs = 30
out_dir = 'out/curves'
device = 'auto'
dtype = 'auto'
batch_size = 32
trust_checkpoint = False
# -----------------------------------------------------------------------------


def parse_sizes(text, n_train):
    """[(label, size)] of a sizes option ('25,50,all'), each at most n_train."""
    items = [s.strip() for s in text.split(',') if s.strip()]
    for item in items:
        if item != 'all' and not (item.isdigit() and int(item) > 0):
            raise UserError(f"sizes: {item!r} is not a number of examples or 'all' (e.g. --sizes=25,50,all)")
    return [(item, n_train if item == 'all' else min(int(item), n_train)) for item in items]


def window_features(model, meta, splits, names, reading, runtime, batch_size):
    """{split: (encoded windows, their pooled features)}: each text as finetune.py encodes it for classification,
    and what the sequence head of model (checkpoints.for_task, the config's pooling) reads from each window."""
    tok = get_tokenizer(meta['tokenizer'], meta)
    special = finetune.task_special_tokens(meta, model)
    max_len = min(reading['block_size'] or model.config.block_size, model.config.block_size)
    out = {}
    for split, examples in splits.items():
        windows, _ = tasks.encode('classification', examples, tok, special, names, max_len, model.config.causal,
                                  reading['truncation'], max_windows=reading['max_windows'])
        out[split] = windows, features.head_inputs(model, windows, runtime, batch_size)
    return out


def probe(model, feats, sample, C_values, seed):
    """(val accuracy, C, test accuracy) of model's head fitted on the sample's windows (features.fit_head, as
    finetune.py --probe=True fits it)."""
    chosen = set(sample)
    windows, x = feats['train']
    rows = [i for i, w in enumerate(windows) if w['text_id'] in chosen]
    c, val = features.fit_head(model, x[rows], [windows[i] for i in rows], feats['val'][1], feats['val'][0],
                               C_values, seed)
    return val, c, features.text_scores(features.head_logprobs(model, feats['test'][1]), feats['test'][0])[0]


def finetune_run(init, size, seed, epochs, path):
    """Test accuracy of `python finetune.py config ...` on the sample (size, seed), run into path (kept)."""
    if not os.path.exists(os.path.join(path, 'test_results.json')):
        args = [sys.executable, 'finetune.py', *([config] if config else []), f'--init_from={init}', f'--data={data}',
                f'--text_column={text_column}', f'--label_column={label_column}', f'--train_examples={size}',
                f'--seed={seed}', f'--split_seed={split_seed}', f'--epochs={epochs}', '--probe=False', f'--out_dir={path}',
                '--overwrite=True', f'--device={device}', f'--dtype={dtype}']
        proc = subprocess.run(args, cwd=os.path.dirname(os.path.abspath(__file__)), capture_output=True, text=True)
        if proc.returncode:
            raise UserError(f"fine-tuning failed ({' '.join(args[1:])}): "
                            f"{(proc.stderr.strip().splitlines() or ['?'])[-1]}")
    with open(os.path.join(path, 'test_results.json')) as f:
        return json.load(f)['accuracy']


def summary(runs):
    """{method: {size label: (mean, min, max, n)}} of the runs' test accuracies."""
    accuracies = {}  # {method: {size label: [each run's test accuracy]}}
    for r in runs:
        accuracies.setdefault(r['method'], {}).setdefault(r['size_label'], []).append(r['test'])
    return {method: {label: (float(np.mean(values)), min(values), max(values), len(values))
                     for label, values in by_size.items()} for method, by_size in accuracies.items()}


def markdown(table, sizes_, methods):
    rows = ['| labelled examples | ' + ' | '.join(methods) + ' |', '|---:|' + '---:|' * len(methods)]
    for label, size in sizes_:
        cells, best = [], max(table[m][label][0] for m in methods if label in table.get(m, {}))
        for method in methods:
            cell = table.get(method, {}).get(label)
            mean = f"**{cell[0]:.3f}**" if cell and cell[0] == best else f"{cell[0]:.3f}" if cell else ''
            cells.append(f"{mean} ({cell[1]:.3f}-{cell[2]:.3f})" if cell else '')
        rows.append(f"| {size:,}{' (all)' if label == 'all' else ''} | " + ' | '.join(cells) + ' |')
    return '\n'.join(rows) + '\n\nTest accuracy, mean over seeds (lowest-highest); the best mean of a row in bold.\n'


LEGEND = {'pretrained': 'pretrained: frozen features + logistic regression',
          'scratch': 'the same model from random weights, as above',
          'tfidf': 'TF-IDF + logistic regression (baseline.py)',
          'pretrained fine-tuned': 'pretrained, fine-tuned (finetune.py)',
          'scratch fine-tuned': 'from random weights, fine-tuned (finetune.py)'}


def draw(table, sizes_, methods, path, title):
    import plot
    fig = plot.figure(6.4, 4.2)
    ax = fig.add_subplot()
    for method in methods:
        cells = table[method]
        # (5, sizes the method has): examples, then summary's mean, min, max, n
        xs, mean, low, high, _ = np.array([(size, *cells[label]) for label, size in sizes_ if label in cells]).T
        line, = ax.plot(xs, mean, marker='o', label=LEGEND.get(method, method))
        ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.2)
    ax.set(xscale='log', xlabel='labelled training examples (log scale)', ylabel='test accuracy')
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    plot.save(fig, path)


def main():
    globals().update(configure(config_defaults(globals()), sys.argv[1:]))
    started = time.time()
    # how finetune.py reads the texts, from its config file (finetune.py's defaults otherwise)
    read = configure(config_defaults(vars(finetune)), [config] if config else [], quiet=True)
    reading = {key: read[key] for key in ('block_size', 'truncation', 'max_windows', 'epochs', 'pooling')}
    parse_sizes(sizes, 1), parse_sizes(finetune_sizes, 1)  # their form, before any data is read
    try:
        C_values = [float(c) for c in C_grid.split(',')]
        seed_list = [int(s) for s in seeds.split(',')]
    except ValueError:
        raise UserError(f"C_grid={C_grid!r} and seeds={seeds!r} are numbers separated by commas") from None
    splits = tasks.load_task_data('classification', data, text_column=text_column, label_column=label_column,
                                  seed=split_seed)
    if not splits['test']:
        raise UserError(f"{data} has no test split: the curves are test accuracy; give a test file")
    names = tasks.label_names(splits['train'], 'classification')
    sizes_ = parse_sizes(sizes, len(splits['train']))
    samples = {(label, seed): tasks.subsample(splits['train'], size, seed) for label, size in sizes_ for seed in seed_list}
    runtime = setup_runtime(device, dtype)
    runs = []

    def record(method, label, seed, test, **extra):
        runs.append({'method': method, 'size_label': label, 'size': len(samples[label, seed]), 'seed': seed,
                     'test': test, **extra})
        print(f"{method:>10} n={len(samples[label, seed]):>5} seed {seed}: test accuracy {test:.4f}", flush=True)

    inits = [path.strip() for path in init_from.split(',') if path.strip()]
    loaded = [checkpoints.load(path, trust=trust_checkpoint)[:2] for path in inits]
    first, meta = loaded[0]  # one model and tokenizer for all: its meta encodes the texts of each
    for path, (trunk, other) in zip(inits[1:], loaded[1:]):
        if (trunk.config, other.get('tokenizer'), other.get('special_tokens')) != (
                first.config, meta.get('tokenizer'), meta.get('special_tokens')):
            raise UserError(f"init_from: {path} is not the model and tokenizer of {inits[0]}: the pretrained "
                            f"curve pools runs of one recipe (e.g. its seeds); run curves.py once for each")
    # each pretrained trunk's features serve every seed; scratch: a fresh initialisation of the first per seed
    for method, path, trunk, init_seed in [('pretrained', path, trunk, None) for path, (trunk, _) in zip(inits, loaded)
                                           ] + [('scratch', inits[0], None, seed) for seed in seed_list]:
        if method == 'scratch':
            torch.manual_seed(init_seed)
            trunk = Transformer(first.config)
        model = checkpoints.for_task(trunk, 'sequence', len(names), pooling or reading['pooling']).to(runtime.device)
        feats = window_features(model, meta, splits, names, reading, runtime, batch_size)
        for label, _ in sizes_:
            for seed in seed_list if method == 'pretrained' else [init_seed]:
                val, c, test = probe(model, feats, samples[label, seed], C_values, seed)
                record(method, label, seed, test, val=val, C=c, init_from=path)
    tfidf_C = [float(c) for c in baseline.C_grid.split(',')]  # baseline.py's own grid
    fitted = {}  # a sample drawn twice ('all' under every seed) is fitted once: TF-IDF + lbfgs is deterministic
    for label, _ in sizes_:
        for seed in seed_list:
            sample = tuple(samples[label, seed])
            if sample not in fitted:
                sampled = {**splits, 'train': [splits['train'][i] for i in sample]}
                val_by_C, best, report = baseline.fit_and_score(sampled, names, tfidf_C, baseline.max_features, seed)
                fitted[sample] = report['accuracy'], val_by_C[best], best
            test, val, c = fitted[sample]
            record('tfidf', label, seed, test, val=val, C=c)
    methods = ['pretrained', 'scratch', 'tfidf']
    finetuned = parse_sizes(finetune_sizes, len(splits['train']))  # [] when none
    for label, size in finetuned:
        epochs = min(finetune_max_epochs, max(reading['epochs'], math.ceil(finetune_min_passes / size)))
        for seed in seed_list:
            samples.setdefault((label, seed), tasks.subsample(splits['train'], size, seed))
            for method, init, run in [('pretrained fine-tuned', init, f"pretrained{i or ''}") for i, init in enumerate(inits)
                                      ] + [('scratch fine-tuned', f'scratch:{inits[0]}', 'scratch')]:
                path = os.path.join(out_dir, 'runs', f"{run}_n{label}_s{seed}")
                record(method, label, seed, finetune_run(init, size, seed, epochs, path), epochs=epochs, init_from=init)
    if finetuned:
        methods += ['pretrained fine-tuned', 'scratch fine-tuned']
        sizes_ = sorted(set(sizes_) | set(finetuned), key=lambda item: item[1])
    table = summary(runs)
    write_json(os.path.join(out_dir, 'curves.json'), {  # (makes out_dir)
        'init_from': init_from, 'data': data, 'config': config, 'reading': reading, 'seeds': seed_list,
        'split_seed': split_seed, 'runs': runs, 'minutes': round((time.time() - started) / 60, 1)})
    text = markdown(table, sizes_, methods)
    with atomic_path(os.path.join(out_dir, 'curves.md')) as tmp, open(tmp, 'w', encoding='utf-8') as f:
        f.write(text)
    print(text)
    try:
        draw(table, sizes_, methods, os.path.join(out_dir, 'curves.png'),
             f"{data}: {init_from} against its scratch twin and TF-IDF ({len(seed_list)} seeds)")
    except UserError as e:
        print(f"(no picture: {e})")
    print(f"wrote {out_dir}/curves.json, curves.md, curves.png in {(time.time() - started) / 60:.1f} min")


if __name__ == '__main__':
    run_main(main)
