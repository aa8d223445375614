"""
Tests for model.py on tiny configs (CPU; the `gpu` ones need CUDA):

    python -m pytest -q tests/test_model.py
"""
import math
import os
import platform
import subprocess
import sys

import pytest
import torch
from torch.nn import functional as F

import runtime
from runtime import peak_flops_for
import model as M
import optim
import sample
from model import IGNORE_INDEX, ModelConfig, Transformer, linear_cross_entropy, sample_next

from conftest import REPO, tiny_model_config, with_config


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return Transformer(tiny_model_config(**overrides)).eval()


def random_tokens(B, T, vocab=64, seed=1):
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


# every modern option at once (rotary positions, RMSNorm, SwiGLU, no biases, untied head, QK-norm, grouped-query
# attention): Qwen3's architecture with 1 key/value head
MODERN = dict(pos_embedding='rope', norm='rms', mlp='swiglu', bias=False, tie_embeddings=False, qk_norm=True, n_kv_head=1)


def all_logits(model, idx, **kwargs):
    """LM logits (B, T, V) at every position (forward gives the last position's only, or none with fused loss)."""
    return model.lm_head(model.hidden_states(idx, **kwargs))


# -----------------------------------------------------------------------------
# forward

def test_forward_shapes():
    """Forward returns last-position logits for sampling, and no logits with fused loss (the default); the LM head
    over the hidden states gives them all."""
    model = tiny_model()
    idx, targets = random_tokens(3, 16), random_tokens(3, 16, seed=2)
    logits, loss = model(idx)
    assert logits.shape == (3, 1, 64) and loss is None
    assert all_logits(model, idx).shape == (3, 16, 64)
    assert model.config.fused_loss  # the default
    logits, loss = model(idx, targets)
    assert logits is None and loss.shape == () and torch.isfinite(loss)
    logits, plain_loss = with_config(model, fused_loss=False)(idx, targets)
    assert logits.shape == (3, 16, 64) and plain_loss.shape == ()
    torch.testing.assert_close(logits, all_logits(model, idx))
    # the last-position logits are the last row of the full logits
    torch.testing.assert_close(model(idx)[0][:, 0], all_logits(model, idx)[:, -1])
    with pytest.raises(ValueError, match='longer than block_size'):
        model(random_tokens(1, 17))


def test_initial_loss_near_ln_vocab():
    """At init the model predicts ~uniformly: loss on random targets ~ ln(vocab)."""
    model = tiny_model()
    _, loss = model(random_tokens(8, 16), random_tokens(8, 16, seed=2))
    assert abs(loss.item() - math.log(64)) < 0.1, loss.item()


@pytest.mark.parametrize('arch', [{}, MODERN], ids=['gpt2', 'modern'])
@pytest.mark.parametrize('causal', [True, False])
def test_causality(causal, arch):
    """causal=True: changing token t leaves logits at positions < t alone; causal=False: earlier positions change.
    With rotary positions as with learned ones."""
    model = tiny_model(causal=causal, **arch)
    idx = random_tokens(2, 16)
    t = 9
    changed = idx.clone()
    changed[:, t] = (changed[:, t] + 1) % 64
    before, after = all_logits(model, idx), all_logits(model, changed)
    assert (after[:, t:] - before[:, t:]).abs().amax() > 1e-4  # the change is visible from t on
    if causal:
        torch.testing.assert_close(after[:, :t], before[:, :t], atol=1e-6, rtol=0)
    else:
        assert (after[:, :t] - before[:, :t]).abs().amax(dim=-1).min() > 1e-5  # every earlier position moved


