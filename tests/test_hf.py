"""
Tests for hf.py (finding and reading HF checkpoints: safetensors only unless trusted, the hub cache, shards) and
for hf.py's weight mapping both ways (hf.from_hf / hf.to_hf): tiny randomly initialised transformers
models built from a config, saved to temp dirs; no downloads, CPU, fp32.

    python -m pytest -q tests/test_hf.py
"""
import json
from dataclasses import replace

import pytest
import torch

import hf
from model import Transformer

from conftest import tiny_model_config

transformers = pytest.importorskip('transformers')


def random_tokens(B, T, vocab=64, seed=1):
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


def perturbed(model, seed=8):
    """model in eval mode with non-zero biases and non-unit norm weights, so that a mis-mapped one shows."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('bias') or 'ln_' in name or 'norm' in name.lower():
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def assert_same_logits(ours, theirs, idx, attn_mask=None, lengths=None, atol=1e-5):
    with torch.no_grad():
        expected = theirs(input_ids=idx, attention_mask=attn_mask).logits
        got = ours.lm_head(ours.hidden_states(idx, attn_mask=attn_mask))
    for row, n in enumerate(lengths or [idx.size(1)] * idx.size(0)):
        torch.testing.assert_close(got[row, :n], expected[row, :n], atol=atol, rtol=0)


# -----------------------------------------------------------------------------
# GPT-2, and reading checkpoint directories

def tiny_hf_gpt2():
    config = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=2,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(8)
    return perturbed(transformers.GPT2LMHeadModel(config))


def test_gpt2_safetensors_matches_hf(tmp_path):
    """Weights from a HF GPT2LMHeadModel directory (safetensors) give HF's logits, with and without padding."""
    theirs = tiny_hf_gpt2()
    theirs.save_pretrained(tmp_path)
    assert (tmp_path / 'model.safetensors').exists() and hf.is_hf_name(str(tmp_path))
    ours, directory, model_type = hf.load_model(str(tmp_path))
    assert (directory, model_type) == (str(tmp_path), 'gpt2')
    assert ours.config.block_size == 16 and ours.config.vocab_size == 64 and ours.config.activation == 'gelu_tanh'
    idx = random_tokens(2, 16)
    assert_same_logits(ours.eval(), theirs, idx)
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, 10:] = 0  # right padding
    assert_same_logits(ours, theirs, idx, attn_mask=mask, lengths=[16, 10])


def test_pytorch_bin_refused_unless_trusted(tmp_path, capsys):
    """A directory with only an original-style pytorch_model.bin (no 'transformer.' prefix, attn.bias buffers,
    Conv1D weights) is refused with one line naming --trust_checkpoint=True; with allow_pickle it loads
    (torch.load weights_only=True) after a warning on stderr."""
    theirs = tiny_hf_gpt2()
    theirs.config.save_pretrained(tmp_path)
    sd = {k.removeprefix('transformer.'): v for k, v in theirs.state_dict().items() if k != 'lm_head.weight'}
    for i in range(2):  # the causal-mask buffers old GPT-2 files carry
        sd[f'h.{i}.attn.bias'] = torch.tril(torch.ones(16, 16, dtype=torch.bool))[None, None]
        sd[f'h.{i}.attn.masked_bias'] = torch.tensor(-1e4)
    torch.save(sd, tmp_path / 'pytorch_model.bin')
    assert hf.is_hf_name(str(tmp_path))
    with pytest.raises(ValueError) as info:
        hf.load_model(str(tmp_path))
    message = str(info.value)
    assert '\n' not in message and 'pytorch_model.bin' in message and '--trust_checkpoint=True' in message
    capsys.readouterr()
    ours, _, _ = hf.load_model(str(tmp_path), allow_pickle=True)
    err = capsys.readouterr().err
    assert err.startswith('warning: ') and 'pytorch_model.bin' in err and len(err.strip().splitlines()) == 1
    assert_same_logits(ours.eval(), theirs, random_tokens(3, 12))


def test_sharded_safetensors(tmp_path):
    """model.safetensors.index.json and its shards (as save_pretrained writes big models) load as one state dict."""
    theirs = tiny_hf_gpt2()
    theirs.save_pretrained(tmp_path, max_shard_size='20KB')
    assert (tmp_path / 'model.safetensors.index.json').exists() and not (tmp_path / 'model.safetensors').exists()
    assert len(list(tmp_path.glob('model-*.safetensors'))) > 1
    ours, _, _ = hf.load_model(str(tmp_path))
    assert_same_logits(ours.eval(), theirs, random_tokens(2, 16))


