"""
Tests for BERT-style models: parity of model.py with HF BERT checkpoints (tiny random models saved to a temp dir,
no downloads), the heads and config flags; masking and next-sentence batches (train.py); masked-LM training,
fill-mask and HF BERT checkpoints end to end in train.py and sample.py, with their one-line errors.

    python -m pytest -q tests/test_bert.py
"""
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import checkpoints
import configurator
import train
from runtime import setup_runtime
import hf
import prepare
from model import IGNORE_INDEX, ModelConfig, Transformer, config_dict

from conftest import REPO, make_english_text, tiny_model_config, with_config
from tokenizer import DataError, special_tokens, tokenizer_of


def tiny_hf_bert(kind='BertForMaskedLM', seed=8, **overrides):
    """A tiny randomly initialised HF BERT (2 layers, 2 heads, 32 wide, block 16, vocab 64), dropout off."""
    transformers = pytest.importorskip('transformers')
    args = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                max_position_embeddings=16, type_vocab_size=2, hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0, layer_norm_eps=1e-12, hidden_act='gelu')
    args.update(overrides)
    torch.manual_seed(seed)
    theirs = getattr(transformers, kind)(transformers.BertConfig(**args)).eval()
    with torch.no_grad():  # non-zero biases and LayerNorm affines, so a mis-mapped one shows
        for name, p in theirs.named_parameters():
            if name.endswith('bias') or 'LayerNorm' in name:
                p.add_(0.1 * torch.randn_like(p))
    return theirs


def random_tokens(B, T, vocab=64, seed=1):
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


def padding_and_types(B=3, T=16, lengths=(16, 11, 5)):
    mask = torch.zeros(B, T, dtype=torch.long)
    types = torch.zeros(B, T, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
        types[row, n // 2:n] = 1  # segment B is the second half of the real tokens
    return mask, types


def assert_close_at(got, expected, lengths, atol=1e-5):
    """Compare (B, T, ...) tensors at the real (unpadded) positions of each row."""
    for row, n in enumerate(lengths):
        torch.testing.assert_close(got[row, :n], expected[row, :n], atol=atol, rtol=0)


@pytest.mark.parametrize('padded', [False, True])
def test_bert_for_masked_lm_parity(tmp_path, padded):
    """Hidden states and MLM logits equal HF BertForMaskedLM's (safetensors), with and without padding and types."""
    theirs = tiny_hf_bert()
    theirs.save_pretrained(tmp_path)
    ours = hf.load_model(str(tmp_path))[0].eval()
    cfg = ours.config
    assert (cfg.norm_position, cfg.embedding_norm, cfg.type_vocab_size, cfg.causal, cfg.activation) == \
        ('post', True, 2, False, 'gelu')
    assert cfg.mlm_head and not cfg.pooler and not cfg.nsp_head  # BertForMaskedLM has no pooler
    idx = random_tokens(3, 16)
    lengths = (16, 11, 5) if padded else (16, 16, 16)
    mask, types = padding_and_types(lengths=lengths)
    for token_types in (None, types):
        with torch.no_grad():
            out = theirs(input_ids=idx, attention_mask=mask if padded else None, token_type_ids=token_types,
                     output_hidden_states=True)
            hidden = ours.hidden_states(idx, attn_mask=mask if padded else None, token_type_ids=token_types)
            logits, loss = ours(idx, attn_mask=mask if padded else None, token_type_ids=token_types)
        assert loss is None and logits.shape == (3, 16, 64)
        assert_close_at(hidden, out.hidden_states[-1], lengths)
        assert_close_at(logits, out.logits, lengths)


def test_mlm_head_only_at_targets_and_loss_matches_hf(tmp_path):
    """With targets the MLM head runs on the N selected positions only; logits and loss equal HF's there."""
    theirs = tiny_hf_bert()
    theirs.save_pretrained(tmp_path)
    ours = hf.load_model(str(tmp_path))[0].eval()
    idx = random_tokens(2, 16)
    labels = torch.full((2, 16), IGNORE_INDEX)
    labels[0, [1, 5, 9]] = idx[0, [1, 5, 9]]
    labels[1, [0, 15]] = idx[1, [0, 15]]
    calls = []
    handle = ours.mlm_head.dense.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape))
    plain = with_config(ours, fused_loss=False)
    handle_plain = plain.mlm_head.dense.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape))
    with torch.no_grad():
        out = theirs(input_ids=idx, labels=labels)
        no_logits, fused_loss = ours(idx, labels)  # fused_loss (the default): no logits at all
        logits, loss = plain(idx, labels)
    handle.remove()
    handle_plain.remove()
    assert calls == [torch.Size([5, 32])] * 2  # the head saw 5 rows, not 32, on both paths
    assert no_logits is None
    torch.testing.assert_close(logits, out.logits[labels != IGNORE_INDEX], atol=1e-5, rtol=0)
    torch.testing.assert_close(loss, out.loss, atol=1e-5, rtol=0)
    torch.testing.assert_close(fused_loss, out.loss, atol=1e-5, rtol=0)
    # nothing selected: a zero loss that still backpropagates, not NaN, on both paths
    for model in (ours, plain):
        _, loss = model(idx, torch.full((2, 16), IGNORE_INDEX))
        assert loss.item() == 0.0


