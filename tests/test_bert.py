"""
Tests for BERT-style models: parity of model.py with HF BERT checkpoints (tiny random models saved to a temp dir,
no downloads), the heads and config flags.

    python -m pytest -q tests/test_bert.py
"""
import json

import pytest
import torch

from model import IGNORE_INDEX, ModelConfig, Transformer

from conftest import tiny_model_config


def tiny_hf_bert(kind='BertForMaskedLM', seed=8, **overrides):
    """A tiny randomly initialised HF BERT (2 layers, 2 heads, 32 wide, block 16, vocab 64), dropout off."""
    transformers = pytest.importorskip('transformers')
    args = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                max_position_embeddings=16, type_vocab_size=2, hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0, layer_norm_eps=1e-12, hidden_act='gelu')
    args.update(overrides)
    torch.manual_seed(seed)
    hf = getattr(transformers, kind)(transformers.BertConfig(**args)).eval()
    with torch.no_grad():  # non-zero biases and LayerNorm affines, so a mis-mapped one shows
        for name, p in hf.named_parameters():
            if name.endswith('bias') or 'LayerNorm' in name:
                p.add_(0.1 * torch.randn_like(p))
    return hf


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
    hf = tiny_hf_bert()
    hf.save_pretrained(tmp_path)
    ours = Transformer.from_pretrained_bert(str(tmp_path)).eval()
    cfg = ours.config
    assert (cfg.norm_position, cfg.embedding_norm, cfg.type_vocab_size, cfg.causal, cfg.activation) == \
        ('post', True, 2, False, 'gelu')
    assert cfg.mlm_head and not cfg.pooler and not cfg.nsp_head  # BertForMaskedLM has no pooler
    idx = random_tokens(3, 16)
    lengths = (16, 11, 5) if padded else (16, 16, 16)
    mask, types = padding_and_types(lengths=lengths)
    for token_types in (None, types):
        with torch.no_grad():
            out = hf(input_ids=idx, attention_mask=mask if padded else None, token_type_ids=token_types,
                     output_hidden_states=True)
            hidden = ours.hidden_states(idx, attn_mask=mask if padded else None, token_type_ids=token_types)
            logits, loss = ours(idx, attn_mask=mask if padded else None, token_type_ids=token_types)
        assert loss is None and logits.shape == (3, 16, 64)
        assert_close_at(hidden, out.hidden_states[-1], lengths)
        assert_close_at(logits, out.logits, lengths)


def test_mlm_head_only_at_targets_and_loss_matches_hf(tmp_path):
    """With targets the MLM head runs on the N selected positions only; logits and loss equal HF's there."""
    hf = tiny_hf_bert()
    hf.save_pretrained(tmp_path)
    ours = Transformer.from_pretrained_bert(str(tmp_path)).eval()
    idx = random_tokens(2, 16)
    labels = torch.full((2, 16), IGNORE_INDEX)
    labels[0, [1, 5, 9]] = idx[0, [1, 5, 9]]
    labels[1, [0, 15]] = idx[1, [0, 15]]
    calls = []
    handle = ours.mlm_head.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape))
    with torch.no_grad():
        out = hf(input_ids=idx, labels=labels)
        logits, loss = ours(idx, labels)
    handle.remove()
    assert calls == [torch.Size([5, 32])]  # the head saw 5 rows, not 32
    torch.testing.assert_close(logits, out.logits[labels != IGNORE_INDEX], atol=1e-5, rtol=0)
    torch.testing.assert_close(loss, out.loss, atol=1e-5, rtol=0)
    # nothing selected: a zero loss that still backpropagates, not NaN
    _, loss = ours(idx, torch.full((2, 16), IGNORE_INDEX))
    assert loss.item() == 0.0