def test_errors_and_cache(tmp_path, monkeypatch):
    """A name found nowhere (no network) is a clear FileNotFoundError; a name in the HF cache loads from it;
    a model_type model.py does not read, or weights that do not fit the config, are one-line ValueErrors."""
    def no_network(url, path):
        raise OSError('network disabled in tests')
    monkeypatch.setattr(hf, 'download', no_network)
    monkeypatch.setenv('HF_HOME', str(tmp_path / 'hf'))
    monkeypatch.delenv('HF_HUB_CACHE', raising=False)
    with pytest.raises(FileNotFoundError, match=r"cannot find 'no-such/model'.*not a local directory.*download failed"):
        hf.load_model('hf:no-such/model')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='no config.json'):
        hf.load_model(str(tmp_path / 'empty'))
    # the HF cache layout: hub/models--org--name/snapshots/<commit>/
    theirs = tiny_hf_gpt2()
    snapshot = tmp_path / 'hf' / 'hub' / 'models--tiny--gpt2' / 'snapshots' / 'abc123'
    theirs.save_pretrained(snapshot)
    ours, directory, _ = hf.load_model('hf:tiny/gpt2')
    assert directory == str(snapshot)
    assert_same_logits(ours.eval(), theirs, random_tokens(1, 8))
    config = json.loads((snapshot / 'config.json').read_text())
    for change, message in (({'model_type': 'roberta'}, "model_type 'roberta' is not one model.py reads"),
                            ({'model_type': 'bert'}, "unexpected weight 'transformer.*: not a bert checkpoint"),
                            ({'n_layer': 3}, 'incomplete gpt2 checkpoint'),
                            ({"n_embd": 64}, r"weight .* has shape .*, expected"),
                            ({'activation_function': 'relu'}, "activation_function='relu': model.py supports")):
        (snapshot / 'config.json').write_text(json.dumps({**config, **change}))
        with pytest.raises(ValueError, match=message):
            hf.load_model(str(snapshot))


# -----------------------------------------------------------------------------
# Llama and Qwen3: our rope / RMSNorm / SwiGLU / no-bias / untied (+ QK-norm) options equal transformers' models

def tiny_hf_decoder(kind, **overrides):
    """A tiny random LlamaForCausalLM or Qwen3ForCausalLM: 2 layers, 4 heads of 16 over width 32 with 2 key/value
    heads (grouped-query attention; head_dim 16 is not 32 / 4, as in Qwen3-0.6B), block 32, vocab 64."""
    args = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=16, max_position_embeddings=32, rms_norm_eps=1e-6, rope_theta=500.0,
                bos_token_id=None, eos_token_id=None, pad_token_id=None)
    args.update(overrides)
    config = getattr(transformers, f'{kind}Config')(**args)
    torch.manual_seed(3)
    return perturbed(getattr(transformers, f'{kind}ForCausalLM')(config))


@pytest.mark.parametrize('kind,tied', [('Llama', False), ('Qwen3', False), ('Qwen3', True)])
def test_decoder_matches_hf(tmp_path, kind, tied):
    """A tiny HF Llama / Qwen3 saved with save_pretrained loads into our options (the config they map to is checked),
    gives HF's logits on a batch, with and without right padding (atol 1e-4; measured max difference 0.0 in fp32),
    and 20 greedy tokens (our cached generate) equal to HF's generate."""
    theirs = tiny_hf_decoder(kind, tie_word_embeddings=tied)
    theirs.save_pretrained(tmp_path)
    ours, _, model_type = hf.load_model(str(tmp_path))
    ours.eval()
    c = ours.config
    assert model_type == kind.lower()
    assert (c.pos_embedding, c.norm, c.mlp, c.bias, c.causal, c.qk_norm, c.tie_embeddings) == \
        ('rope', 'rms', 'swiglu', False, True, kind == 'Qwen3', tied)
    assert (c.n_head, c.n_kv_head, c.head_size, c.mlp_hidden, c.rope_theta, c.layer_norm_eps) == (4, 2, 16, 48, 500.0, 1e-6)
    assert 'wpe' not in ours.transformer and (ours.lm_head.weight is ours.transformer.wte.weight) == tied
    idx = random_tokens(3, 32)
    assert_same_logits(ours, theirs, idx, atol=1e-4)
    mask = torch.ones(3, 32, dtype=torch.long)
    mask[1, 20:] = mask[2, 7:] = 0
    assert_same_logits(ours, theirs, idx, attn_mask=mask, lengths=[32, 20, 7], atol=1e-4)
    prompt = idx[:, :6]
    with torch.no_grad():
        expected = theirs.generate(prompt, max_new_tokens=20, do_sample=False, min_new_tokens=20)
    assert torch.equal(ours.generate(prompt, 20, temperature=0), expected)


