"""
The fault suite, outputs (README "Reliability"): what a script writes never replaces what the user had without
--overwrite=True, never the files the same command reads, and never a run; what it prints lines up with what it read;
a local path is never taken for a hub name. CPU, tiny checkpoints written here (no training), a few seconds:

    python -m pytest -q tests/test_trust_outputs.py
"""
import hashlib
import importlib
import os
import sys

import pytest
import torch

import checkpoints
import hf
from configurator import UserError
from conftest import tiny_model_config
from model import Transformer, config_dict
from test_train import assert_one_line_error


def tiny_run(run_dir, meta, **extra):
    """A run directory as train.py leaves it, without training: best.pt, last.pt (a tiny model) and metrics.jsonl."""
    os.makedirs(run_dir, exist_ok=True)
    torch.manual_seed(0)
    model = Transformer(tiny_model_config(vocab_size=meta['vocab_size'] + 4, block_size=32))
    checkpoint = {'model': model.state_dict(), 'model_args': config_dict(model.config), 'meta': meta,
                  'config': {'batch_size': 8, 'block_size': 32, 'gradient_accumulation_steps': 1},
                  'iter_num': 20, 'best_val_loss': 3.0, **extra}
    for name in ('best.pt', 'last.pt'):
        checkpoints.save_checkpoint(os.path.join(run_dir, name), checkpoint)
    with open(os.path.join(run_dir, 'metrics.jsonl'), 'w') as f:
        f.write('{"iter": 0, "val_loss": 4.0}\n{"iter": 20, "train_loss": 3.0}\n')
    return str(run_dir)


def main_of(monkeypatch, script, *args):
    """script's main run in this process with fresh globals, for a call that must succeed (an error raises)."""
    monkeypatch.setattr(sys, 'argv', [f'{script}.py', *map(str, args)])
    importlib.reload(importlib.import_module(script)).main()