def test_bert_for_pretraining_pytorch_bin(tmp_path):
    """An old-style pytorch_model.bin of BertForPreTraining (gamma/beta names, tied decoder weight and bias, a
    position_ids buffer) loads, with pooler and next-sentence head matching HF."""
    hf = tiny_hf_bert('BertForPreTraining')
    hf.config.save_pretrained(tmp_path)
    sd = {k.replace('LayerNorm.weight', 'LayerNorm.gamma').replace('LayerNorm.bias', 'LayerNorm.beta'): v
          for k, v in hf.state_dict().items()}
    sd['cls.predictions.decoder.weight'] = hf.bert.embeddings.word_embeddings.weight.detach().clone()
    sd['cls.predictions.decoder.bias'] = hf.cls.predictions.bias.detach().clone()
    sd['bert.embeddings.position_ids'] = torch.arange(16)[None]
    torch.save(sd, tmp_path / 'pytorch_model.bin')
    ours = Transformer.from_pretrained_bert(str(tmp_path)).eval()
    assert ours.config.mlm_head and ours.config.pooler and ours.config.nsp_head
    idx = random_tokens(3, 16)
    mask, types = padding_and_types()
    with torch.no_grad():
        out = hf(input_ids=idx, attention_mask=mask, token_type_ids=types)
        x = ours.hidden_states(idx, attn_mask=mask, token_type_ids=types)
        mlm_logits, _ = ours.masked_lm(x)
        nsp_logits = ours.next_sentence(x)
    assert_close_at(mlm_logits, out.prediction_logits, (16, 11, 5))
    torch.testing.assert_close(nsp_logits, out.seq_relationship_logits, atol=1e-5, rtol=0)
    # the joint loss: MLM + NSP, as HF's BertForPreTraining computes it
    labels = torch.where(mask.bool() & (idx % 3 == 0), idx, IGNORE_INDEX)
    nsp_labels = torch.tensor([0, 1, 1])
    with torch.no_grad():
        expected = hf(input_ids=idx, attention_mask=mask, token_type_ids=types, labels=labels,
                      next_sentence_label=nsp_labels).loss
        _, loss = ours(idx, labels, attn_mask=mask, token_type_ids=types, nsp_labels=nsp_labels)
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=0)


def test_bert_model_with_pooler(tmp_path):
    """A plain BertModel file (no 'bert.' prefix, no MLM head) gives HF's last hidden state and pooled output."""
    hf = tiny_hf_bert('BertModel')
    hf.save_pretrained(tmp_path)
    ours = Transformer.from_pretrained_bert(str(tmp_path)).eval()
    assert not ours.config.mlm_head and ours.config.pooler and not ours.config.nsp_head
    idx = random_tokens(2, 16)
    with torch.no_grad():
        out = hf(input_ids=idx)
        x = ours.hidden_states(idx)
    torch.testing.assert_close(x, out.last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.pooler(x), out.pooler_output, atol=1e-5, rtol=0)


def test_bert_loading_errors(tmp_path):
    """Checkpoints model.py cannot represent are one-line ValueErrors; GPT-2's loader points BERT to its own."""
    hf = tiny_hf_bert('BertModel')
    hf.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match='from_pretrained_bert'):
        Transformer.from_pretrained(str(tmp_path))
    config = json.loads((tmp_path / 'config.json').read_text())
    for change, message in (({'intermediate_size': 100}, '4 x width'),
                            ({'position_embedding_type': 'relative_key'}, 'absolute'),
                            ({'hidden_act': 'relu'}, 'activation'),
                            ({'model_type': 'roberta'}, 'reads BERT')):
        (tmp_path / 'config.json').write_text(json.dumps({**config, **change}))
        with pytest.raises(ValueError, match=message):
            Transformer.from_pretrained_bert(str(tmp_path))
    (tmp_path / 'config.json').write_text(json.dumps({**config, 'num_hidden_layers': 3}))
    with pytest.raises(ValueError, match='incomplete BERT checkpoint'):
        Transformer.from_pretrained_bert(str(tmp_path))


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
