"""
Tests for plot.py (curves, attention maps, confusion matrix, per-entity F1), the explicit attention path of
model.py, features.py and metrics.progress: tiny models on CPU, PNGs checked by header and read back.

    python -m pytest -q tests/test_plot.py
"""
import importlib
import json
import math
import os
import sys

import numpy as np
import pytest
import torch

import checkpoints
import configurator
import metrics as metrics_module
import plot
from conftest import tiny_model_config
from model import KVCache, Transformer, config_dict
from tokenizer import get_tokenizer, special_tokens

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
CHARS = list(" .,'abcdefghijklmnopqrstuvwxyzTGM")


def assert_png(path):
    """path is a PNG that matplotlib reads back as a picture of some size."""
    image = pytest.importorskip('matplotlib.image')
    with open(path, 'rb') as f:
        assert f.read(8) == PNG_SIGNATURE, path
    pixels = image.imread(path)
    assert pixels.ndim == 3 and min(pixels.shape[:2]) >= 200, pixels.shape
    assert not [f for f in os.listdir(os.path.dirname(path)) if '.tmp-' in f]


def write_run(run_dir, n_iters=40, eval_every=10, task=False, resumed_at=None):
    """A metrics.jsonl as train.py writes it (train records every 2 iters, evals every eval_every); task=True adds
    finetune.py's epoch and scores. resumed_at: the run restarted there, so later iterations appear twice."""
    os.makedirs(run_dir, exist_ok=True)
    records = []
    iters = list(range(0, n_iters + 1)) + (list(range(resumed_at, n_iters + 1)) if resumed_at is not None else [])
    for it in iters:
        lr = 1e-3 * min(1.0, (it + 1) / 5) * (0.5 + 0.5 * math.cos(math.pi * it / n_iters))
        if it % 2 == 0 and it > 0:
            records.append({'iter': it, 'tokens': it * 512, 'train_loss': 4 * math.exp(-it / 20) + 1, 'lr': lr})
        if it % eval_every == 0:
            record = {'iter': it, 'tokens': it * 512, 'val_loss': 4 * math.exp(-it / 25) + 1.2, 'lr': lr}
            if task:
                record.update(epoch=it // eval_every, val_accuracy=1 - 0.5 * math.exp(-it / 10),
                              val_macro_f1=1 - 0.6 * math.exp(-it / 10))
            records.append(record)
    with open(os.path.join(run_dir, 'metrics.jsonl'), 'w') as f:
        f.writelines(json.dumps(r) + '\n' for r in records)
    return str(run_dir)


def char_meta(special=False):
    meta = {'tokenizer': 'char', 'chars': CHARS, 'vocab_size': len(CHARS) + 1, 'eot_id': len(CHARS)}
    if special:
        meta['special_tokens'] = special_tokens(meta)
    return meta


def tiny_checkpoint(path, causal=True):
    """A tiny char-level model saved as train.py saves it (block 16, vocab 64); returns the model."""
    torch.manual_seed(0)
    model = Transformer(tiny_model_config(causal=causal)).eval()
    checkpoints.save_checkpoint(str(path), {'model': model.state_dict(), 'model_args': config_dict(model.config),
                                       'meta': char_meta(special=not causal)})
    return model