def digests(directory):
    """{relative path: sha256} of every file under directory: what must survive a refused command unchanged."""
    found = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(root, name)
            with open(path, 'rb') as f:
                found[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
    return found


# -----------------------------------------------------------------------------
# export.py --overwrite=True replaces an earlier export only

def test_export_overwrite_never_deletes_a_run(char_dataset, script_main, tmp_path, monkeypatch):
    """--overwrite=True --to= the source run, a parent of runs, another run, a directory that is no export, or a
    path under a file: one line, exit 2, every file kept. An earlier export is still replaced."""
    _, _, meta = char_dataset
    runs = tmp_path / 'runs'
    source, other = tiny_run(runs / 'a', meta), tiny_run(runs / 'b', meta)
    mine = tmp_path / 'mine'
    mine.mkdir()
    (mine / 'notes.txt').write_text('keep me')
    (tmp_path / 'plain.txt').write_text('a file')
    before = digests(tmp_path)
    refusals = [(source, 'holds the checkpoint'), (runs, 'holds the checkpoint'), (other, 'holds a run'),
                (mine, 'not an earlier export'), (tmp_path / 'plain.txt' / 'sub', 'is under'),
                (tmp_path / 'plain.txt', 'is a file')]
    for to, needle in refusals:
        code, err = script_main('export', f'--out_dir={source}', f'--to={to}', '--overwrite=True')
        assert_one_line_error(code, err, needle)
        assert digests(tmp_path) == before, to
    # an earlier export is replaced, whatever else it holds
    target = tmp_path / 'hf'
    main_of(monkeypatch, 'export', f'--out_dir={source}', f'--to={target}')
    (target / 'extra.txt').write_text('from before')
    main_of(monkeypatch, 'export', f'--out_dir={other}', f'--to={target}', '--overwrite=True')
    assert not (target / 'extra.txt').exists() and (target / hf.EXPORT_META).exists()
    code, err = script_main('export', f'--out_dir={source}', f'--to={tmp_path / "plain.txt" / "sub"}')
    assert_one_line_error(code, err, 'is under', 'plain.txt')


# -----------------------------------------------------------------------------
# local paths win over hub names

def test_a_local_path_named_gpt2_is_a_path(char_dataset, tmp_path, monkeypatch):
    """gpt2_runs/ (a run directory) and gpt2_small_char.pt load from disk, never from the hub; 'gpt2' still names
    the hub model when no such path exists."""
    _, _, meta = char_dataset
    monkeypatch.chdir(tmp_path)
    tiny_run('gpt2_runs', meta)
    os.replace('gpt2_runs/last.pt', 'gpt2_small_char.pt')

    def no_download(*args, **kwargs):
        raise AssertionError('a download was tried')
    monkeypatch.setattr(hf, 'download', no_download)
    for path in ('gpt2_runs', 'gpt2_small_char.pt', os.path.join('.', 'gpt2_runs')):
        assert not hf.is_hf_name(path), path
        model, loaded_meta, checkpoint = checkpoints.load(path)
        assert loaded_meta['tokenizer'] == 'char' and checkpoint['iter_num'] == 20
    assert hf.is_hf_name('gpt2') and hf.is_hf_name('gpt2-medium') and hf.is_hf_name('hf:org/name')


# -----------------------------------------------------------------------------
# bench.py names keys it takes

class Note:
    """A harmless Python object in a checkpoint: torch.load(weights_only=True) refuses it all the same."""

def test_bench_refusal_names_a_key_bench_takes(char_dataset, tmp_path, monkeypatch):
    """bench.py refuses a checkpoint that holds more than tensors with a hint naming --trust_checkpoint, which
    bench.py takes (and which then loads it)."""
    import bench
    from configurator import config_defaults
    from runtime import setup_runtime
    _, _, meta = char_dataset
    run_dir = tiny_run(tmp_path / 'run', meta, notes=Note())  # a Python object: refused
    monkeypatch.setattr(bench, 'checkpoint', run_dir)
    monkeypatch.setattr(bench, 'prompt_tokens', 8)
    monkeypatch.setattr(bench, 'new_tokens', 8)
    runtime = setup_runtime('cpu', 'float32')
    with pytest.raises(UserError) as refused:
        bench.load_generation_model(runtime)
    hint = str(refused.value)
    assert '--trust_checkpoint=True' in hint and 'trust_checkpoint' in config_defaults(vars(bench))
    monkeypatch.setattr(bench, 'trust_checkpoint', True)
    model, source = bench.load_generation_model(runtime)
    assert source.endswith('best.pt')


# -----------------------------------------------------------------------------
# sample.py draws only ids its tokenizer decodes

def padding_loving_run(run_dir, meta):
    """A run whose model puts almost all its probability on the padding ids of its embedding table (past the
    tokenizer's vocab_size) and none on end-of-text: the hidden state is a constant (ln_f's gain 0, bias e_0) and
    the tied head reads column 0 of wte."""
    tiny_run(run_dir, meta)
    path = os.path.join(run_dir, 'best.pt')
    checkpoint = checkpoints.read(path)
    state, n = checkpoint['model'], meta['vocab_size']
    state['transformer.ln_f.weight'].zero_()
    state['transformer.ln_f.bias'].zero_()
    state['transformer.ln_f.bias'][0] = 1.0
    state['transformer.wte.weight'][:, 0] = 0.0
    state['transformer.wte.weight'][n:, 0] = 20.0  # the padding ids
    state['transformer.wte.weight'][meta['eot_id'], 0] = -20.0  # never end the document early
    checkpoints.save_checkpoint(path, checkpoint)
    return str(run_dir)


@pytest.mark.parametrize('temperature', ['0.8', '0'])
def test_sample_never_draws_padding_ids(char_dataset, tmp_path, monkeypatch, temperature):
    """A 60-token request gives 60 characters (a char tokenizer: one id, one character), sampled or greedy, even
    from a model that prefers the padding ids."""
    _, _, meta = char_dataset
    run_dir = padding_loving_run(tmp_path / 'run', meta)
    output = tmp_path / 'samples.txt'
    main_of(monkeypatch, 'sample', f'--out_dir={run_dir}', '--start=T', '--num_samples=2', '--max_new_tokens=60',
            f'--temperature={temperature}', '--top_k=None', '--device=cpu', '--dtype=float32', f'--output={output}')
    samples = output.read_text().removesuffix('\n').split('\n---------------\n')
    assert len(samples) == 2 and all(len(s) == 61 and s.startswith('T') for s in samples), samples


# -----------------------------------------------------------------------------
# --output never replaces what the command reads, nor an existing file without --overwrite=True

def test_sample_output_refusals(char_dataset, script_main, tmp_path, monkeypatch):
    """sample.py --output= the checkpoint it reads (best.pt), the run's metrics.jsonl or the --start=FILE: prompt:
    refused even with --overwrite=True; another existing file only without it. Nothing is changed by a refusal;
    --overwrite=True replaces the other file, atomically (no temp file left)."""
    _, _, meta = char_dataset
    run_dir = tiny_run(tmp_path / 'run', meta)
    prompt = tmp_path / 'prompt.txt'
    prompt.write_text('The ')
    (tmp_path / 'old.txt').write_text('mine')
    before = digests(tmp_path)
    common = [f'--out_dir={run_dir}', f'--start=FILE:{prompt}', '--num_samples=1', '--max_new_tokens=4', '--device=cpu']
    for output in (f'{run_dir}/best.pt', f'{run_dir}/metrics.jsonl', prompt):
        for overwrite in ('False', 'True'):
            code, err = script_main('sample', *common, f'--output={output}', f'--overwrite={overwrite}')
            assert_one_line_error(code, err, 'which this command reads')
    code, err = script_main('sample', f'--init_from={run_dir}/best.pt', *common[1:], f'--output={run_dir}/best.pt',
                            '--overwrite=True')
    assert_one_line_error(code, err, 'which this command reads')
    code, err = script_main('sample', *common, f'--output={tmp_path / "old.txt"}')
    assert_one_line_error(code, err, 'exists', '--overwrite=True')
    assert digests(tmp_path) == before
    main_of(monkeypatch, 'sample', *common, f'--output={tmp_path / "old.txt"}', '--overwrite=True')
    assert (tmp_path / 'old.txt').read_text().startswith('The ')
    assert not [name for name in os.listdir(tmp_path) if name.startswith('.tmp-')]


def test_plot_output_refusals(char_dataset, tmp_path, capsys):
    """plot.py curves RUN --output=RUN/metrics.jsonl, attention --output= its checkpoint, explain --output= its
    --explanations file: refused even with --overwrite=True; an existing PNG only without it."""
    import configurator
    import plot
    _, _, meta = char_dataset
    run_dir = tiny_run(tmp_path / 'run', meta)
    explanations = tmp_path / 'texts.explain.jsonl'
    explanations.write_text('{"words": ["a"], "label": "x", "probabilities": {"x": 1.0}, "occlusion": [0.1]}\n')
    (tmp_path / 'old.png').write_bytes(b'mine')
    before = digests(tmp_path)

    def plot_error(*argv):
        capsys.readouterr()
        with pytest.raises(SystemExit) as info:
            configurator.run_main(lambda: plot.main(list(argv)))
        return info.value.code, capsys.readouterr().err
    for overwrite in ('False', 'True'):
        for argv in (['curves', run_dir, f'--output={run_dir}/metrics.jsonl'],
                     ['attention', f'--out_dir={run_dir}', f'--output={run_dir}/best.pt', '--device=cpu'],
                     ['attention', f'--init_from={run_dir}/last.pt', f'--output={run_dir}/last.pt', '--device=cpu'],
                     ['explain', f'--explanations={explanations}', f'--output={explanations}']):
            code, err = plot_error(*argv, f'--overwrite={overwrite}')
            assert_one_line_error(code, err, 'which this command reads')
    code, err = plot_error('curves', run_dir, f'--output={tmp_path / "old.png"}')
    assert_one_line_error(code, err, 'exists', '--overwrite=True')
    assert digests(tmp_path) == before
    plot.main(['curves', run_dir, f'--output={tmp_path / "old.png"}', '--overwrite=True'])
    assert (tmp_path / 'old.png').read_bytes().startswith(b'\x89PNG')


# -----------------------------------------------------------------------------
# finetune.py --predict=FILE: lines up with its file

def classifier_run(run_dir, meta):
    """out_dir of a fine-tuned classifier as finetune.py leaves it (best.pt with task, labels and special tokens),
    its head random: the tests read the form of the predictions, not their quality."""
    from tokenizer import special_tokens
    os.makedirs(run_dir, exist_ok=True)
    torch.manual_seed(0)
    base = Transformer(tiny_model_config(vocab_size=meta['vocab_size'] + 4, block_size=32))
    model = checkpoints.for_task(base, 'sequence', 2)
    tuned = {**meta, 'task': 'classification', 'label_names': ['business', 'sport'], 'special_tokens': special_tokens(meta)}
    checkpoints.save_checkpoint(os.path.join(run_dir, 'best.pt'), {
        'model': model.state_dict(), 'model_args': config_dict(model.config), 'meta': tuned,
        'config': {'truncation': 'head', 'max_windows': 4}, 'iter_num': 4, 'epoch': 1})
    return str(run_dir)


def test_predict_file_keeps_one_line_per_input_line(char_dataset, tmp_path, monkeypatch, capsys):
    """--predict=FILE: prints one line per line of the file, numbered: LINE<TAB>label<TAB>probability, and
    LINE<TAB>(blank) for a blank line; each prediction equals that of the line given alone, which keeps its form
    (label<TAB>probability). --explain=True numbers its lines and its records the same way."""
    import json
    _, _, meta = char_dataset
    run_dir = classifier_run(tmp_path / 'run', meta)
    texts = ['the bank said shares rose', '', 'the team won the match', '   ', 'a third text']
    path = tmp_path / 'texts.txt'
    path.write_text('\n'.join(texts) + '\n')

    def predict(*args):
        capsys.readouterr()
        main_of(monkeypatch, 'finetune', f'--out_dir={run_dir}', '--device=cpu', *args)
        return capsys.readouterr().out.strip('\n').split('\n')
    printed = predict(f'--predict=FILE:{path}')
    assert len(printed) == len(texts)
    for n, (text, line) in enumerate(zip(texts, printed), 1):
        number, rest = line.split('\t', 1)
        assert int(number) == n
        if not text.strip():
            assert rest == '(blank)'
        else:
            label, prob = rest.split('\t')
            assert label in ('business', 'sport') and 0.5 <= float(prob) <= 1.0
            assert predict(f'--predict={text}') == [rest]  # the single-text form, as it was
    explained = predict(f'--predict=FILE:{path}', '--explain=True', '--explain_method=occlusion')
    assert [line.split('\t')[0] for line in explained] == [str(n) for n in range(1, len(texts) + 1)]
    # the same label, the same probability within rounding: explanations run in fp32, predictions under autocast
    for with_scores, without in zip(explained, printed):
        with_scores, without = with_scores.split('\t')[1:], without.split('\t')[1:]
        assert with_scores[0] == without[0]
        if without[0] != '(blank)':
            assert abs(float(with_scores[1]) - float(without[1])) <= 0.01
    with open(tmp_path / 'texts.explain.jsonl') as f:
        assert [json.loads(line)['line'] for line in f] == [1, 3, 5]


def test_explain_output_never_replaces_an_input(char_dataset, script_main, tmp_path):
    """--predict=FILE: --explain=True --explain_output= the texts file or the checkpoint: refused even with
    --overwrite=True, both kept."""
    _, _, meta = char_dataset
    run_dir = classifier_run(tmp_path / 'run', meta)
    path = tmp_path / 'texts.txt'
    path.write_text('the bank said shares rose\n')
    before = digests(tmp_path)
    for output in (path, f'{run_dir}/best.pt'):
        code, err = script_main('finetune', f'--out_dir={run_dir}', '--device=cpu', f'--predict=FILE:{path}',
                                '--explain=True', f'--explain_output={output}', '--overwrite=True')
        assert_one_line_error(code, err, 'which this command reads')
    assert digests(tmp_path) == before


def test_generate_vocab_limit():
    """model.generate(vocab_limit=n) draws only ids below n, greedy, sampled, top-k and top-p, cached or not."""
    torch.manual_seed(0)
    model = Transformer(tiny_model_config()).eval()
    with torch.no_grad():
        model.transformer.wte.weight[40:] += 5 * model.transformer.wte.weight[40:].sign()  # loud ids past the limit
    idx = torch.randint(0, 40, (3, 4))
    for kwargs in ({'temperature': 0}, {'temperature': 1.5, 'top_k': None}, {'top_k': 50}, {'top_p': 0.99},
                   {'temperature': 1.5, 'top_k': None, 'use_cache': False}):
        out = model.generate(idx, 24, vocab_limit=40, generator=torch.Generator().manual_seed(0), **kwargs)
        assert out.shape == (3, 28) and int(out.max()) < 40, kwargs