def test_decoder_config_refusals():
    """Llama / Qwen3 configs that model.py cannot represent are one-line ValueErrors, before any weight is read."""
    theirs = tiny_hf_decoder('Llama')
    config = theirs.config.to_dict()
    for change, message in (({'hidden_act': 'gelu'}, "hidden_act='gelu'"),
                            ({'rope_parameters': {'rope_type': 'linear', 'factor': 2.0, 'rope_theta': 500.0}},
                             'scaled rotary embeddings'),
                            ({'model_type': 'qwen3', 'use_sliding_window': True}, "use_sliding_window=True")):
        with pytest.raises(ValueError, match=message):
            hf.from_hf({**config, **change}, theirs.state_dict())


# -----------------------------------------------------------------------------
# to_hf: our weights under transformers' names, loaded by transformers' own classes

ROUND_TRIPS = {
    'gpt2': dict(),
    'bert': dict(causal=False, norm_position='post', embedding_norm=True, activation='gelu', mlm_head=True),
    'bert_pretraining': dict(causal=False, norm_position='post', embedding_norm=True, type_vocab_size=2,
                             mlm_head=True, pooler=True, nsp_head=True, layer_norm_eps=1e-12),
    'llama': dict(pos_embedding='rope', norm='rms', mlp='swiglu', bias=False, tie_embeddings=False, n_kv_head=1),
    'qwen3': dict(pos_embedding='rope', norm='rms', mlp='swiglu', bias=False, qk_norm=True, head_dim=8, rope_theta=1e6),
}


@pytest.mark.parametrize('name', ROUND_TRIPS)
def test_to_hf_round_trip(name):
    """A model of ours in an HF-expressible configuration: to_hf gives a config.json dict that transformers builds
    its class from and a state dict it loads (only the tied head weights left to it), with our logits; and
    from_hf of that gives our model back, weight for weight."""
    torch.manual_seed(0)
    ours = perturbed(Transformer(tiny_model_config(**ROUND_TRIPS[name])))
    hf_config, state = hf.to_hf(ours)
    kind = hf_config['architectures'][0]
    theirs = getattr(transformers, kind)(transformers.AutoConfig.for_model(**hf_config)).eval()
    missing, unexpected = theirs.load_state_dict(state, strict=False)
    assert not unexpected and all(k in ('lm_head.weight', 'cls.predictions.decoder.weight') for k in missing), missing
    if 'lm_head.weight' in missing or 'cls.predictions.decoder.weight' in missing:
        theirs.tie_weights()
    idx = random_tokens(2, 16)
    with torch.no_grad():
        out = theirs(input_ids=idx)
        x = ours.hidden_states(idx)
    if name.startswith('bert'):
        torch.testing.assert_close(out.logits if name == 'bert' else out.prediction_logits, ours.mlm_head(x), atol=1e-5, rtol=0)
    else:
        torch.testing.assert_close(out.logits, ours.lm_head(x), atol=1e-5, rtol=0)
    back = hf.from_hf(hf_config, state)
    assert resolved(back) == resolved(ours)
    for key, value in ours.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key


def resolved(model):
    """model's config with the sizes that None stands for spelled out, as to_hf writes them; and BERT's
    type_vocab_size=0 as the one row of zeros it goes out as."""
    c = model.config
    return replace(c, mlp_hidden=model.transformer.h[0].mlp.c_fc.out_features, n_kv_head=c.kv_heads,
                   head_dim=c.head_size, type_vocab_size=max(c.type_vocab_size, int(not c.causal)))


def test_to_hf_refuses_what_no_architecture_expresses():
    """A configuration transformers has no class for is refused by name of the fields that differ from the closest."""
    for overrides, message in ((dict(mlp='relu2'), "closest, gpt2, needs mlp='gelu'"),
                               (dict(pos_embedding='rope', norm='rms', mlp='swiglu', bias=False, causal=False),
                                "closest, llama, needs causal=True"),
                               (dict(task_head='sequence', num_labels=3), "task_head=''")):
        with pytest.raises(ValueError, match=message):
            hf.to_hf(Transformer(tiny_model_config(**overrides)))


def test_to_hf_refuses_a_field_its_tables_do_not_name():
    """A new ModelConfig option that hf.py's tables do not map goes out only at its default (where it is GPT-2's
    behaviour); any other value is refused with the field named, never exported as if it were not there."""
    from dataclasses import field, make_dataclass
    from model import ModelConfig
    WithWindow = make_dataclass('WithWindow', [('sliding_window', int, field(default=0))], bases=(ModelConfig,))
    hf.to_hf(Transformer(WithWindow(**vars(tiny_model_config()))))
    with pytest.raises(ValueError, match='sliding_window=8'):
        hf.to_hf(Transformer(WithWindow(**{**vars(tiny_model_config()), 'sliding_window': 8})))
