"""
Seeing inside a model: word attributions of a classifier (features.explain_text, finetune.py --explain, plot.py
explain) and the input-embedding map and neighbours (plot.py embeddings). Tiny char-level models on CPU, two of
them trained in-process (~3 s each) so that one trigger word decides the label.

    python -m pytest -q tests/test_explain.py
"""
import importlib
import json
import os
import sys

import numpy as np
import pytest
import torch

import checkpoints
import configurator
from runtime import setup_runtime
import features
import finetune
import plot
import tasks
from conftest import LEARN_DTYPE, LEARN_SEED, call_script_main, reached, tiny_model_config
from model import Transformer, config_dict
from test_plot import assert_one_line_error, assert_png, char_meta, script_error, tiny_checkpoint
from tokenizer import get_tokenizer

FILLERS = ['the', 'cat', 'sat', 'on', 'mat', 'dog', 'ran', 'far', 'big', 'red']  # all without a 'z' or a 'p'
TRIGGER = 'zap'
NAMES = ['alarm', 'calm']  # 'alarm' when the trigger is in the text
TEXT = 'the big zap on red'  # the trigger is word 2

# Learned-quality thresholds, well below what the tests reach. Measured 2026-12-01 (2 cores), seeds 0 / 1 / 2,
# training in float32 and in bfloat16 (SCRATCHLM_TEST_DTYPE); the attributions are computed in float32 either way:
MARGIN_OCCLUSION = 3.0  # the trigger's occlusion score (nats): causal fp32 6.6 / 7.1 / 7.1, bf16 6.6 / 7.1 / 6.1;
#                         bidirectional fp32 6.7 / 6.8 / 7.0, bf16 6.8 / 7.0 / 6.7
MARGIN_NEAR_ZERO = 0.05  # the largest |occlusion score| of a filler word: at most 7e-5 under every seed and dtype
MARGIN_IG_RATIO = 1.5  # the trigger's integrated gradients over the largest |score| of another word: causal fp32
#                        34 / 44 / 2.3, bf16 100 / 61 / 55; bidirectional fp32 68 / 3.7 / 4.0, bf16 59 / 10 / 400
MARGIN_COMPLETENESS = 0.02  # |completeness gap| (nats), which the adaptive rule aims to keep under IG_TOLERANCE =
#                             0.01: at most 0.0024 under every seed and dtype (0.0010 / 0.0012 at seed 0, fp32)


def trigger_texts(n, rng):
    """n examples of 2-5 filler words; in half of them one word is the trigger (then 'alarm', else 'calm'). The
    trigger replaces a word rather than joining them, so a text's length says nothing of its label."""
    examples = []
    for _ in range(n):
        words = list(rng.choice(FILLERS, size=rng.integers(2, 6)))
        alarm = rng.random() < 0.5
        if alarm:
            words[rng.integers(len(words))] = TRIGGER
        examples.append({'text': ' '.join(words), 'label': NAMES[0] if alarm else NAMES[1]})
    return examples