def test_mlm_fused_loss_matches_plain():
    """The fused MLM loss (bias folded into linear_cross_entropy) gives the plain path's loss and gradients."""
    torch.manual_seed(0)
    model = Transformer(tiny_model_config(causal=False, mlm_head=True))
    idx = random_tokens(3, 16)
    targets = torch.where(idx % 3 == 0, idx, IGNORE_INDEX)
    results = []
    for fused in (True, False):
        model = with_config(model, fused_loss=fused)
        _, loss = model(idx, targets)
        loss.backward()
        results.append((loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}))
    (loss_fused, grads_fused), (loss_plain, grads_plain) = results
    torch.testing.assert_close(loss_fused, loss_plain, atol=1e-5, rtol=0)
    assert grads_fused.keys() == grads_plain.keys()
    for name in grads_plain:
        torch.testing.assert_close(grads_fused[name], grads_plain[name], atol=1e-5, rtol=0, msg=name)


def test_bert_for_pretraining_pytorch_bin(tmp_path):
    """An old-style pytorch_model.bin of BertForPreTraining (gamma/beta names, tied decoder weight and bias, a
    position_ids buffer) loads, with pooler and next-sentence head matching HF."""
    theirs = tiny_hf_bert('BertForPreTraining')
    theirs.config.save_pretrained(tmp_path)
    sd = {k.replace('LayerNorm.weight', 'LayerNorm.gamma').replace('LayerNorm.bias', 'LayerNorm.beta'): v
          for k, v in theirs.state_dict().items()}
    sd['cls.predictions.decoder.weight'] = theirs.bert.embeddings.word_embeddings.weight.detach().clone()
    sd['cls.predictions.decoder.bias'] = theirs.cls.predictions.bias.detach().clone()
    sd['bert.embeddings.position_ids'] = torch.arange(16)[None]
    torch.save(sd, tmp_path / 'pytorch_model.bin')
    ours = hf.load_model(str(tmp_path), allow_pickle=True)[0].eval()
    assert ours.config.mlm_head and ours.config.pooler and ours.config.nsp_head
    idx = random_tokens(3, 16)
    mask, types = padding_and_types()
    with torch.no_grad():
        out = theirs(input_ids=idx, attention_mask=mask, token_type_ids=types)
        x = ours.hidden_states(idx, attn_mask=mask, token_type_ids=types)
        mlm_logits = ours.mlm_head(x)
        nsp_logits = ours.nsp_head(ours.pooler(x))
    assert_close_at(mlm_logits, out.prediction_logits, (16, 11, 5))
    torch.testing.assert_close(nsp_logits, out.seq_relationship_logits, atol=1e-5, rtol=0)
    # the joint loss: MLM + NSP, as HF's BertForPreTraining computes it
    labels = torch.where(mask.bool() & (idx % 3 == 0), idx, IGNORE_INDEX)
    nsp_labels = torch.tensor([0, 1, 1])
    with torch.no_grad():
        expected = theirs(input_ids=idx, attention_mask=mask, token_type_ids=types, labels=labels,
                      next_sentence_label=nsp_labels).loss
        _, loss = ours(idx, labels, attn_mask=mask, token_type_ids=types, nsp_labels=nsp_labels)
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=0)