def script_error(capsys, main):
    """(exit status, stderr) of main run as the CLI runs it."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        configurator.run_main(main)
    return info.value.code, capsys.readouterr().err


def assert_one_line_error(code, stderr, *needles):
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith('error: '), (code, stderr)
    assert 'Traceback' not in stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# -----------------------------------------------------------------------------
# the PNG writers

def test_png_writers(tmp_path):
    """Every writer produces a PNG that reads back; class names with '$' are shown as text, not maths."""
    run = write_run(tmp_path / 'run')
    assert_png(plot.plot_curves([run], str(tmp_path / 'curves.png')))
    weights = torch.softmax(torch.randn(2, 3, 12, 12), dim=-1)
    tokens = ['The', ' government', '\n', ' ', '$', '$x$', *'abcdef']
    assert_png(plot.plot_attention(weights, tokens, str(tmp_path / 'attention.png'), title='test'))
    assert_png(plot.plot_confusion(np.array([[5, 1, 0], [2, 7, 1], [0, 0, 9]]), ['sport', 'tech', '$money'],
                                   str(tmp_path / 'out' / 'confusion.png')))
    per_type = {'person': {'precision': 0.8, 'recall': 0.6, 'f1': 0.686, 'support': 20},
                'location': {'precision': 0.5, 'recall': 0.5, 'f1': 0.5, 'support': 12},
                'product': {'precision': 0.0, 'recall': 0.0, 'f1': 0.0, 'support': 3}}
    assert_png(plot.plot_entity_f1(per_type, str(tmp_path / 'entity_f1.png')))
    with pytest.raises(ValueError, match='3 class names'):
        plot.plot_confusion(np.eye(2), ['a', 'b', 'c'], str(tmp_path / 'bad.png'))
    with pytest.raises(ValueError, match='12 positions'):
        plot.plot_attention(weights, tokens[:5], str(tmp_path / 'bad.png'))


def test_curves_of_two_runs_with_task_scores(tmp_path):
    """Two runs on the same axes, scores in a second panel; a resumed run's repeated iterations count once."""
    a = write_run(tmp_path / 'a', task=True, resumed_at=24)
    b = write_run(tmp_path / 'b', task=True, n_iters=30)
    records = plot.read_metrics(a)
    x, y = plot.series(records, 'val_loss', 'tokens')
    assert list(x) == [0, 5120, 10240, 15360, 20480] and len(y) == 5
    assert list(plot.series(records, 'train_loss', 'iter')[0]) == list(range(2, 41, 2))
    write_run(tmp_path / 'again', n_iters=40)
    with open(tmp_path / 'again' / 'metrics.jsonl', 'a') as f:  # started again in the same directory, 20 iterations
        f.write(open(write_run(tmp_path / 'short', n_iters=20) + '/metrics.jsonl').read())
    assert list(plot.series(plot.read_metrics(tmp_path / 'again'), 'val_loss', 'iter')[0]) == [0, 10, 20]
    assert sorted({k for r in records for k in r if k.endswith(plot.METRIC_SUFFIXES)}) == ['val_accuracy', 'val_macro_f1']
    path = plot.plot_curves([a, b], str(tmp_path / 'compare.png'), labels=['lr 1e-3', 'lr 3e-4'])
    assert_png(path)
    assert plot.token_axis(1_230_000) == (1e6, 'tokens seen (M)') and plot.token_axis(900) == (1, 'tokens seen')
    # the command line: several run directories, the picture where --output says
    plot.main(['curves', a, b, f'--output={tmp_path / "cli.png"}'])
    assert_png(str(tmp_path / 'cli.png'))
    plot.main(['curves', a])
    assert_png(os.path.join(a, 'curves.png'))


def test_curves_bad_input(tmp_path, capsys):
    """A run without metrics, an empty metrics log, no run at all, an unknown command: one-line errors."""
    (tmp_path / 'empty').mkdir()
    code, err = script_error(capsys, lambda: plot.main(['curves', str(tmp_path / 'empty')]))
    assert_one_line_error(code, err, 'metrics.jsonl not found')
    (tmp_path / 'empty' / 'metrics.jsonl').write_text('')
    code, err = script_error(capsys, lambda: plot.main(['curves', str(tmp_path / 'empty')]))
    assert_one_line_error(code, err, 'no loss records')
    code, err = script_error(capsys, lambda: plot.main(['curves']))
    assert_one_line_error(code, err, 'at least one run directory')
    code, err = script_error(capsys, lambda: plot.main(['histogram']))
    assert_one_line_error(code, err, 'usage: python plot.py curves')
    # a half-written last line (the run is logging right now) is skipped quietly; a torn line elsewhere (a crash or
    # a full disk mid-append, then a resumed run) is skipped with a warning, and the curves are still drawn
    run = write_run(tmp_path / 'live')
    with open(os.path.join(run, 'metrics.jsonl'), 'a') as f:
        f.write('{"iter": 41, "tok')
    n_records = len(plot.read_metrics(run))
    assert n_records > 0 and 'warning' not in capsys.readouterr().err
    with open(os.path.join(run, 'metrics.jsonl'), 'a') as f:
        f.write('{"iter": 42, "train_loss": 1.0}\n')  # glued onto the torn line by a later append
        f.write('{"iter": 43, "train_loss": 0.9}\n')
    records = plot.read_metrics(run)
    assert len(records) == n_records + 1 and records[-1]['iter'] == 43
    assert 'skipped 1 line(s)' in capsys.readouterr().err