def train_trigger_classifier(causal, seed=LEARN_SEED, steps=200):
    """(model, tokenizer, special): a tiny char-level classifier (2 layers, 32 wide, block 32) trained on
    trigger_texts, encoded by tasks.encode as fine-tuning encodes them. A tenth of the examples are blanks, every
    text token the [PAD] token, labelled 'calm': integrated gradients start from a blank text, and a model that
    never saw one may read it as 'alarm', which would leave nothing between baseline and text to attribute."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    meta = char_meta(special=True)
    tokenizer, special = get_tokenizer('char', meta), meta['special_tokens']
    model = Transformer(tiny_model_config(causal=causal, block_size=32, task_head='sequence', num_labels=2))
    examples, _ = tasks.encode('classification', trigger_texts(2000, rng), tokenizer, special, NAMES, 32, causal)
    for ex in examples[:len(examples) // 10]:
        ex['ids'] = ex['ids'].copy()
        ex['ids'][slice(0, -1) if causal else slice(1, -1)] = special['pad']
        ex['labels'] = NAMES.index('calm')
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(steps):
        batch = finetune.collate([examples[i] for i in rng.integers(len(examples), size=32)], special['pad'], 'cpu',
                                 per_token=False)
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=LEARN_DTYPE == 'bfloat16'):
            _, loss = model(**batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.float().eval(), tokenizer, special


@pytest.fixture(scope='module')
def classifiers():
    """{causal: (model, tokenizer, special)}, a causal and a bidirectional trigger classifier."""
    return {causal: train_trigger_classifier(causal) for causal in (True, False)}


def save_classifier(path, model, truncation='head', task='classification'):
    meta = {**char_meta(special=True), 'task': task, 'label_names': NAMES}
    checkpoints.save_checkpoint(str(path), {'model': model.state_dict(), 'model_args': config_dict(model.config),
                                       'config': {'truncation': truncation, 'max_windows': 4}, 'meta': meta})


# -----------------------------------------------------------------------------
# attributions

@pytest.mark.learned
@pytest.mark.parametrize('causal', [True, False])
def test_the_trigger_word_gets_the_top_attribution(classifiers, causal):
    """Occlusion and integrated gradients both put the trigger first; removing a filler word changes nothing;
    integrated gradients sum to the log-probability gained over the blank baseline (completeness)."""
    model, tokenizer, special = classifiers[causal]
    record = features.explain_text(model, tokenizer, special, NAMES, TEXT)
    assert record['label'] == 'alarm' and record['words'] == TEXT.split() and record['n_windows'] == 1
    kind = 'causal' if causal else 'bidirectional'
    occlusion, ig = np.array(record['occlusion']), np.array(record['integrated_gradients'])
    fillers = np.delete(np.arange(len(ig)), 2)
    assert occlusion.argmax() == 2 and ig.argmax() == 2, record
    assert reached(f'explain_occlusion_{kind}', occlusion[2], MARGIN_OCCLUSION) > MARGIN_OCCLUSION
    assert reached(f'explain_filler_{kind}', np.abs(occlusion[fillers]).max(), MARGIN_NEAR_ZERO) < MARGIN_NEAR_ZERO
    assert reached(f'explain_ig_ratio_{kind}', ig[2] / np.abs(ig[fillers]).max(), MARGIN_IG_RATIO) > MARGIN_IG_RATIO
    gap = reached(f'explain_completeness_{kind}', abs(record['completeness_gap']), MARGIN_COMPLETENESS)
    assert gap < MARGIN_COMPLETENESS
    assert sum(ig) == pytest.approx(record['logprob'] - record['baseline_logprob'], abs=MARGIN_COMPLETENESS)
    assert record['baseline_logprob'] < -1  # the blank reads 'calm': there is something to attribute
    only = features.explain_text(model, tokenizer, special, NAMES, TEXT, methods=('occlusion',))
    assert only['occlusion'] == record['occlusion'] and 'integrated_gradients' not in only


@pytest.mark.learned
@pytest.mark.parametrize('truncation', ['windows', 'head'])
def test_long_texts_are_read_and_explained_as_finetune_reads_them(classifiers, truncation):
    """A text longer than the block: its windows are finetune.py's, its probabilities those of finetune's own
    prediction path (text_logprobs); the trigger in the second window still scores first, and a word that head
    truncation cuts off has no score."""
    model, tokenizer, special = classifiers[True]
    words = 'the cat sat on the mat far far red dog zap ran big red dog on the mat cat'.split()
    record = features.explain_text(model, tokenizer, special, NAMES, ' '.join(words), truncation, 4, label='alarm')
    encoded, _ = tasks.encode('classification', [{'text': ' '.join(words)}], tokenizer, special, NAMES, 32, True,
                              truncation, max_windows=4)
    runtime = setup_runtime('cpu', 'float32')
    logits, _ = finetune.forward_batches(model, tasks.TASKS['classification'], encoded, runtime, special['pad'], 16)
    expected = np.exp(tasks.text_logprobs(encoded, logits)[0])
    np.testing.assert_allclose(list(record['probabilities'].values()), expected / expected.sum(), atol=1e-5)
    windows = features.classifier_windows(model, tokenizer, special, words, truncation, 4)
    assert [ids for ids, _ in windows] == [ex['ids'].tolist() for ex in encoded]
    occlusion, ig = record['occlusion'], record['integrated_gradients']
    if truncation == 'windows':
        assert record['n_windows'] == len(encoded) == 3
        assert np.argmax(occlusion) == np.argmax(ig) == words.index(TRIGGER), record
        assert abs(record['completeness_gap']) < MARGIN_COMPLETENESS
    else:  # 31 characters, 'the cat sat on the mat far far ': the last is the space of ' red', so red is read in part
        seen = [s is not None for s in occlusion]
        assert seen == [True] * 9 + [False] * (len(words) - 9) and [s is not None for s in ig] == seen


def test_words_encode_as_the_whole_text_does():
    """Word-by-word encoding (' word' after the first) gives the ids of the text encoded whole, so every token
    belongs to one word."""
    text = "Shares in BT rose 5.2% on Monday, the firm's best day since 2001 (£3.1bn) - analysts said."
    for tokenizer in (get_tokenizer('gpt2'), get_tokenizer('char', {'chars': sorted(set(text))})):
        ids, owner = features.word_tokens(tokenizer, text.split())
        assert ids == tokenizer.encode(text)
        assert sorted(set(owner)) == list(range(len(text.split()))) and owner == sorted(owner)


def test_token_embeddings_replace_the_lookup(tiny_config):
    """Inside token_embeddings the model reads the embeddings given, and after it the ids again."""
    torch.manual_seed(0)
    model = Transformer(tiny_config(task_head='sequence', num_labels=2)).eval()
    idx = torch.randint(0, 64, (1, 6))
    with torch.no_grad():
        plain, _ = model(idx)
        with features.token_embeddings(model, model.transformer.wte(torch.zeros_like(idx))):
            replaced, _ = model(idx)
        zeros, _ = model(torch.zeros_like(idx))
        again, _ = model(idx)
    torch.testing.assert_close(replaced, zeros)
    torch.testing.assert_close(again, plain)


# -----------------------------------------------------------------------------
# finetune.py --explain and plot.py explain

def finetune_main(monkeypatch, *args):
    module = importlib.reload(finetune)
    monkeypatch.setattr(sys, 'argv', ['finetune.py', *map(str, args)])
    module.main()


def test_finetune_explain(classifiers, tmp_path, monkeypatch, capsys):
    """--predict=TEXT --explain prints a table a word; --predict=FILE: --explain writes a JSON line a text
    atomically and keeps an existing one; plot.py explain draws both the file and a --text."""
    model, _, _ = classifiers[False]
    save_classifier(tmp_path / 'run' / 'best.pt', model)
    finetune_main(monkeypatch, f'--out_dir={tmp_path / "run"}', f'--predict={TEXT}', '--explain=True', '--device=cpu',
                  f'--explain_output={tmp_path / "one.jsonl"}')
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith('alarm\t') and lines[1] == 'word\tocclusion\tintegrated_gradients'
    assert [line.split('\t')[0] for line in lines[2:7]] == TEXT.split() and 'completeness gap' in lines[7]
    (record,) = [json.loads(line) for line in (tmp_path / 'one.jsonl').read_text().splitlines()]
    assert record['words'] == TEXT.split() and len(record['integrated_gradients']) == 5
    (tmp_path / 'texts.txt').write_text(f'{TEXT}\nthe cat sat\n')
    finetune_main(monkeypatch, f'--out_dir={tmp_path / "run"}', f'--predict=FILE:{tmp_path / "texts.txt"}',
                  '--explain=True', '--explain_method=occlusion', '--device=cpu')
    out = capsys.readouterr()
    assert [line.split('\t')[:2] for line in out.out.split('\n') if line] == [['1', 'alarm'], ['2', 'calm']]
    records = [json.loads(line) for line in (tmp_path / 'texts.explain.jsonl').read_text().splitlines()]
    assert [r['text'] for r in records] == [TEXT, 'the cat sat'] and [r['label'] for r in records] == NAMES
    assert set(records[0]) == {'line', 'text', 'label', 'probabilities', 'words', 'n_windows', 'logprob', 'occlusion'}
    assert not [f for f in os.listdir(tmp_path) if '.tmp-' in f]
    code, err = call_script_main(monkeypatch, capsys, 'finetune', f'--out_dir={tmp_path / "run"}', '--explain=True',
                                 f'--predict=FILE:{tmp_path / "texts.txt"}')
    assert_one_line_error(code, err, 'texts.explain.jsonl exists', '--overwrite=True')
    plot.main(['explain', f'--explanations={tmp_path / "texts.explain.jsonl"}'])
    assert_png(str(tmp_path / 'texts.explain.png'))
    plot.main(['explain', f'--out_dir={tmp_path / "run"}', f'--text={TEXT}', '--device=cpu', '--ig_steps=8'])
    assert_png(str(tmp_path / 'run' / 'explain.png'))
    assert capsys.readouterr().out.strip().endswith('explain.png')


def test_explain_bad_input_is_one_line(classifiers, tmp_path, monkeypatch, capsys):
    model, _, _ = classifiers[True]
    save_classifier(tmp_path / 'sft' / 'best.pt', model, task='sft')
    tiny_checkpoint(tmp_path / 'pretrained.pt')
    (tmp_path / 'notes.jsonl').write_text('{"text": "no scores here"}\n')
    for script, args, needles in [
        ('finetune', [f'--out_dir={tmp_path / "sft"}', '--predict=hello', '--explain=True'], ["task='sft'"]),
        ('finetune', [f'--out_dir={tmp_path / "sft"}', '--explain=True'], ['--explain=True explains predictions']),
        ('finetune', [f'--out_dir={tmp_path / "sft"}', '--predict=hi', '--explain=True', '--explain_method=shap'],
         ["explain_method='shap'", 'occlusion']),
        ('finetune', [f'--out_dir={tmp_path / "sft"}', '--predict=hi', '--explain=True', '--ig_steps=0'],
         ['ig_steps=0', 'at least 1'])]:
        code, err = call_script_main(monkeypatch, capsys, script, *args)
        assert_one_line_error(code, err, *needles)
    for args, needles in [([f'--init_from={tmp_path / "pretrained.pt"}'], ['not a fine-tuned classifier']),
                          ([f'--explanations={tmp_path / "notes.jsonl"}'], ['line 1 is not a finetune.py --explain']),
                          ([f'--explanations={tmp_path / "none.jsonl"}'], ['not found'])]:
        code, err = script_error(capsys, lambda: plot.main(['explain', *args, '--device=cpu']))
        assert_one_line_error(code, err, *needles)
    with pytest.raises(configurator.UserError, match='no task head'):
        features.explain_text(Transformer(tiny_model_config()), *classifiers[True][1:], NAMES, TEXT)


# -----------------------------------------------------------------------------
# plot.py embeddings

def test_nearest_neighbour_of_a_copied_embedding(tmp_path, capsys):
    """A token whose input embedding is set equal to another's is that one's nearest neighbour, cosine 1."""
    model = tiny_checkpoint(tmp_path / 'model.pt')
    tokenizer = get_tokenizer('char', char_meta())
    a, b = tokenizer.encode('ab')
    with torch.no_grad():
        model.transformer.wte.weight[b] = model.transformer.wte.weight[a]
    checkpoints.save_checkpoint(str(tmp_path / 'copied.pt'), {'model': model.state_dict(), 'meta': char_meta(),
                                                         'model_args': config_dict(model.config)})
    embedding = model.transformer.wte.weight.detach().numpy()
    candidates = features.ordinary_ids(tokenizer, None, len(embedding))
    assert len(candidates) == len(char_meta()['chars'])  # not eot, not the padding rows of the table
    near = features.nearest_tokens(embedding, tokenizer, embedding[a], candidates, k=3, exclude=[a])
    assert near[0][0] == 'b' and near[0][1] == pytest.approx(1.0) and near[1][1] < 0.999
    plot.main(['embeddings', f'--init_from={tmp_path / "copied.pt"}', '--neighbours=a, cat', '--device=cpu',
               f'--output={tmp_path / "words.png"}'])
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert lines[0].startswith('a: b 1.00, ') and lines[1].startswith('cat (3 tokens, c|a|t: their mean): ')
    assert 'token-id order' in out.err  # no training data to count the words
    assert_png(str(tmp_path / 'words.png'))


def test_embedding_maps(tmp_path, capsys, char_dataset):
    """The map of the most frequent words (counted in the training split), of given words, and of texts' pooled
    features coloured by their label; PCA by numpy keeps the largest variance on the first axis."""
    data_root, name, meta = char_dataset
    torch.manual_seed(0)
    model = Transformer(tiny_model_config(vocab_size=meta['vocab_size'] + 3))
    checkpoints.save_checkpoint(str(tmp_path / 'run' / 'best.pt'), {
        'model': model.state_dict(), 'model_args': config_dict(model.config), 'meta': meta,
        'config': {'data_root': data_root, 'dataset': name}})
    tokenizer = get_tokenizer('char', meta)
    counts = plot.token_counts(os.path.join(data_root, name), meta)
    chosen = features.frequent_words(tokenizer, list(range(meta['vocab_size'])), 5, counts)
    assert [counts[i] for _, i in chosen] == sorted(counts[[i for _, i in chosen]], reverse=True)
    assert all(word.isalpha() for word, _ in chosen)
    plot.main(['embeddings', f'--out_dir={tmp_path / "run"}', '--n_words=20', '--device=cpu'])
    assert_png(str(tmp_path / 'run' / 'embeddings.png'))
    plot.main(['embeddings', f'--out_dir={tmp_path / "run"}', '--words=council,bank,match', '--device=cpu',
               f'--output={tmp_path / "given.png"}'])
    assert_png(str(tmp_path / 'given.png'))
    rows = [{'text': f'The bank said {i} jobs would go.', 'label': 'business'} for i in range(4)] + [
        {'text': f'The match ended {i}-0.', 'label': 'sport'} for i in range(4)]
    (tmp_path / 'texts.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    plot.main(['embeddings', f'--out_dir={tmp_path / "run"}', f'--texts={tmp_path / "texts.jsonl"}', '--device=cpu'])
    assert_png(str(tmp_path / 'run' / 'texts_map.png'))
    assert features.read_labels(str(tmp_path / 'texts.jsonl'), range(1, 9)) == ['business'] * 4 + ['sport'] * 4
    X = np.random.default_rng(0).normal(size=(50, 6)) * [5, 1, 1, 1, 1, 0.1]
    points, axes = features.project_2d(X)
    assert points.shape == (50, 2) and points[:, 0].var() > 10 * points[:, 1].var() and '%' in axes[0]


def test_embedding_map_bad_input_is_one_line(tmp_path, capsys, monkeypatch, char_dataset):
    tiny_checkpoint(tmp_path / 'model.pt')
    base = ['embeddings', f'--init_from={tmp_path / "model.pt"}', '--device=cpu']
    for args, needles in [(['--words=a,b'], ['at least 3 points']),
                          (['--words=a,b,q9'], ["word 'q9'", 'not in this char vocabulary']),
                          (['--projection=mds'], ["projection='mds'", 'pca']),
                          ([f'--data_dir={os.path.join(*char_dataset[:2])}'], ['not the checkpoint', '--data_dir'])]:
        code, err = script_error(capsys, lambda: plot.main(base + args))
        assert_one_line_error(code, err, *needles)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec',
                        lambda name, *args: None if name == 'sklearn' else real_find_spec(name, *args))
    code, err = script_error(capsys, lambda: plot.main(base + ['--projection=tsne']))
    assert_one_line_error(code, err, 'pip install scikit-learn')
    monkeypatch.setitem(sys.modules, 'matplotlib', None)  # `import matplotlib...` now raises ImportError
    for command in (['embeddings', '--neighbours=a'], ['explain', '--text=a cat']):
        code, err = script_error(capsys, lambda: plot.main([*command, f'--init_from={tmp_path / "model.pt"}']))
        assert_one_line_error(code, err, 'pip install matplotlib')