def test_bert_model_with_pooler(tmp_path):
    """A plain BertModel file (no 'bert.' prefix, no MLM head) gives HF's last hidden state and pooled output."""
    theirs = tiny_hf_bert('BertModel')
    theirs.save_pretrained(tmp_path)
    ours = hf.load_model(str(tmp_path))[0].eval()
    assert not ours.config.mlm_head and ours.config.pooler and not ours.config.nsp_head
    idx = random_tokens(2, 16)
    with torch.no_grad():
        out = theirs(input_ids=idx)
        x = ours.hidden_states(idx)
    torch.testing.assert_close(x, out.last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.pooler(x), out.pooler_output, atol=1e-5, rtol=0)


def test_bert_loading_errors(tmp_path):
    """Checkpoints model.py cannot represent are one-line ValueErrors."""
    theirs = tiny_hf_bert('BertModel')
    theirs.save_pretrained(tmp_path)
    config = json.loads((tmp_path / 'config.json').read_text())
    for change, message in (({'position_embedding_type': 'relative_key'}, "position_embedding_type='relative_key'"),
                            ({'hidden_act': 'relu'}, "hidden_act='relu'"),
                            ({'model_type': 'roberta'}, "model_type 'roberta' is not one model.py reads")):
        (tmp_path / 'config.json').write_text(json.dumps({**config, **change}))
        with pytest.raises(ValueError, match=message):
            hf.load_model(str(tmp_path))
    (tmp_path / 'config.json').write_text(json.dumps({**config, 'num_hidden_layers': 3}))
    with pytest.raises(ValueError, match='incomplete bert checkpoint'):
        hf.load_model(str(tmp_path))


def test_bert_mlp_of_any_width(tmp_path):
    """An intermediate_size other than 4 x hidden_size (mlp_hidden) loads and matches HF."""
    theirs = tiny_hf_bert('BertForMaskedLM', intermediate_size=100)
    theirs.save_pretrained(tmp_path)
    ours = hf.load_model(str(tmp_path))[0].eval()
    assert ours.config.mlp_hidden == 100
    idx = random_tokens(2, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours(idx)[0], theirs(input_ids=idx).logits, atol=1e-5, rtol=0)


def test_bert_config_flags_from_scratch():
    """A BERT-shaped model built from flags: heads exist only when asked, tied to wte, every parameter trains."""
    torch.manual_seed(0)
    config = tiny_model_config(causal=False, norm_position='post', embedding_norm=True, type_vocab_size=2,
                               mlm_head=True, pooler=True, nsp_head=True)
    model = Transformer(config)
    assert model.mlm_head.decoder.weight is model.transformer.wte.weight
    assert 'ln_f' not in model.transformer  # post-LN blocks end normalised
    idx = random_tokens(2, 16)
    targets = torch.where(idx % 4 == 0, idx, IGNORE_INDEX)
    _, loss = model(idx, targets, token_type_ids=(torch.arange(16) >= 8).long().expand(2, 16),
                    nsp_labels=torch.tensor([0, 1]))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    plain = Transformer(tiny_model_config())  # the GPT default grows no new modules
    assert not any(hasattr(plain, name) for name in ('mlm_head', 'pooler', 'nsp_head'))
    assert set(plain.transformer) == {'wte', 'wpe', 'drop', 'h', 'ln_f'}
    with pytest.raises(ValueError, match='token-type'):
        plain.hidden_states(idx, token_type_ids=torch.zeros_like(idx))
    with pytest.raises(ValueError, match='needs pooler'):
        ModelConfig(nsp_head=True)
    with pytest.raises(ValueError, match='norm_position'):
        ModelConfig(norm_position='middle')