def test_matplotlib_missing(tmp_path, capsys, monkeypatch):
    """Without matplotlib the command says how to install it in one line, and train.py's redraw does nothing."""
    run = write_run(tmp_path / 'run')
    monkeypatch.setitem(sys.modules, 'matplotlib', None)  # `import matplotlib...` now raises ImportError
    code, err = script_error(capsys, lambda: plot.main(['curves', run]))
    assert_one_line_error(code, err, 'pip install matplotlib')
    code, err = script_error(capsys, lambda: plot.main(['attention', f'--init_from={tmp_path / "none.pt"}']))
    assert_one_line_error(code, err, 'pip install matplotlib')  # said before any model is loaded
    with pytest.raises(configurator.UserError, match='pip install matplotlib'):
        plot.plot_confusion(np.eye(2), ['a', 'b'], str(tmp_path / 'confusion.png'))
    assert plot.try_plot_curves(run) is None
    assert capsys.readouterr().err == ''
    assert not os.path.exists(os.path.join(run, 'curves.png'))


def test_try_plot_curves_never_raises(tmp_path, capsys):
    """A failing redraw during training is a warning, not an exception."""
    assert plot.try_plot_curves(str(tmp_path / 'nothing')) is None
    assert 'warning: could not draw' in capsys.readouterr().err


def test_train_redraws_curves(char_dataset, tmp_path, monkeypatch):
    """train.py leaves out_dir/curves.png behind when matplotlib is installed."""
    pytest.importorskip('matplotlib')
    import signal
    root, name, _ = char_dataset
    out_dir = tmp_path / 'run'
    monkeypatch.setattr(sys, 'argv', ['train.py', '--n_layer=1', '--n_head=2', '--n_embd=16', '--block_size=16',
                                      '--batch_size=4', '--dtype=float32', '--device=cpu', '--max_iters=4',
                                      '--eval_interval=2', '--eval_iters=1', '--log_interval=1', '--warmup_iters=1',
                                      f'--data_root={root}', f'--dataset={name}', f'--out_dir={out_dir}'])
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        importlib.reload(importlib.import_module('train')).main()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert_png(str(out_dir / 'curves.png'))


# -----------------------------------------------------------------------------
# attention maps

@pytest.mark.parametrize('causal', [True, False])
def test_attention_path_matches_sdpa(causal):
    """The explicit path that keeps the weights gives the hidden states of the SDPA path, with and without padding
    masks and with a BERT-style layout; the weights are a softmax over exactly the keys each query may see."""
    torch.manual_seed(0)
    config = tiny_model_config(causal=causal, **({} if causal else dict(norm_position='post', embedding_norm=True,
                                                                        type_vocab_size=2)))
    model = Transformer(config).eval()
    idx = torch.randint(0, 64, (3, 12))
    real = torch.ones(3, 12, dtype=torch.long)
    real[1, 8:] = 0
    real[2, 3:] = 0
    token_types = None if causal else (torch.arange(12) >= 6).long().expand(3, 12)
    for attn_mask in (None, real):
        with torch.no_grad():
            fast = model.hidden_states(idx, attn_mask, token_type_ids=token_types)
            kept = []
            explicit = model.hidden_states(idx, attn_mask, token_type_ids=token_types, attention_weights=kept)
        torch.testing.assert_close(explicit, fast, atol=1e-5, rtol=1e-5)
        assert len(kept) == config.n_layer and kept[0].shape == (3, config.n_head, 12, 12)
        weights = model.attention_maps(idx, attn_mask, token_type_ids=token_types)
        assert weights.shape == (config.n_layer, 3, config.n_head, 12, 12)
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
        allowed = torch.ones(12, 12, dtype=torch.bool)
        if causal:
            allowed = torch.tril(allowed)
            assert (weights[..., ~allowed] == 0).all()  # no query sees a later key
        if attn_mask is not None:
            assert (weights[:, 2, :, :3, 3:] == 0).all()  # the 3 real queries of row 2 never see its padding
    with torch.no_grad():  # nothing kept in the model: the fast path again
        assert not any(hasattr(b.attn, 'weights') for b in model.transformer.h)
        torch.testing.assert_close(model.hidden_states(idx, real), model.hidden_states(idx, real, attention_weights=[]),
                                   atol=1e-5, rtol=1e-5)
    if causal:  # with the KV cache, as generation runs it: one new query over the cached keys, the same masks
        cache = KVCache(config, 3, 'cpu', torch.float32)
        with torch.no_grad():
            full = model.hidden_states(idx)
            model.hidden_states(idx[:, :5], kv_cache=cache, attention_weights=[])
            kept = []
            step = model.hidden_states(idx[:, 5:6], kv_cache=cache, attention_weights=kept)
        torch.testing.assert_close(step[:, 0], full[:, 5], atol=1e-5, rtol=1e-5)
        assert kept[0].shape == (3, config.n_head, 1, 6)  # the new query over its 6 positions