@pytest.mark.parametrize('arch', [{}, MODERN], ids=['gpt2', 'modern'])
@pytest.mark.parametrize('causal', [True, False])
def test_key_padding_mask(causal, arch):
    """With a key-padding mask, real positions of a right-padded row equal the unpadded sequence, whatever the pads hold."""
    model = tiny_model(causal=causal, **arch)
    lengths = [16, 11, 5]
    idx = random_tokens(3, 16)
    mask = torch.zeros(3, 16, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    padded = model.hidden_states(idx, attn_mask=mask)
    other_pads = torch.where(mask.bool(), idx, (idx * 7 + 3) % 64)
    padded_other = model.hidden_states(other_pads, attn_mask=mask)
    assert torch.isfinite(padded).all()
    for row, n in enumerate(lengths):
        alone = model.hidden_states(idx[row:row + 1, :n])
        torch.testing.assert_close(padded[row:row + 1, :n], alone, atol=1e-5, rtol=0)
        torch.testing.assert_close(padded_other[row, :n], padded[row, :n], atol=1e-6, rtol=0)
    if not causal:  # without the mask the pads would leak into real positions
        unmasked = model.hidden_states(idx)
        assert (unmasked[2, :5] - padded[2, :5]).abs().amax() > 1e-4


# -----------------------------------------------------------------------------
# fused linear cross-entropy

def loss_and_grads(model, idx, targets, fused):
    model = with_config(model, fused_loss=fused)
    _, loss = model(idx, targets)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


def test_fused_loss_matches_plain():
    """linear_cross_entropy gives the same loss and gradients (every parameter) as logits + F.cross_entropy."""
    model = tiny_model(seed=3)
    model.train()  # dropout is 0; gradients as in training
    idx, targets = random_tokens(4, 16), random_tokens(4, 16, seed=2)
    targets[0, :5] = IGNORE_INDEX
    targets[2, -3:] = IGNORE_INDEX
    loss_fused, grads_fused = loss_and_grads(model, idx, targets, fused=True)
    loss_plain, grads_plain = loss_and_grads(model, idx, targets, fused=False)
    torch.testing.assert_close(loss_fused, loss_plain, atol=1e-5, rtol=0)
    assert grads_fused.keys() == grads_plain.keys() and len(grads_fused) == len(list(model.parameters()))
    for name in grads_plain:
        torch.testing.assert_close(grads_fused[name], grads_plain[name], atol=1e-5, rtol=0, msg=name)


def test_linear_cross_entropy_chunks_and_ignore():
    """Chunking the rows changes nothing; ignored rows get no loss and zero gradient; all-ignored gives 0 not NaN."""
    torch.manual_seed(0)
    x = torch.randn(23, 16, requires_grad=True)
    w = torch.randn(40, 16, requires_grad=True)
    targets = torch.randint(0, 40, (23,))
    targets[[1, 7, 8]] = IGNORE_INDEX
    reference = F.cross_entropy(x @ w.t(), targets, ignore_index=IGNORE_INDEX)
    gx_ref, gw_ref = torch.autograd.grad(reference, (x, w))
    for chunk_rows in (None, 1, 5, 23, 100):
        loss = linear_cross_entropy(x, w, targets, chunk_rows=chunk_rows)
        gx, gw = torch.autograd.grad(loss, (x, w))
        torch.testing.assert_close(loss, reference, atol=1e-5, rtol=0)
        torch.testing.assert_close(gx, gx_ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(gw, gw_ref, atol=1e-5, rtol=0)
        assert gx[[1, 7, 8]].abs().max() == 0
    with torch.no_grad():  # the no-grad path (evaluation)
        torch.testing.assert_close(linear_cross_entropy(x, w, targets, chunk_rows=4), reference, atol=1e-5, rtol=0)
    loss = linear_cross_entropy(x, w, torch.full((23,), IGNORE_INDEX))
    assert loss.item() == 0.0


def test_fused_loss_under_bf16_autocast():
    """Under CPU bf16 autocast the fused loss stays close to the plain autocast path."""
    model = tiny_model(seed=4)
    idx, targets = random_tokens(4, 16), random_tokens(4, 16, seed=2)
    targets[1, :4] = IGNORE_INDEX
    with torch.autocast('cpu', dtype=torch.bfloat16):
        _, fused = model(idx, targets)
        _, plain = with_config(model, fused_loss=False)(idx, targets)
    assert fused.dtype == torch.float32
    assert abs(fused.item() - plain.item()) < 1e-2, (fused.item(), plain.item())


def test_explicit_attention_on_cpu_in_bf16(monkeypatch):
    """On a CPU in bf16, contexts up to 256 keys take the explicit attention path (faster there than SDPA's kernel):
    hidden states as SDPA's within bf16 rounding, with padding; finite gradients; attention dropout in training. A
    single query (a cached generation step) takes SDPA."""
    small = torch.zeros(1, 2, 1)
    assert M.explicit_is_faster(small.bfloat16(), 256) and not M.explicit_is_faster(small, 128)
    assert not M.explicit_is_faster(small[:, :1].bfloat16(), 256)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert M.explicit_is_faster(small, 128) and not M.explicit_is_faster(small, 257)
    torch.manual_seed(0)
    model = Transformer(tiny_model_config(pos_embedding='rope', norm='rms', mlp='swiglu', bias=False)).eval()
    idx, real = random_tokens(3, 12), torch.ones(3, 12, dtype=torch.long)
    real[1, 8:] = 0
    states = {}
    for path in ('default', 'explicit', 'sdpa'):
        if path != 'default':
            monkeypatch.setattr(M, 'explicit_is_faster', lambda x, n_keys, chosen=path == 'explicit': chosen)
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
            states[path] = [model.hidden_states(idx, attn_mask) for attn_mask in (None, real)]
    for default, explicit, sdpa in zip(states['default'], states['explicit'], states['sdpa']):
        assert torch.equal(default, explicit)
        torch.testing.assert_close(explicit, sdpa, atol=5e-2, rtol=5e-2)
    q, k, v = torch.randn(3, 2, 2, 8, 4).unbind(0)
    mask = M.attention_mask(model.config, 8, 0, None, 'cpu')
    y, weights = M.explicit_attention(q, k, v, mask)
    dropped, same_weights = M.explicit_attention(q, k, v, mask, 0.5)
    assert torch.equal(weights, same_weights) and not torch.equal(y, dropped)  # dropout on the weights, kept whole
    monkeypatch.undo()
    model = Transformer(tiny_model_config(pos_embedding='rope', dropout=0.1)).train()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss = model(idx, random_tokens(3, 12, seed=2))[1]
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.skipif(not runtime.cpu_compiler(), reason="torch.compile on a CPU needs a C++ compiler (g++ or $CXX)")
def test_compiled_bf16_step_with_rotary_has_the_eager_gradients():
    """torch.compile of the explicit path with rotary positions in bf16 (the main recipe's, compiled): gradients as
    eager's. Rotating the transposed heads gave non-finite ones from 64 positions of a 64-wide head (torch 2.13, a
    CPU); ~10 s, most of it compiling."""
    torch.manual_seed(0)
    model = Transformer(tiny_model_config(n_layer=1, n_head=1, n_embd=64, block_size=64, pos_embedding='rope',
                                          norm='rms', mlp='swiglu', bias=False))
    idx, targets = random_tokens(2, 64), random_tokens(2, 64, seed=2)
    grads = []
    for run in (model, torch.compile(model)):
        model.zero_grad()
        with torch.autocast('cpu', dtype=torch.bfloat16):
            run(idx, targets)[1].backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for eager, compiled in zip(*grads):
        torch.testing.assert_close(compiled, eager, atol=2e-2, rtol=2e-2)


def test_compile_on_a_cpu_without_a_compiler_is_a_one_line_error(monkeypatch):
    monkeypatch.setenv('CXX', 'no-such-compiler')
    cpu = runtime.setup_runtime('cpu', 'float32')
    with pytest.raises(runtime.UserError, match=r'needs a C\+\+ compiler'):
        runtime.wrap(Transformer(tiny_model_config()), cpu, use_compile=True)
    assert runtime.wrap(model := Transformer(tiny_model_config()), cpu) is model  # compile off: no compiler needed



KEPT_BYTES = """
import os, sys, torch, runtime
def rss():
    return int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
if sys.argv[1] == 'keep':
    runtime.setup_runtime('cpu', 'float32')
before = rss()
x = torch.ones(16 * 2**20)  # 64 MB written, then freed
del x
print(rss() - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != 'glibc' or not os.path.exists('/proc/self/statm'),
                    reason="freed memory is kept with glibc's malloc (Linux) only")
def test_a_cpu_run_keeps_freed_tensor_memory_for_the_next_ones():
    """setup_runtime on a CPU has malloc keep a freed 64 MB tensor's pages for the next tensors (glibc's default
    returns them to the system, and the next tensor faults them in again: runtime.keep_freed_memory)."""
    kept = {mode: int(subprocess.run([sys.executable, '-c', KEPT_BYTES, mode], cwd=REPO, capture_output=True,
                                     text=True, check=True).stdout) for mode in ('keep', 'default')}
    assert kept['keep'] > 48 * 2**20 and kept['default'] < 16 * 2**20, kept

def test_overfits_one_batch():
    """A tiny model memorises one batch: the whole forward/backward/optimizer path learns."""
    model = tiny_model(seed=5)
    model.train()
    idx = random_tokens(4, 16)
    x, y = idx[:, :-1], idx[:, 1:]
    optimizer = optim.configure_optimizers(model, 'adamw', learning_rate=1e-2, weight_decay=0.0, betas=(0.9, 0.95),
                                           device_type='cpu')
    for step in range(200):
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if loss.item() < 0.05:
            break
    assert loss.item() < 0.1, f"loss {loss.item():.3f} after {step + 1} steps"


OPTIONS = {'rope': dict(pos_embedding='rope'), 'rms': dict(norm='rms'), 'swiglu': dict(mlp='swiglu'),
           'relu2': dict(mlp='relu2'), 'qk_norm': dict(qk_norm=True), 'untied': dict(tie_embeddings=False),
           'no_bias': dict(bias=False), 'gqa': dict(n_kv_head=1), 'head_dim': dict(head_dim=8), 'all': MODERN}


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
@pytest.mark.parametrize('option', OPTIONS)
def test_every_option_trains(option, dtype):
    """A tiny model with each modern option (and all together) memorises one batch, in fp32 and under bf16
    autocast: from ~ln(64) = 4.16 to below 0.1 in 100 AdamW steps. Measured: 0.0003-0.0012 for each option alone,
    0.024 for rope and for all together (without absolute positions a token and the same token twice in a row at
    the start of a row read alike, so one target stays ambiguous), in both dtypes."""
    model = tiny_model(seed=5, **OPTIONS[option]).train()
    idx = random_tokens(4, 16)
    optimizer = optim.configure_optimizers(model, 'adamw', learning_rate=1e-2, weight_decay=0.0, betas=(0.9, 0.95),
                                           device_type='cpu')
    losses = []
    for _ in range(100):
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=dtype == 'bfloat16'):
            _, loss = model(idx[:, :-1], idx[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert abs(losses[0] - math.log(64)) < 0.1 and losses[-1] < 0.1, (losses[0], losses[-1])


# -----------------------------------------------------------------------------
# optimizer

def test_configure_optimizers_groups():
    """Every trainable parameter is in exactly one group (tied wte/lm_head once); decay = the matrices."""
    model = tiny_model()

    def adamw(**kwargs):
        return optim.configure_optimizers(model, 'adamw', learning_rate=1e-3, weight_decay=0.1, betas=(0.9, 0.95),
                                          device_type='cpu', **kwargs)
    optimizer = adamw()
    decay, no_decay = optimizer.param_groups
    assert decay['weight_decay'] == 0.1 and no_decay['weight_decay'] == 0.0
    ids = [id(p) for group in optimizer.param_groups for p in group['params']]
    unique = {id(p): p for p in model.parameters() if p.requires_grad}
    assert len(ids) == len(set(ids)) == len(unique)
    assert set(ids) == set(unique)
    assert model.lm_head.weight is model.transformer.wte.weight and id(model.lm_head.weight) in ids
    assert {id(p) for p in decay['params']} == {i for i, p in unique.items() if p.dim() >= 2}
    assert {id(p) for p in no_decay['params']} == {i for i, p in unique.items() if p.dim() < 2}
    assert len(no_decay['params']) > 0  # biases and LayerNorm weights
    assert optimizer.defaults['fused'] is (True if optim.fused_adamw_available('cpu') else None)
    assert not adamw(fused=False).defaults['fused']
    # frozen parameters stay out
    model.transformer.wpe.weight.requires_grad_(False)
    frozen = adamw()
    assert id(model.transformer.wpe.weight) not in {id(p) for g in frozen.param_groups for p in g['params']}


def test_fused_adamw_available_on_cpu():
    """This torch (>= 2.4) has a CPU fused AdamW, so training gets it by default."""
    assert optim.fused_adamw_available('cpu')


# -----------------------------------------------------------------------------
# generation and sampling

@pytest.mark.parametrize('arch', [{}, MODERN], ids=['gpt2', 'modern'])
@pytest.mark.parametrize('prompt_len,new', [(5, 8), (5, 20), (20, 4)])  # 25 and 24 > block_size 16: sliding window
def test_generate_cache_matches_no_cache(prompt_len, new, arch):
    """The KV-cached generate produces exactly the tokens of the uncached one, greedy and sampled (fp32), with
    rotary positions too, also after the window slides past block_size."""
    model = tiny_model(seed=6, **arch)
    idx = random_tokens(3, prompt_len)
    greedy = model.generate(idx, new, temperature=0)
    assert greedy.shape == (3, prompt_len + new) and torch.equal(greedy[:, :prompt_len], idx)
    assert torch.equal(greedy, model.generate(idx, new, temperature=0, use_cache=False))
    for top_k, top_p in ((None, None), (10, None), (None, 0.9), (20, 0.8)):
        with_cache = model.generate(idx, new, temperature=1.3, top_k=top_k, top_p=top_p,
                                    generator=torch.Generator().manual_seed(7))
        without = model.generate(idx, new, temperature=1.3, top_k=top_k, top_p=top_p, use_cache=False,
                                 generator=torch.Generator().manual_seed(7))
        assert torch.equal(with_cache, without), (top_k, top_p)


@pytest.mark.parametrize('arch', [{}, MODERN], ids=['gpt2', 'modern'])
def test_generate_greedy_is_argmax_of_forward(arch):
    """Greedy generate appends the argmax of the forward's last logits, step after step."""
    model = tiny_model(seed=6, **arch)
    idx = random_tokens(2, 4)
    out = model.generate(idx, 14, temperature=0)  # fills block_size 16 then slides by 2
    for t in range(4, out.size(1)):
        context = out[:, max(0, t - 16):t]
        assert torch.equal(model(context)[0][:, -1].argmax(-1), out[:, t])


@pytest.mark.parametrize('arch', [{}, MODERN], ids=['gpt2', 'modern'])
def test_kv_cache_offsets_positions(arch):
    """Hidden states computed a position at a time through the KV cache equal the full forward's (atol 1e-5): the
    cache position offsets the rotary angles (or the wpe rows) of the new query and key."""
    model = tiny_model(seed=7, **arch)
    idx = random_tokens(2, 16)
    with torch.no_grad():
        full = model.hidden_states(idx)
        cache = M.KVCache(model.config, 2, 'cpu', torch.float32)
        steps = [model.hidden_states(idx[:, :5], kv_cache=cache)] + [
            model.hidden_states(idx[:, t:t + 1], kv_cache=cache) for t in range(5, 16)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)


@pytest.mark.skipif(not sample.can_pack_linears(), reason='needs oneDNN with bfloat16 support')
def test_packed_linears_are_bit_identical_and_undone():
    """Inside sample.packed_linears every bf16 linear gives exactly F.linear's result (so sample.generate, which
    packs for long outputs, keeps its greedy tokens); on exit the modules are plain nn.Linear again."""
    model = tiny_model(seed=6).to(torch.bfloat16).eval()
    idx = random_tokens(2, 9)
    with torch.no_grad():
        plain = all_logits(model, idx)
        with sample.packed_linears(model):
            assert all('forward' in m.__dict__ for m in model.modules() if isinstance(m, torch.nn.Linear))
            packed = all_logits(model, idx)
    assert torch.equal(packed, plain)
    assert not any('forward' in m.__dict__ for m in model.modules())
    short = sample.generate(model, idx, 8, temperature=0)  # below the packing threshold
    long = sample.generate(model, idx, 20, temperature=0)  # packed; slides past block_size 16 too
    assert torch.equal(long[:, :short.size(1)], short)
    assert torch.equal(long, sample.generate(model, idx, 20, temperature=0, use_cache=False))
    fp32 = tiny_model(seed=6).eval()
    with sample.packed_linears(fp32):  # fp32 weights: nothing to pack, a no-op
        assert not any('forward' in m.__dict__ for m in fp32.modules())


def test_generate_refuses_bidirectional():
    """A bidirectional (encoder) model cannot generate left to right."""
    model = tiny_model(causal=False)
    with pytest.raises(ValueError, match='causal'):
        model.generate(random_tokens(1, 4), 3)


def test_sample_next_filters():
    """top_k=1 and a tiny top_p are argmax; top_k / top_p never pick a filtered token; logits are not modified."""
    logits = torch.randn(5, 64, generator=torch.Generator().manual_seed(0))
    original = logits.clone()
    g = torch.Generator().manual_seed(1)
    argmax = logits.argmax(-1, keepdim=True)
    assert torch.equal(sample_next(logits, temperature=0), argmax)
    for _ in range(5):
        assert torch.equal(sample_next(logits, top_k=1, generator=g), argmax)
        assert torch.equal(sample_next(logits, top_p=1e-6, generator=g), argmax)
    top3 = logits.topk(3, dim=-1).indices
    for _ in range(50):
        assert (sample_next(logits, top_k=3, generator=g) == top3).any(-1).all()
    # probabilities 0.5, 0.3, 0.2: top_p=0.7 keeps the first two (the second crosses 0.7)
    probs = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    drawn = {sample_next(probs, top_p=0.7, generator=g).item() for _ in range(200)}
    assert drawn == {0, 1}
    assert torch.equal(logits, original)


# -----------------------------------------------------------------------------
# FLOPs

def test_flops_and_mfu():
    """flops_per_token is positive; MFU is linear in tokens/iter and inverse in dt; the peak table lookup."""
    model = tiny_model()
    fpt = model.flops_per_token()
    assert fpt > 6 * model.num_params() > 0
    assert model.flops_per_token(T=8) < fpt
    mfu = model.estimate_mfu(1024, 0.5, 1e12)
    assert mfu > 0
    assert model.estimate_mfu(2048, 0.5, 1e12) == pytest.approx(2 * mfu)
    assert model.estimate_mfu(1024, 1.0, 1e12) == pytest.approx(mfu / 2)
    assert mfu == pytest.approx(fpt * 1024 / 0.5 / 1e12)
    assert peak_flops_for('NVIDIA H100 80GB HBM3') == 989e12
    assert peak_flops_for('NVIDIA A100-SXM4-40GB') == 312e12
    assert peak_flops_for('Some Unknown Accelerator') is None


def test_flops_count_the_matmuls_not_the_lookups():
    """An untied model does the same multiplications as its tied twin (its own wte is a lookup, not a matmul), so
    both count the same FLOPs; so does a model with rotary positions against learned ones (wpe is a lookup too)."""
    tied, untied = tiny_model(tie_embeddings=True), tiny_model(tie_embeddings=False)
    assert untied.num_params() == tied.num_params() + 64 * 32
    assert untied.flops_per_token() == tied.flops_per_token()
    assert tiny_model(pos_embedding='rope').flops_per_token() == tied.flops_per_token()
    multiplied = [tied.transformer.h, tied.transformer.ln_f, tied.lm_head]  # the LM head is the tied wte
    blocks = sum(p.numel() for m in multiplied for p in m.parameters())
    assert tied.flops_per_token() == 6 * blocks + 12 * 2 * 2 * 16 * 16


def test_model_config_from_dict():
    """A checkpoint's config dict round-trips; unknown keys are a one-line error."""
    config = tiny_model_config(causal=False)
    assert ModelConfig.from_dict(M.config_dict(config)) == config
    with pytest.raises(ValueError, match=r"unknown keys \['rotary'\]"):
        ModelConfig.from_dict({**M.config_dict(config), 'rotary': True})


# -----------------------------------------------------------------------------
# GPU

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_gpu_fused_loss_and_generate():
    """On CUDA: fused loss matches the plain path under bf16 autocast, and cached generate equals uncached."""
    model = tiny_model(seed=9).cuda()
    idx, targets = random_tokens(4, 16).cuda(), random_tokens(4, 16, seed=2).cuda()
    plain_model = with_config(model, fused_loss=False)
    with torch.autocast('cuda', dtype=torch.bfloat16):
        _, fused = model(idx, targets)
        _, plain = plain_model(idx, targets)
    assert abs(fused.item() - plain.item()) < 1e-2
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # true fp32 for the exact comparisons below
    try:
        _, a = model(idx, targets)
        _, b = plain_model(idx, targets)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        prompt = idx[:, :5]
        assert torch.equal(model.generate(prompt, 20, temperature=0),
                           model.generate(prompt, 20, temperature=0, use_cache=False))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    assert optim.fused_adamw_available('cuda')