# -----------------------------------------------------------------------------
# masked-LM and next-sentence batches (train.py)



def test_mask_tokens_proportions():
    """15% of the non-special positions are selected; of those 80% become [MASK], 10% a random id, 10% stay.
    Specials are never selected; targets are the original ids there and IGNORE_INDEX elsewhere; a seed fixes it."""
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 50, (64, 512), generator=g)
    tokens[:, 0], tokens[:, -1], tokens[:, 100:110] = 51, 52, 53  # [CLS], [SEP], pads
    inputs, targets = train.mask_tokens(tokens, mask_id=50, n_random=50, special_ids={51, 52, 53},
                                         mlm_probability=0.15, generator=torch.Generator().manual_seed(1))
    selected = targets != IGNORE_INDEX
    special = tokens >= 51
    assert not selected[special].any() and (inputs[special] == tokens[special]).all()
    assert abs(selected[~special].float().mean().item() - 0.15) < 0.005
    assert (targets[selected] == tokens[selected]).all() and (inputs[~selected] == tokens[~selected]).all()
    masked = (inputs == 50) & selected
    kept = (inputs == tokens) & selected
    n = selected.sum().item()
    assert abs(masked.sum().item() / n - 0.8) < 0.02
    # random replacements are uniform over 50 ids, so 1/50 of them land on the original id and look kept
    assert abs(kept.sum().item() / n - (0.1 + 0.1 / 50)) < 0.015
    assert abs((selected & ~masked & ~kept).sum().item() / n - 0.1 * 49 / 50) < 0.015
    again = train.mask_tokens(tokens, 50, 50, {51, 52, 53}, 0.15, torch.Generator().manual_seed(1))
    other = train.mask_tokens(tokens, 50, 50, {51, 52, 53}, 0.15, torch.Generator().manual_seed(2))
    assert torch.equal(again[0], inputs) and torch.equal(again[1], targets)
    assert not torch.equal(other[1], targets)  # a fresh key is a fresh mask (dynamic masking)


def doc_stream(lengths, eot=60000):
    """Token ids that say where they are: document d's token k is d * 1000 + k; eot after each document."""
    return np.concatenate([np.append(d * 1000 + np.arange(n), eot) for d, n in enumerate(lengths)]).astype(np.uint16)


def test_document_spans():
    data = doc_stream([5, 3, 7])
    starts, ends = train.document_spans(data, 60000, chunk=4)  # chunks smaller than a document
    assert starts.tolist() == [0, 6, 10] and ends.tolist() == [5, 9, 17]
    starts, ends = train.document_spans(np.array([7, 7, 9, 9, 7, 5], dtype=np.uint16), 7)  # empty ones dropped
    assert list(zip(starts.tolist(), ends.tolist())) == [(2, 4), (5, 6)]