def test_attention_command(tmp_path, capsys):
    """plot.py attention on a causal and an encoder checkpoint: a PNG; a text longer than block_size is cut with
    a warning; a checkpoint without a tokenizer, or not a checkpoint at all, is a one-line error."""
    tiny_checkpoint(tmp_path / 'gpt.pt')
    tiny_checkpoint(tmp_path / 'bert.pt', causal=False)
    plot.main(['attention', f'--init_from={tmp_path / "gpt.pt"}', '--text=The government said.', '--device=cpu',
               f'--output={tmp_path / "gpt.png"}'])
    out = capsys.readouterr()
    assert 'warning: the text is 20 tokens' in out.err and 'drawing the first 16' in out.err
    assert f'wrote {tmp_path / "gpt.png"}' in out.out
    assert_png(str(tmp_path / 'gpt.png'))
    model = tiny_checkpoint(tmp_path / 'bert.pt', causal=False)
    tokenizer = get_tokenizer('char', char_meta())
    weights, tokens = plot.attention_for_text(model, tokenizer, char_meta(True)['special_tokens'], 'a cat')
    assert tokens == ['[CLS]', 'a', ' ', 'c', 'a', 't', '[SEP]'] and weights.shape == (2, 2, 7, 7)
    assert (weights > 0).all()  # bidirectional: every token sees every token
    plot.main(['attention', f'--init_from={tmp_path / "bert.pt"}', '--text=a cat', '--device=cpu',
               f'--output={tmp_path / "bert.png"}'])
    assert_png(str(tmp_path / 'bert.png'))
    checkpoints.save_checkpoint(str(tmp_path / 'bare.pt'), {'model': model.state_dict(),
                                                       'model_args': config_dict(model.config)})
    code, err = script_error(capsys, lambda: plot.main(['attention', f'--init_from={tmp_path / "bare.pt"}', '--device=cpu']))
    assert_one_line_error(code, err, 'no tokenizer')
    (tmp_path / 'notes.pt').write_text('not a checkpoint')
    code, err = script_error(capsys, lambda: plot.main(['attention', f'--init_from={tmp_path / "notes.pt"}', '--device=cpu']))
    assert_one_line_error(code, err, 'cannot be read')
    code, err = script_error(capsys, lambda: plot.main(['attention', f'--init_from={tmp_path / "gpt.pt"}', '--text=',
                                                        '--device=cpu']))
    assert_one_line_error(code, err, '--text is empty')


# -----------------------------------------------------------------------------
# feature extraction

def run_features(monkeypatch, *args):
    features = importlib.reload(importlib.import_module('features'))
    monkeypatch.setattr(sys, 'argv', ['features.py', *map(str, args)])
    features.main()
    return features


@pytest.mark.parametrize('causal', [True, False])
def test_features(tmp_path, monkeypatch, capsys, causal):
    """One pooled row a text in input order, the index matching the input file, per-token states with offsets, all
    equal to the model's hidden states of each text alone (padding changes nothing); long texts cut with a warning."""
    model = tiny_checkpoint(tmp_path / 'model.pt', causal=causal)
    lines = ['the cat sat.', '', 'a dog', "it's a very long sentence, longer than the block.", 'GM']
    (tmp_path / 'texts.txt').write_text('\n'.join(lines) + '\n')
    output = tmp_path / 'out' / 'feats.npy'
    run_features(monkeypatch, f'--init_from={tmp_path / "model.pt"}', f'--input={tmp_path / "texts.txt"}',
                 f'--output={output}', '--per_token=True', '--batch_size=2', '--device=cpu')
    err = capsys.readouterr().err
    assert 'warning: 1 of 4 texts are longer' in err and '(line 4)' in err
    pooled = np.load(output)
    index = [json.loads(line) for line in open(tmp_path / 'out' / 'feats.index.jsonl')]
    assert pooled.shape == (4, 32) and pooled.dtype == np.float32
    assert [r['line'] for r in index] == [1, 3, 4, 5]
    assert [r['text'] for r in index] == [lines[0], lines[2], lines[3], lines[4]]
    assert [r['truncated'] for r in index] == [False, False, True, False]
    extra = 0 if causal else 2  # [CLS] and [SEP]
    assert [r['n_tokens'] for r in index] == [12 + extra, 5 + extra, 16, 2 + extra]
    tokens, offsets = np.load(tmp_path / 'out' / 'feats.tokens.npy'), np.load(tmp_path / 'out' / 'feats.offsets.npy')
    assert list(offsets) == [0, *np.cumsum([r['n_tokens'] for r in index])] and tokens.shape == (offsets[-1], 32)
    tokenizer, special = get_tokenizer('char', char_meta()), char_meta(True)['special_tokens']
    for i, r in enumerate(index):
        ids = tokenizer.encode(r['text'])
        ids = ids[:16] if causal else [special['cls'], *ids[:14], special['sep']]
        with torch.no_grad():
            alone = model.hidden_states(torch.tensor([ids]))[0].numpy()  # (T, C), no padding
        np.testing.assert_allclose(tokens[offsets[i]:offsets[i + 1]], alone, atol=1e-5)
        np.testing.assert_allclose(pooled[i], alone[-1] if causal else alone[0], atol=1e-5)
    # mean pooling, and a .jsonl input
    (tmp_path / 'texts.jsonl').write_text(''.join(json.dumps({'body': t}) + '\n' for t in lines if t))
    run_features(monkeypatch, f'--init_from={tmp_path / "model.pt"}', f'--input={tmp_path / "texts.jsonl"}',
                 '--text_field=body', f'--output={tmp_path / "mean.npy"}', '--pooling=mean', '--device=cpu')
    mean = np.load(tmp_path / 'mean.npy')
    np.testing.assert_allclose(mean, [tokens[offsets[i]:offsets[i + 1]].mean(0) for i in range(4)], atol=1e-5)
    assert not os.path.exists(tmp_path / 'mean.tokens.npy')
    assert not [f for f in os.listdir(tmp_path / 'out') if '.tmp-' in f]


def test_features_bad_input(tmp_path, monkeypatch, capsys):
    """An existing output is never overwritten without --overwrite; bad inputs are one-line errors."""
    tiny_checkpoint(tmp_path / 'model.pt')
    (tmp_path / 'texts.txt').write_text('a cat\n')
    (tmp_path / 'feats.npy').write_bytes(b'mine')
    base = [f'--init_from={tmp_path / "model.pt"}', '--device=cpu']
    cases = [
        ([f'--input={tmp_path / "texts.txt"}', f'--output={tmp_path / "feats.npy"}'], 'feats.npy exists'),
        ([f'--input={tmp_path / "nope.txt"}', f'--output={tmp_path / "f.npy"}'], 'not found'),
        ([f'--input={tmp_path / "texts.txt"}', f'--output={tmp_path / "f.csv"}'], 'must name a .npy file'),
        ([f'--input={tmp_path / "texts.txt"}', f'--output={tmp_path / "f.npy"}', '--pooling=max'], 'pooling'),
    ]
    (tmp_path / 'texts.jsonl').write_text('{"body": "a"}\n')
    cases.append(([f'--input={tmp_path / "texts.jsonl"}', f'--output={tmp_path / "f.npy"}'], "text field 'text'"))
    (tmp_path / 'odd.txt').write_text('a cat\n\u00e9t\u00e9\n')
    cases.append(([f'--input={tmp_path / "odd.txt"}', f'--output={tmp_path / "f.npy"}'], 'line 2'))
    features = importlib.import_module('features')
    for args, needle in cases:
        monkeypatch.setattr(sys, 'argv', ['features.py', *base, *args])
        features = importlib.reload(features)
        code, err = script_error(capsys, features.main)
        assert_one_line_error(code, err, needle)
    assert (tmp_path / 'feats.npy').read_bytes() == b'mine'
    assert not os.path.exists(tmp_path / 'f.npy')
    run_features(monkeypatch, *base, f'--input={tmp_path / "texts.txt"}', f'--output={tmp_path / "feats.npy"}',
                 '--overwrite=True')
    assert np.load(tmp_path / 'feats.npy').shape == (1, 32)


# -----------------------------------------------------------------------------
# progress

def test_progress_plain_lines(capsys, monkeypatch):
    """Off a terminal: a line at most every ~5 s and a last one, in MB for bytes and in items otherwise."""
    clock = iter([0.0, 1.0, 6.0, 7.0])
    monkeypatch.setattr(metrics_module.time, 'time', lambda: next(clock))
    update = metrics_module.progress(100, 'extracting features', unit='texts')
    update(10)  # at 1 s: quiet
    update(40)  # at 6 s: a line
    update(None)  # the last line
    lines = capsys.readouterr().err.splitlines()
    assert lines == ['extracting features: 50/100 texts, 8.3 texts/s, ETA 6 s', 'extracting features: 50/100 texts, 7.1 texts/s']
    clock = iter([0.0, 2.0, 3.0])
    monkeypatch.setattr(metrics_module.time, 'time', lambda: next(clock))
    update = metrics_module.progress(4e6, 'tokenizing')
    update(2e6)  # at 2 s: quiet
    update(None)
    assert capsys.readouterr().err == 'tokenizing: 2.0/4.0 MB, 0.7 MB/s\n'