def test_segment_pairs_layout_and_boundaries():
    """[CLS] A [SEP] B [SEP]; token types 0 then 1; label 0: B continues A in its document; label 1: B is from
    another document; no segment crosses a document boundary; about half of each label."""
    lengths = [40, 12, 90, 33, 200, 29, 61]
    data = doc_stream(lengths)
    docs = train.document_spans(data, 60000)
    tokens, types, labels = train.segment_pairs(data, docs, 400, 32, np.random.default_rng(0), cls_id=61000, sep_id=62000)
    assert tokens.shape == types.shape == (400, 32) and abs(labels.mean() - 0.5) < 0.1
    for row, label, tt in zip(tokens, labels, types):
        seps = np.flatnonzero(row == 62000)
        assert row[0] == 61000 and len(seps) == 2 and seps[1] == 31
        assert (tt == (np.arange(32) > seps[0])).all()  # type 1 from B's first token to the last [SEP]
        a, b = row[1:seps[0]], row[seps[0] + 1:31]
        assert len(a) >= 7 and len(b) >= 7  # A takes a quarter to three quarters of the 29 tokens
        for segment in (a, b):  # contiguous and inside one document
            assert (np.diff(segment) == 1).all() and len(set(segment // 1000)) == 1
            assert lengths[segment[0] // 1000] >= 29  # only documents that hold a whole pair
        same_doc = a[0] // 1000 == b[0] // 1000
        assert (label == 0) == (same_doc and b[0] == a[-1] + 1)
        assert label == 0 or not same_doc
    with pytest.raises(configurator.UserError, match='two documents of at least 97 tokens'):  # only one of 200
        train.segment_pairs(data, docs, 2, 100, np.random.default_rng(0), 61000, 62000)


def test_get_mlm_batch_keyed():
    """An MLM batch is a function of its key; without docs rows are [CLS] window [SEP]; with docs it has NSP fields."""
    data = doc_stream([50, 60, 70, 80])
    special = {'mask': 63000, 'cls': 61000, 'sep': 62000, 'pad': 64000, 'eot': 60000, 'n_random': 100}
    batch = train.get_mlm_batch(data, 4, 16, [1, 0, 5, 0], 'cpu', special, 0.3)
    assert set(batch) == {'idx', 'targets'} and batch['idx'].shape == (4, 16)
    assert (batch['idx'][:, 0] == 61000).all() and (batch['idx'][:, -1] == 62000).all()
    same = train.get_mlm_batch(data, 4, 16, [1, 0, 5, 0], 'cpu', special, 0.3)
    other = train.get_mlm_batch(data, 4, 16, [1, 0, 6, 0], 'cpu', special, 0.3)
    assert all(torch.equal(batch[k], same[k]) for k in batch) and not torch.equal(batch['idx'], other['idx'])
    eot_targets = batch['targets'][batch['idx'] == 60000]
    assert (eot_targets == IGNORE_INDEX).all()  # the document separator is never a prediction target
    nsp_batch = train.get_mlm_batch(data, 4, 16, [1, 0, 5, 0], 'cpu', special, 0.3,
                                     docs=train.document_spans(data, 60000))
    assert set(nsp_batch) == {'idx', 'targets', 'token_type_ids', 'nsp_labels'} and nsp_batch['nsp_labels'].shape == (4,)


def test_estimate_mlm_counts():
    """estimate_mlm: loss and accuracy over masked positions only, the most-frequent-token baseline, NSP accuracy."""
    torch.manual_seed(0)
    model = Transformer(tiny_model_config(causal=False, mlm_head=True, type_vocab_size=2, pooler=True,
                                          nsp_head=True))
    runtime = setup_runtime('cpu', 'float32')
    idx = random_tokens(2, 16)
    targets = torch.full((2, 16), IGNORE_INDEX)
    targets[0, :3] = torch.tensor([5, 5, 7])
    targets[1, 4] = 5
    batch = {'idx': idx, 'targets': targets, 'token_type_ids': torch.zeros_like(idx), 'nsp_labels': torch.tensor([0, 1])}
    scores = train.estimate_mlm(model, [batch, batch], runtime)
    assert scores['mlm_baseline_acc'] == 0.75  # token 5 is 3 of the 4 targets
    with torch.no_grad():
        x = model.hidden_states(idx, token_type_ids=batch['token_type_ids'])
        logits, loss = model.mlm_head.logits_and_loss(x, targets, fused=False)
        nsp = model.nsp_head(model.pooler(x))
    assert scores['mlm_loss'] == pytest.approx(loss.item(), abs=1e-5)
    assert scores['mlm_acc'] == (logits.argmax(-1) == torch.tensor([5, 5, 7, 5])).float().mean().item()
    assert scores['nsp_acc'] == (nsp.argmax(-1) == torch.tensor([0, 1])).float().mean().item()


# -----------------------------------------------------------------------------
# train.py and sample.py, end to end on tiny data

TINY = ['--n_layer=2', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=8', '--dtype=float32',
        '--device=cpu', '--warmup_iters=2', '--learning_rate=1e-2', '--eval_iters=2', '--log_interval=1']
MLM = ['--objective=mlm', '--causal=False']


def run(script, *args, timeout=180):
    proc = subprocess.run([sys.executable, script, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"{script} exited {proc.returncode}\nstdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-4000:]}")
    return proc


def main_error(monkeypatch, capsys, script, *args):
    """Run train.py's or sample.py's main in this process as the CLI does; return its one-line error."""
    from conftest import call_script_main
    code, err = call_script_main(monkeypatch, capsys, script, *args)
    err = err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith('error: '), err
    return err


@pytest.fixture(scope='module')
def docs_dataset(tmp_path_factory):
    """A char-level dataset of 40 short news documents (so that NSP has documents): (data_root, name, meta)."""
    root = tmp_path_factory.mktemp('bert_data')
    lines = make_english_text(400, seed=3).splitlines()
    with open(root / 'docs.jsonl', 'w') as f:
        for d in range(40):
            f.write(json.dumps({'text': ' '.join(lines[d * 5:(d + 1) * 5])}) + '\n')
    data_dir = prepare.prepare(str(root / 'docs.jsonl'), name='docs', tokenizer='char', out_root=str(root),
                               val_fraction=0.25)
    return str(root), 'docs', prepare.load_meta(data_dir)


def test_mlm_nsp_train_then_fill_mask(docs_dataset, tmp_path):
    """train.py objective=mlm nsp=True on chars: special ids above the char vocabulary, recorded in the checkpoint;
    MLM and NSP scores in the metrics; MLM loss falls; sample.py --fill_mask prints fillers for each [MASK]."""
    root, name, meta = docs_dataset
    out_dir = tmp_path / 'mlm'
    run('train.py', *TINY, *MLM, '--nsp=True', f'--data_root={root}', f'--dataset={name}', f'--out_dir={out_dir}',
        '--max_iters=30', '--eval_interval=15')
    with open(out_dir / 'metrics.jsonl') as f:
        evals = [r for r in map(json.loads, f) if 'val_loss' in r]
    assert [r['iter'] for r in evals] == [0, 15, 30]
    assert all({'mlm_loss', 'mlm_acc', 'mlm_baseline_acc', 'nsp_loss', 'nsp_acc'} <= set(r) for r in evals)
    assert evals[-1]['mlm_loss'] < evals[0]['mlm_loss'] - 0.5
    checkpoint = torch.load(out_dir / 'last.pt', map_location='cpu', weights_only=False)
    V = meta['vocab_size']  # the characters and <|endoftext|>
    assert checkpoint['meta']['special_tokens'] == {'mask': V, 'cls': V + 1, 'sep': V + 2, 'pad': V + 3,
                                                    'eot': V - 1, 'n_random': V}
    args = checkpoint['model_args']
    assert args['vocab_size'] == (V + 4 + 63) // 64 * 64 and not args['causal']
    assert args['mlm_head'] and args['nsp_head'] and args['type_vocab_size'] == 2
    proc = run('sample.py', f'--out_dir={out_dir}', '--device=cpu', '--fill_mask=The council [MASK]aid.',
               '--fill_mask_top_k=3')
    lines = [line for line in proc.stdout.splitlines() if not line.startswith('config: ')]
    assert lines[0] == 'The council [MASK]aid.' and lines[1].startswith('[MASK] 1: ')
    assert len(re.findall(r"' 0\.\d{3}", lines[1])) == 3, lines  # 3 fillers with probabilities


def test_mlm_bad_inputs(docs_dataset, monkeypatch, capsys, tmp_path):
    """MLM asked of a causal model (by config or by checkpoint), NSP without MLM, generating from an encoder."""
    root, name, meta = docs_dataset
    data = [f'--data_root={root}', f'--dataset={name}']
    err = main_error(monkeypatch, capsys, 'train', *TINY, *data, '--objective=mlm', f'--out_dir={tmp_path / "a"}')
    assert 'needs a bidirectional model' in err and 'causal=False' in err
    err = main_error(monkeypatch, capsys, 'train', *TINY, *data, '--nsp=True', f'--out_dir={tmp_path / "a"}')
    assert "objective='mlm'" in err
    # a causal (GPT) checkpoint asked for MLM
    torch.manual_seed(0)
    gpt = Transformer(tiny_model_config(block_size=32))
    path = tmp_path / 'gpt.pt'
    checkpoints.save_checkpoint(str(path), {'model': gpt.state_dict(), 'model_args': config_dict(gpt.config), 'meta': meta})
    err = main_error(monkeypatch, capsys, 'train', *TINY, *MLM, *data, f'--init_from={path}',
                     f'--out_dir={tmp_path / "b"}')
    assert 'causal (GPT-style)' in err and 'causal=False' in err
    # sample.py: an encoder cannot generate; fill_mask on a GPT checkpoint
    bert = Transformer(tiny_model_config(block_size=32, causal=False, mlm_head=True, vocab_size=64))
    checkpoints.save_checkpoint(str(tmp_path / 'bert.pt'), {'model': bert.state_dict(), 'model_args': config_dict(bert.config),
                                                       'meta': {**meta, 'special_tokens': special_tokens(meta)}})
    err = main_error(monkeypatch, capsys, 'sample', f'--init_from={tmp_path / "bert.pt"}', '--device=cpu')
    assert 'bidirectional encoder' in err and '--fill_mask' in err
    err = main_error(monkeypatch, capsys, 'sample', f'--init_from={path}', '--device=cpu', '--fill_mask=a [MASK]')
    assert 'masked-LM head' in err
    assert not (tmp_path / 'a').exists() and not (tmp_path / 'b').exists()


# -----------------------------------------------------------------------------
# WordPiece data and HF BERT checkpoints in train.py and sample.py

LETTERS = 'abcdefghijklmnopqrstuvwxyz0123456789'


def letters_vocab(swap=False):
    """A small WordPiece vocabulary: specials, letters, digits, punctuation and their '##' continuations.
    swap=True: the same tokens with two ids exchanged, another vocabulary of the same size."""
    vocab = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] + list(LETTERS + ".,!?'-") + ['##' + c for c in LETTERS]
    vocab += ['the', 'of', 'council', 'said', 'england', 'king', 'queen'] + [f'[unused{i}]' for i in range(8)]
    if swap:
        vocab[5], vocab[6] = vocab[6], vocab[5]
    return vocab


def bert_dir(path, vocab, vocab_size=None):
    """A tiny HF BertForMaskedLM saved with a vocab.txt (vocab_size: the embedding rows, default len(vocab))."""
    theirs = tiny_hf_bert(vocab_size=vocab_size or len(vocab), max_position_embeddings=64)
    theirs.save_pretrained(path)
    (path / 'vocab.txt').write_text('\n'.join(vocab) + '\n', encoding='utf-8')
    return theirs


def test_fill_mask_from_hf_bert_matches_hf(tmp_path):
    """sample.py's fill-mask on an HF BertForMaskedLM directory: our WordPiece ids, HF's probabilities."""
    import sample
    vocab = letters_vocab()
    theirs = bert_dir(tmp_path, vocab)
    model, meta, _ = checkpoints.load(str(tmp_path))
    tokenizer, special = tokenizer_of(meta)
    results = sample.fill_masks(model.eval(), tokenizer, special, 'The [MASK] of England said.', top_k=4)
    ids = [vocab.index(t) for t in ['[CLS]', 'the', '[MASK]', 'of', 'england', 'said', '.', '[SEP]']]
    with torch.no_grad():
        probs = torch.softmax(theirs(input_ids=torch.tensor([ids])).logits[0, 2], dim=-1)
    top = torch.topk(probs, 4)
    assert len(results) == 1
    assert [token for token, _ in results[0]] == [vocab[i] for i in top.indices.tolist()]
    torch.testing.assert_close(torch.tensor([p for _, p in results[0]]), top.values, atol=1e-5, rtol=0)


def wordpiece_dataset(root, name, vocab_dir):
    source = root / f'{name}.txt'
    source.write_text(make_english_text(200, seed=5).lower(), encoding='utf-8')
    return prepare.prepare(str(source), name=name, tokenizer=f'wordpiece:{vocab_dir}', out_root=str(root))


def test_hf_bert_init_and_vocab_errors(tmp_path, monkeypatch, capsys):
    """Continued MLM pretraining from an HF BERT directory on data of its own vocab.txt works (a fresh MLM head is
    not needed: it has one); another vocab.txt in the data, GPT-2/char data, or a vocab.txt whose size is not the
    checkpoint's embedding size are one-line errors, in prepare.py, train.py and sample.py."""
    (tmp_path / 'a').mkdir()
    (tmp_path / 'b').mkdir()
    bert_dir(tmp_path / 'a', letters_vocab())
    (tmp_path / 'b' / 'vocab.txt').write_text('\n'.join(letters_vocab(swap=True)) + '\n', encoding='utf-8')
    wordpiece_dataset(tmp_path, 'data_a', tmp_path / 'a')
    wordpiece_dataset(tmp_path, 'data_b', tmp_path / 'b')
    base = ['--dtype=float32', '--device=cpu', '--batch_size=4', '--block_size=32', '--eval_iters=1', '--max_iters=2',
            '--warmup_iters=1', f'--data_root={tmp_path}', *MLM, f'--init_from={tmp_path / "a"}']
    run('train.py', *base, '--dataset=data_a', f'--out_dir={tmp_path / "ok"}', '--eval_interval=2')
    checkpoint = torch.load(tmp_path / 'ok' / 'last.pt', map_location='cpu', weights_only=False)
    assert checkpoint['model_args']['norm_position'] == 'post' and checkpoint['model_args']['vocab_size'] == len(letters_vocab())
    assert checkpoint['meta']['special_tokens']['mask'] == 4 and checkpoint['meta']['tokenizer'] == 'wordpiece'

    err = main_error(monkeypatch, capsys, 'train', *base, '--dataset=data_b', f'--out_dir={tmp_path / "x"}')
    assert 'was tokenized with' in err and 'wordpiece:' in err
    err = main_error(monkeypatch, capsys, 'train', '--dtype=float32', '--device=cpu', '--block_size=32', *MLM,
                     f'--data_root={tmp_path}', '--dataset=data_b', f'--init_from={tmp_path / "ok" / "last.pt"}',
                     f'--out_dir={tmp_path / "x"}')
    assert 'WordPiece vocabulary' in err
    # a vocab.txt of 98 tokens beside weights that embed 64
    (tmp_path / 'c').mkdir()
    bert_dir(tmp_path / 'c', letters_vocab(), vocab_size=64)
    with pytest.raises(DataError, match="has 98 tokens but the checkpoint beside it embeds 64"):
        wordpiece_dataset(tmp_path, 'data_c', tmp_path / 'c')
    err = main_error(monkeypatch, capsys, 'sample', f'--init_from={tmp_path / "c"}', '--device=cpu', '--fill_mask=a [MASK]')
    assert 'has 98 tokens' in err and 'embeds 64' in err
    err = main_error(monkeypatch, capsys, 'train', *base[:-1], f'--init_from={tmp_path / "c"}', '--dataset=data_a',
                     f'--out_dir={tmp_path / "x"}')
    assert 'has 98 tokens' in err
    assert not (tmp_path / 'x').exists()
