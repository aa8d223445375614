"""
One Transformer for GPT-style (causal) and encoder-style (bidirectional) language models.

    from model import ModelConfig, Transformer
    model = Transformer(ModelConfig(n_layer=4, n_head=4, n_embd=256, block_size=128))
    logits, loss = model(idx, targets)                      # (B, T, vocab) or None when fused, scalar
    out = model.generate(idx, max_new_tokens=50, top_k=40)  # KV-cached sampling
    logits = model.lm_head(model.hidden_states(idx))        # (B, T, vocab) at every position
    llama = ModelConfig(pos_embedding='rope', norm='rms', mlp='swiglu', bias=False, tie_embeddings=False)

Imports only torch and the standard library; finding and reading checkpoint files is hf.py's job. Parameter
names follow GPT-2 (wte, wpe, h, ln_f, attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj), so HF weights map by
name through the short tables in HF_NAMES: `Transformer.from_hf(config_dict, state_dict)`, and back by `to_hf`.
Every difference between GPT-2, BERT, Llama and Qwen3 is one ModelConfig field with GPT-2's behaviour as its
default, read in one place: search for its name to see its effect. BERT is post-LayerNorm blocks, a LayerNorm on
the embeddings, token-type embeddings, exact GELU and its heads (masked LM, pooler, next sentence); Llama is
rotary positions, RMSNorm, a SwiGLU MLP, no biases and an untied LM head; Qwen3 adds QK-norm. The heads are
small modules, each giving logits and its loss; forward picks the model's head in one place.
"""

import contextlib
import functools
import math
import re
from dataclasses import dataclass, asdict, fields

import torch
import torch.nn as nn
from torch.nn import functional as F

IGNORE_INDEX = -100  # the one "no loss here" label, for every task


@dataclass
class ModelConfig:
    block_size: int = 1024
    vocab_size: int = 50304  # GPT-2's 50257 padded up to a multiple of 64 for faster matmuls
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # bias in Linears and LayerNorms, like GPT-2; False is a bit faster (and Llama's choice)
    causal: bool = True  # False: bidirectional attention (encoder / masked LM)
    activation: str = 'gelu_tanh'  # mlp='gelu' and the MLM head: GPT-2's "gelu_new"; 'gelu' is the exact erf form (BERT)
    layer_norm_eps: float = 1e-5  # epsilon of every norm, LayerNorm or RMSNorm
    norm_position: str = 'pre'  # 'pre': norm before attention and MLP (GPT-2); 'post': after each residual add (BERT)
    embedding_norm: bool = False  # LayerNorm on the summed embeddings (BERT)
    type_vocab_size: int = 0  # token-type (segment) embeddings, 2 in BERT; 0: none
    pos_embedding: str = 'learned'  # 'learned': a wpe table (GPT-2, BERT); 'rope': rotary, no wpe (Su et al. 2021)
    rope_theta: float = 10000.0  # rope: base of the rotary frequencies
    norm: str = 'layer'  # 'layer': LayerNorm; 'rms': RMSNorm (Zhang & Sennrich 2019), as Llama
    mlp: str = 'gelu'  # 'gelu' (GPT-2, BERT), 'swiglu' (gated, Shazeer 2020; Llama), 'relu2' (ReLU squared, So et al. 2021)
    mlp_hidden: int = None  # MLP width; None: 4 * n_embd, or for swiglu 8/3 * n_embd up to a multiple of 64 (same params)
    n_kv_head: int = None  # key/value heads, fewer than n_head for grouped-query attention (Ainslie et al. 2023); None: n_head
    head_dim: int = None  # width of a head; None: n_embd // n_head (Qwen3 uses wider heads)
    qk_norm: bool = False  # RMSNorm over each head's q and k before attention (Dehghani et al. 2023), as Qwen3
    tie_embeddings: bool = True  # the LM (and MLM) head's weight is wte (Press & Wolf 2017); False: a separate weight
    fused_loss: bool = True  # LM / MLM loss by linear_cross_entropy, no (B, T, V) logits; False: the plain path
    mlm_head: bool = False  # masked-LM head (BERT): forward computes it only at positions that have a target
    pooler: bool = False  # dense + tanh on the first position (BERT's pooler)
    nsp_head: bool = False  # next-sentence prediction: 2-way Linear on the pooled first position (needs pooler)
    task_head: str = ''  # fine-tuning head: 'sequence' (one label per text), 'token' (one per token, NER); '': none
    num_labels: int = 0  # classes of the task head
    pooling: str = 'auto'  # 'sequence' head: 'auto' (last real token if causal, else first) or 'mean' of real tokens

    def __post_init__(self):
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {getattr(self, name)!r}")
        if self.nsp_head and not self.pooler:
            raise ValueError("nsp_head=True needs pooler=True: the next-sentence head reads the pooled first position")
        if bool(self.task_head) != (self.num_labels >= 2):
            raise ValueError(f"task_head must be 'sequence' or 'token' with num_labels >= 2, or '' with 0; got "
                             f"{self.task_head!r} with {self.num_labels}")
        if self.n_head % self.kv_heads or (self.head_dim is None and self.n_embd % self.n_head):
            raise ValueError(f"n_head={self.n_head} must be a multiple of n_kv_head={self.kv_heads}, and n_embd="
                             f"{self.n_embd} of n_head unless head_dim is given")

    @property
    def head_size(self):
        return self.head_dim or self.n_embd // self.n_head

    @property
    def kv_heads(self):
        return self.n_kv_head or self.n_head

    @classmethod
    def from_dict(cls, d):
        """Build from a checkpoint's dict, with a one-line error for keys this version does not know."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"model config has unknown keys {unknown}: the checkpoint was written by another version of model.py")
        return cls(**d)


CHOICES = {'norm_position': ('pre', 'post'), 'activation': ('gelu', 'gelu_tanh'), 'pooling': ('auto', 'mean'),
           'task_head': ('', 'sequence', 'token'), 'pos_embedding': ('learned', 'rope'), 'norm': ('layer', 'rms'),
           'mlp': ('gelu', 'swiglu', 'relu2')}


def make_norm(config, dim):
    """The one place that reads config.norm: LayerNorm (GPT-2, BERT) or RMSNorm (Llama; no mean, no bias)."""
    if config.norm == 'rms':
        return nn.RMSNorm(dim, eps=config.layer_norm_eps)
    return nn.LayerNorm(dim, eps=config.layer_norm_eps, bias=config.bias)


def rotary(config, past, T, device):
    """(cos, sin) (T, hs) of rotary embeddings for positions past .. past + T - 1, in float32 (Su et al. 2021).
    Frequencies as HF's Llama computes them, and laid out as its rotate_half wants: the same T x hs/2 angles
    twice, so q's first half pairs with its second half and HF weights need no permutation."""
    hs = config.head_size
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, hs, 2, dtype=torch.float, device=device) / hs))  # (hs/2,)
    angles = torch.arange(past, past + T, dtype=torch.float, device=device)[:, None] * inv_freq  # (T, hs/2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, hs)
    return angles.cos(), angles.sin()


def apply_rotary(x, cos, sin):
    """Rotate x (B, nh, T, hs) by the position angles: each pair (x[i], x[i + hs/2]) turns as a 2-D vector."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos.to(x.dtype) + torch.cat([-x2, x1], dim=-1) * sin.to(x.dtype)


class SelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.n_head, self.n_kv_head, self.hs = config.n_head, config.kv_heads, config.head_size
        # q, k, v in one matmul: rows [0, nh hs) are q, then n_kv_head * hs each for k and v
        self.c_attn = nn.Linear(config.n_embd, (self.n_head + 2 * self.n_kv_head) * self.hs, bias=config.bias)
        self.c_proj = nn.Linear(self.n_head * self.hs, config.n_embd, bias=config.bias)
        self.q_norm = nn.RMSNorm(self.hs, eps=config.layer_norm_eps) if config.qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(self.hs, eps=config.layer_norm_eps) if config.qk_norm else nn.Identity()
        self.resid_dropout = nn.Dropout(config.dropout)
        self.dropout, self.causal = config.dropout, config.causal
        self.keep_weights, self.weights = False, None  # set by Transformer.attention_maps: explicit path, weights kept

    def forward(self, x, attn_mask=None, kv_cache=None, layer=0, rope=None):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split([self.n_head * self.hs, self.n_kv_head * self.hs, self.n_kv_head * self.hs], dim=2)
        q = self.q_norm(q.view(B, T, self.n_head, self.hs)).transpose(1, 2)  # (B, nh, T, hs)
        k = self.k_norm(k.view(B, T, self.n_kv_head, self.hs)).transpose(1, 2)  # (B, nkv, T, hs)
        v = v.view(B, T, self.n_kv_head, self.hs).transpose(1, 2)  # (B, nkv, T, hs)
        if rope is not None:  # keys are cached rotated to their own position, so a cached step needs no redo
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        past = 0
        if kv_cache is not None:
            past = kv_cache.pos
            k, v = kv_cache.update(layer, k, v)  # (B, nkv, past + T, hs)
        if self.n_kv_head != self.n_head:  # grouped-query attention: each k, v head serves nh / nkv query heads
            k, v = (t.repeat_interleave(self.n_head // self.n_kv_head, dim=1) for t in (k, v))  # (B, nh, past + T, hs)
        is_causal = self.causal and attn_mask is None and past == 0
        mask = None
        if self.keep_weights or (not is_causal and (attn_mask is not None or (self.causal and T > 1))):
            mask = attention_mask(T, k.size(2), past, self.causal, attn_mask, x.device)
        if self.keep_weights:  # what SDPA computes, softmax(q k^T / sqrt(hs) + mask) v, with the weights kept
            att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))  # (B, nh, T, past + T)
            self.weights = att.masked_fill(~mask, float('-inf')).softmax(dim=-1)
            y = self.weights @ v  # (B, nh, T, hs)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                               dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, self.n_head * self.hs)  # (B, T, nh hs): heads side by side again
        return self.resid_dropout(self.c_proj(y))


def attention_mask(T_q, T_k, past, causal, key_padding, device):
    """Boolean mask (B or 1, 1, T_q, T_k), True = may attend. key_padding: (B, T_k) with 1 for real tokens."""
    mask = torch.ones(T_q, T_k, dtype=torch.bool, device=device)
    if causal:  # query i sits at absolute position past + i
        mask = torch.tril(mask, diagonal=past)
    mask = mask[None, None]
    if key_padding is not None:
        mask = mask & key_padding.bool()[:, None, None, :]
        # a padded query row may have nothing left to attend to; let it see itself so softmax stays finite
        itself = torch.zeros(T_q, T_k, dtype=torch.bool, device=device)
        itself[torch.arange(T_q), past + torch.arange(T_q)] = True
        mask = mask | itself
    return mask


def relu2(x):
    """relu(x)^2, Primer's activation (So et al. 2021), as modded-nanogpt uses it."""
    return F.relu(x).square()


class MLP(nn.Module):
    """c_proj(act(c_fc(x))), or with mlp='swiglu' c_proj(silu(c_gate(x)) * c_fc(x)): Llama's down(silu(gate) * up)."""

    def __init__(self, config):
        super().__init__()
        C = config.n_embd
        hidden = config.mlp_hidden or (64 * math.ceil(8 * C / 3 / 64) if config.mlp == 'swiglu' else 4 * C)
        self.c_fc = nn.Linear(C, hidden, bias=config.bias)
        if config.mlp == 'swiglu':
            self.c_gate = nn.Linear(C, hidden, bias=config.bias)
        self.act = {'gelu': functools.partial(F.gelu, approximate='tanh' if config.activation == 'gelu_tanh' else 'none'),
                    'swiglu': F.silu, 'relu2': relu2}[config.mlp]
        self.c_proj = nn.Linear(hidden, C, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        h = self.act(self.c_gate(x)) * self.c_fc(x) if hasattr(self, 'c_gate') else self.act(self.c_fc(x))
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    """Residual block: pre-norm (GPT-2, Llama) or post-norm (BERT, Vaswani et al. 2017)."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = make_norm(config, config.n_embd)
        self.attn = SelfAttention(config)
        self.ln_2 = make_norm(config, config.n_embd)
        self.mlp = MLP(config)
        self.post_norm = config.norm_position == 'post'

    def forward(self, x, attn_mask=None, kv_cache=None, layer=0, rope=None):
        if self.post_norm:
            x = self.ln_1(x + self.attn(x, attn_mask, kv_cache, layer, rope))
            return self.ln_2(x + self.mlp(x))
        x = x + self.attn(self.ln_1(x), attn_mask, kv_cache, layer, rope)
        x = x + self.mlp(self.ln_2(x))
        return x


# ----------------------------------------------------------------------------------------------------------------
# heads: each maps hidden states x (B, T, C) to logits, and its logits_and_loss(x, targets, ...) gives (logits, loss)

def vocab_loss(x, linear, targets, fused):
    """(logits or None, mean cross-entropy) of linear(x) for x (N, C) and targets (N,), IGNORE_INDEX skipped.
    fused: linear_cross_entropy, no (N, V) logits; a bias rides along as one more column, [x, 1] @ [W, b].T."""
    if fused:
        if linear.bias is None:
            return None, linear_cross_entropy(x, linear.weight, targets)
        return None, linear_cross_entropy(torch.cat([x, x.new_ones(x.size(0), 1)], dim=1),
                                          torch.cat([linear.weight, linear.bias[:, None]], dim=1), targets)
    logits = linear(x)  # (N, V)
    if logits.size(0) == 0:  # nothing to predict in this batch: zero loss, still connected to the graph
        return logits, logits.sum()
    return logits, F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX)


class LMHead(nn.Linear):
    """Next-token logits (B, T, V); its weight is wte unless tie_embeddings=False."""

    def __init__(self, config):
        super().__init__(config.n_embd, config.vocab_size, bias=False)

    def logits_and_loss(self, x, targets=None, fused=True):
        """Without targets: logits (B, 1, V) of the last position, all that sampling needs. With targets (B, T):
        the mean loss, and logits (B, T, V) or None when fused."""
        if targets is None:
            return self(x[:, [-1], :]), None
        logits, loss = vocab_loss(x.reshape(-1, x.size(-1)), self, targets.reshape(-1), fused)
        return (None if logits is None else logits.view(*x.shape[:2], -1)), loss


class MaskedLMHead(nn.Module):
    """BERT's masked-LM head: dense + activation + LayerNorm, then a decoder (weight wte, unless untied) + bias."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate='tanh' if config.activation == 'gelu_tanh' else 'none')
        self.ln = make_norm(config, config.n_embd)
        self.decoder = nn.Linear(config.n_embd, config.vocab_size, bias=True)

    def forward(self, x):
        return self.decoder(self.ln(self.gelu(self.dense(x))))

    def logits_and_loss(self, x, targets=None, fused=True):
        """With targets (B, T) the head runs only at the N positions whose target is not IGNORE_INDEX: their mean
        loss, and logits (N, V) in row-major order, or None when fused. Without: logits (B, T, V), loss None."""
        if targets is None:
            return self(x), None
        selected = targets != IGNORE_INDEX
        return vocab_loss(self.ln(self.gelu(self.dense(x[selected]))), self.decoder, targets[selected], fused)


class Pooler(nn.Module):
    """BERT's pooler: dense + tanh on the first position ([CLS]); what the next-sentence head (a Linear) reads."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.n_embd, config.n_embd, bias=True)

    def forward(self, x):
        return torch.tanh(self.dense(x[:, 0]))  # (B, C)


class ClassifierHead(nn.Linear):
    """The task head, under HF's name for it ('classifier'): num_labels logits, their cross-entropy weighted by
    label_weights (num_labels,) against class imbalance. task_head='token': one label a token (NER), logits
    (B, T, num_labels). 'sequence': one label a text, logits (B, num_labels) from one vector a text: the last real
    token for causal models (the only one that has read it all; padding on the right, attn_mask (B, T) 1 for real
    tokens), the first ([CLS]) for bidirectional ones, through BERT's pooler when the model has one; or, with
    pooling='mean', the mean of the real tokens."""

    def __init__(self, config):
        super().__init__(config.n_embd, config.num_labels)
        self.drop = nn.Dropout(config.dropout)
        self.pooling = ('token' if config.task_head == 'token' else 'mean' if config.pooling == 'mean'
                        else 'last' if config.causal else 'first')

    def forward(self, x, attn_mask=None, pooler=None):
        if self.pooling == 'mean':
            real = attn_mask[..., None].to(x.dtype) if attn_mask is not None else torch.ones_like(x[..., :1])  # (B, T, 1)
            x = (x * real).sum(1) / real.sum(1)  # (B, C)
        elif self.pooling == 'last':
            last = attn_mask.sum(1) - 1 if attn_mask is not None else torch.full_like(x[:, 0, 0], x.size(1) - 1, dtype=torch.long)
            x = x[torch.arange(x.size(0), device=x.device), last.long()]  # (B, C)
        elif self.pooling == 'first':
            x = pooler(x) if pooler is not None else x[:, 0]  # (B, C)
        return super().forward(self.drop(x))

    def logits_and_loss(self, x, targets=None, label_weights=None, attn_mask=None, pooler=None):
        logits = self(x, attn_mask, pooler)
        if targets is None:
            return logits, None
        weight = None if label_weights is None else label_weights.to(logits.device)
        return logits, F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
                                       weight=weight, ignore_index=IGNORE_INDEX)


class KVCache:
    """Keys and values of every layer for positions [0, pos), preallocated to block_size."""

    def __init__(self, config, batch_size, device, dtype):
        shape = (config.n_layer, batch_size, config.kv_heads, config.block_size, config.head_size)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.pos = 0  # positions already cached; advanced once per forward, after the last layer

    def update(self, layer, k, v):
        T = k.size(2)
        self.k[layer, :, :, self.pos:self.pos + T] = k
        self.v[layer, :, :, self.pos:self.pos + T] = v
        return self.k[layer, :, :, :self.pos + T], self.v[layer, :, :, :self.pos + T]


def can_pack_linears():
    """Whether this torch can run bf16 linears on weights prepacked by oneDNN (x86 CPUs with AVX-512 BF16 or AMX)."""
    try:
        return (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
                and torch.ops.mkldnn._is_mkldnn_bf16_supported() and hasattr(torch.ops.mkldnn, '_linear_pointwise'))
    except (AttributeError, RuntimeError):  # a build without these ops
        return False


@contextlib.contextmanager
def packed_linears(model, enabled=True):
    """Inside: every nn.Linear of model multiplies by a copy of its weight laid out once in oneDNN's blocked format.
    Plain F.linear on a CPU bf16 weight re-lays the weight out on every call, which for one row costs more than the
    product: the 50304 x 256 LM head takes 2.5 ms that way and 0.5 ms prepacked. Bit-identical to F.linear
    (tested); CPU bfloat16 weights only, a no-op otherwise. Packing all weights costs what a few decode steps
    save, so generate packs only for outputs of 16 tokens or more."""
    # every Linear that computes plain F.linear (the LM head too; not the task heads, which pool first); LoRALinear's
    # base is one, its update runs as is
    linears = [m for m in model.modules() if isinstance(m, nn.Linear) and type(m).forward is nn.Linear.forward]
    if not (enabled and linears and all(m.weight.device.type == 'cpu' and m.weight.dtype == torch.bfloat16
                                        for m in linears) and can_pack_linears()):
        yield
        return

    def packed_forward(weight, bias, x):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, 'none', [], '')

    try:
        for m in linears:  # an instance attribute shadows nn.Linear.forward until deleted
            m.forward = functools.partial(packed_forward, torch.ops.mkldnn._reorder_linear_weight(m.weight.detach()),
                                          None if m.bias is None else m.bias.detach())
        yield
    finally:
        for m in linears:
            m.__dict__.pop('forward', None)


class Transformer(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.config = config
        modules = dict(wte=nn.Embedding(config.vocab_size, config.n_embd))
        if config.pos_embedding == 'learned':  # else rotary angles in every attention layer, no table
            modules['wpe'] = nn.Embedding(config.block_size, config.n_embd)
        modules.update(drop=nn.Dropout(config.dropout), h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]))
        if config.type_vocab_size:
            modules['wtype'] = nn.Embedding(config.type_vocab_size, config.n_embd)  # token types (segments A/B)
        if config.embedding_norm:
            modules['ln_emb'] = make_norm(config, config.n_embd)
        if config.norm_position == 'pre':  # post-norm blocks end normalised already
            modules['ln_f'] = make_norm(config, config.n_embd)
        self.transformer = nn.ModuleDict(modules)
        self.lm_head = LMHead(config)
        if config.mlm_head:
            self.mlm_head = MaskedLMHead(config)
        if config.tie_embeddings:  # weight tying (Press & Wolf 2017)
            for head in [self.lm_head] + ([self.mlm_head.decoder] if config.mlm_head else []):
                head.weight = self.transformer.wte.weight
        if config.pooler:
            self.pooler = Pooler(config)
        if config.nsp_head:
            self.nsp_head = nn.Linear(config.n_embd, 2)  # next sentence from the pooled [CLS]: 0 = B follows A, 1 = random
        if config.task_head:
            self.classifier = ClassifierHead(config)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith('c_proj.weight'):  # GPT-2 paper sec. 2.3: scale residual projections by 1/sqrt(N)
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            torch.nn.init.zeros_(module.bias)

    def num_params(self, non_embedding=True):
        """Parameter count; position embeddings are left out by default, token embeddings are shared with the head."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and 'wpe' in self.transformer:
            n -= self.transformer.wpe.weight.numel()
        return n

    @torch.no_grad()
    def attention_maps(self, idx, attn_mask=None, token_type_ids=None):
        """Attention weights (n_layer, B, n_head, T, T) for idx (B, T) in eval mode, row i the weights of query i
        over the keys (zero where the causal or padding mask forbids). Computed by an explicit path that gives the
        same hidden states as scaled_dot_product_attention, which cannot return weights; used only here."""
        attns = [block.attn for block in self.transformer.h]
        try:
            for attn in attns:
                attn.keep_weights = True
            self.hidden_states(idx, attn_mask, token_type_ids=token_type_ids)
            return torch.stack([attn.weights for attn in attns])
        finally:
            for attn in attns:
                attn.keep_weights, attn.weights = False, None

    def hidden_states(self, idx, attn_mask=None, kv_cache=None, token_type_ids=None):
        """Final hidden states (B, T, n_embd). token_type_ids (B, T): segment ids, zeros when not given."""
        B, T = idx.size()
        past = kv_cache.pos if kv_cache is not None else 0
        if past + T > self.config.block_size:
            raise ValueError(f"sequence of {past + T} tokens is longer than block_size {self.config.block_size}")
        x = self.transformer.wte(idx)
        if 'wpe' in self.transformer:
            x = x + self.transformer.wpe.weight[past:past + T]  # positions past .. past + T - 1
        rope = None if 'wpe' in self.transformer else rotary(self.config, past, T, idx.device)  # offset by the cache
        if 'wtype' in self.transformer:
            x = x + self.transformer.wtype(token_type_ids if token_type_ids is not None else torch.zeros_like(idx))
        elif token_type_ids is not None:
            raise ValueError("token_type_ids given but this model has no token-type embeddings (type_vocab_size=0)")
        if 'ln_emb' in self.transformer:
            x = self.transformer.ln_emb(x)
        x = self.transformer.drop(x)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, attn_mask, kv_cache, layer, rope)
        if kv_cache is not None:
            kv_cache.pos += T
        return self.transformer.ln_f(x) if 'ln_f' in self.transformer else x

    def forward(self, idx, targets=None, attn_mask=None, token_type_ids=None, nsp_labels=None, label_weights=None):
        """(logits, loss) of the model's head, the one place that picks it: the task head if there is one (with
        targets (B,) or (B, T), cross-entropy weighted by label_weights), else the masked-LM head (plus the
        next-sentence loss when nsp_labels (B,) are given), else the LM head. See each head's logits_and_loss;
        with fused_loss the LM and MLM heads return no logits when there are targets."""
        x = self.hidden_states(idx, attn_mask, token_type_ids=token_type_ids)
        if self.config.task_head:
            return self.classifier.logits_and_loss(x, targets, label_weights, attn_mask, getattr(self, 'pooler', None))
        if not self.config.mlm_head:
            return self.lm_head.logits_and_loss(x, targets, self.config.fused_loss)
        logits, loss = self.mlm_head.logits_and_loss(x, targets, self.config.fused_loss)
        if nsp_labels is not None:
            nsp_loss = F.cross_entropy(self.nsp_head(self.pooler(x)).float(), nsp_labels)  # (B, 2) logits
            loss = nsp_loss if loss is None else loss + nsp_loss
        return logits, loss

    def crop_block_size(self, block_size):
        """Shrink the context (e.g. to fine-tune GPT-2 with a shorter block)."""
        assert block_size <= self.config.block_size
        self.config.block_size = block_size
        if 'wpe' in self.transformer:
            self.transformer.wpe.weight = nn.Parameter(self.transformer.wpe.weight[:block_size])

    def flops_per_token(self, T=None):
        """Training FLOPs per token (forward + backward), PaLM appendix B: 6N + 12 L H Q T."""
        cfg = self.config
        T = T or cfg.block_size
        return 6 * self.num_params() + 12 * cfg.n_layer * cfg.n_head * cfg.head_size * T

    def estimate_mfu(self, tokens_per_iter, dt, peak_flops, T=None):
        """Model FLOP utilisation: achieved FLOP/s over the given peak FLOP/s (common.PEAK_FLOPS or bench.py)."""
        return self.flops_per_token(T) * tokens_per_iter / dt / peak_flops

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, use_cache=True,
                 generator=None, stop_token=None):
        """Continue idx (B, T) by max_new_tokens. temperature 0 is greedy. With use_cache each new token costs one
        position; once the context passes block_size both paths slide the window and recompute it exactly."""
        if not self.config.causal:
            raise ValueError("generate needs a causal model; this one is bidirectional (use fill-mask instead)")
        B, T = idx.size()
        block_size = self.config.block_size
        tokens = idx.new_empty(B, T + max_new_tokens)  # the output, filled in place: no growing torch.cat
        tokens[:, :T] = idx
        cache = None
        with packed_linears(self, enabled=max_new_tokens >= 16):
            for _ in range(max_new_tokens):
                if not use_cache or T > block_size:  # the last block_size tokens, from scratch
                    cache, context = None, tokens[:, max(0, T - block_size):T]
                elif cache is None:  # fill the cache with the whole context; its last position gives the next token
                    cache, context = KVCache(self.config, B, idx.device, self.lm_head.weight.dtype), tokens[:, :T]
                else:  # one new position over the cached ones
                    context = tokens[:, T - 1:T]
                logits = self.lm_head(self.hidden_states(context, kv_cache=cache)[:, [-1], :])
                idx_next = sample_next(logits[:, -1, :], temperature, top_k, top_p, generator)
                tokens[:, T:T + 1] = idx_next
                T += 1
                if stop_token is not None and bool((idx_next == stop_token).all()):
                    break
        return tokens[:, :T]

    # ------------------------------------------------------------------------------------------------------------
    # HF weights: a config.json dict and a state dict in, and back out (hf.py finds and reads the files)

    @classmethod
    def from_hf(cls, hf_config, state_dict, dropout=0.0):
        """The model of an HF config.json dict and state dict, by its model_type: GPT2Model / GPT2LMHeadModel,
        BertModel / BertForMaskedLM / BertForPreTraining (the heads present in the weights are built),
        LlamaForCausalLM, Qwen3ForCausalLM. A one-line ValueError for a checkpoint model.py cannot represent."""
        arch = hf_config.get('model_type', 'gpt2')
        if arch not in HF_ARCHS:
            raise ValueError(f"model_type {arch!r} is not one model.py reads ({', '.join(HF_ARCHS)})")
        hf = {**hf_defaults(arch), **hf_config}
        for key, values in HF_DEFAULTS[arch].items():
            if isinstance(values, tuple) and hf[key] not in values:
                raise ValueError(f"{arch} checkpoint with {key}={hf[key]!r}: model.py supports {', '.join(map(repr, values))}")
        args = {**HF_ARCHS[arch], **{f: hf[k] for k, f in HF_CONFIG[arch].items() if k in hf}, 'dropout': dropout}
        if arch == 'gpt2':  # GPT2Model files lack the 'transformer.' prefix
            args['activation'] = 'gelu' if hf['activation_function'] == 'gelu' else 'gelu_tanh'
            state_dict = {k if k.startswith(('transformer.', 'lm_head.')) else f'transformer.{k}': v for k, v in state_dict.items()}
        elif arch == 'bert':  # the 'bert.' prefix of the models with heads; gamma / beta: TF-converted LayerNorm names
            args['activation'] = 'gelu' if hf['hidden_act'] == 'gelu' else 'gelu_tanh'
            state_dict = {re.sub(r'\.gamma$', '.weight', re.sub(r'\.beta$', '.bias', k.removeprefix('bert.'))): v
                          for k, v in state_dict.items()}
            args.update({head: any(k.startswith(prefix) for k in state_dict) for head, prefix in (
                ('mlm_head', 'cls.predictions.'), ('pooler', 'pooler.'), ('nsp_head', 'cls.seq_relationship.'))})
        else:  # llama, qwen3
            rope = hf.get('rope_parameters') or {**(hf.get('rope_scaling') or {}), 'rope_theta': hf.get('rope_theta', 1e4)}
            if rope.get('rope_type', rope.get('type', 'default')) != 'default':
                raise ValueError(f"{arch} checkpoint with scaled rotary embeddings ({rope}): model.py has plain rope only")
            args['rope_theta'] = rope['rope_theta']
            state_dict = {k if k.startswith(('model.', 'lm_head.')) else 'model.' + k: v for k, v in state_dict.items()}
        return load_hf_weights(cls(ModelConfig(**args)), state_dict, arch)

    def to_hf(self):
        """(config.json dict, state dict) of the transformers model this one equals, weight for weight (the inverse
        of from_hf): GPT2LMHeadModel; BertModel, BertForMaskedLM or BertForPreTraining, by the heads it has;
        LlamaForCausalLM; Qwen3ForCausalLM. A ValueError for a configuration none of them expresses."""
        c = self.config
        differ = {arch: [k for k, v in fixed.items() if getattr(c, k) != v] for arch, fixed in HF_ARCHS.items()}
        arch = min(differ, key=lambda a: (len(differ[a]), 'causal' in differ[a]))  # the one c matches, or the closest
        if differ[arch]:
            raise ValueError(f"no transformers architecture has this configuration; the closest, {arch}, needs "
                             + ', '.join(f"{k}={HF_ARCHS[arch][k]!r}" for k in differ[arch]))
        resolved = dict(mlp_hidden=self.transformer.h[0].mlp.c_fc.out_features, n_kv_head=c.kv_heads, head_dim=c.head_size)
        hf = {'model_type': arch, **hf_defaults(arch), **{k: resolved.get(f, getattr(c, f)) for k, f in HF_CONFIG[arch].items()}}
        state = {k: view.clone(memory_format=torch.contiguous_format) for k, (_, _, view) in hf_views(self, arch)[0].items()}
        if arch == 'gpt2':
            hf.update(architectures=['GPT2LMHeadModel'], activation_function='gelu_new' if c.activation == 'gelu_tanh' else 'gelu')
        elif arch == 'bert':
            kind = 'BertForPreTraining' if c.nsp_head else 'BertForMaskedLM' if c.mlm_head else 'BertModel'
            prefix = '' if kind == 'BertModel' else 'bert.'  # the trunk under 'bert.', the heads under 'cls.'
            state = {k if k.startswith('cls.') else prefix + k: v for k, v in state.items()}
            if not c.type_vocab_size:  # HF BERT always has token-type embeddings: one row of zeros adds nothing
                state[prefix + 'embeddings.token_type_embeddings.weight'] = torch.zeros(1, c.n_embd)
            hf.update(architectures=[kind], type_vocab_size=max(c.type_vocab_size, 1),
                      hidden_act='gelu' if c.activation == 'gelu' else 'gelu_new')
        else:
            hf.update(architectures=['LlamaForCausalLM' if arch == 'llama' else 'Qwen3ForCausalLM'],
                      rope_parameters={'rope_type': 'default', 'rope_theta': c.rope_theta})
        return hf, state


# The fixed fields of each architecture transformers knows (to_hf refuses a config that differs from all of them)...
HF_ARCHS = {
    'gpt2': dict(pos_embedding='learned', norm='layer', mlp='gelu', norm_position='pre', embedding_norm=False,
                 causal=True, bias=True, qk_norm=False, tie_embeddings=True, n_kv_head=None, head_dim=None,
                 type_vocab_size=0, mlm_head=False, pooler=False, task_head=''),
    'bert': dict(pos_embedding='learned', norm='layer', mlp='gelu', norm_position='post', embedding_norm=True,
                 causal=False, bias=True, qk_norm=False, tie_embeddings=True, n_kv_head=None, head_dim=None, task_head=''),
    'llama': dict(pos_embedding='rope', norm='rms', mlp='swiglu', norm_position='pre', embedding_norm=False,
                  causal=True, bias=False, qk_norm=False, type_vocab_size=0, mlm_head=False, pooler=False, task_head=''),
}
HF_ARCHS['qwen3'] = {**HF_ARCHS['llama'], 'qk_norm': True}
# ... their config.json keys -> our fields, read by from_hf and written by to_hf ...
BERT_LLAMA_CONFIG = dict(max_position_embeddings='block_size', vocab_size='vocab_size', num_hidden_layers='n_layer',
                      num_attention_heads='n_head', hidden_size='n_embd', intermediate_size='mlp_hidden')
HF_CONFIG = {'gpt2': dict(n_positions='block_size', vocab_size='vocab_size', n_layer='n_layer', n_head='n_head',
                          n_embd='n_embd', n_inner='mlp_hidden', layer_norm_epsilon='layer_norm_eps'),
             'bert': dict(BERT_LLAMA_CONFIG, layer_norm_eps='layer_norm_eps', type_vocab_size='type_vocab_size'),
             'llama': dict(BERT_LLAMA_CONFIG, num_key_value_heads='n_kv_head', head_dim='head_dim', rms_norm_eps='layer_norm_eps',
                           rope_theta='rope_theta', tie_word_embeddings='tie_embeddings')}
# ... transformers' defaults for keys a config.json may lack; a tuple: the values model.py can represent, default first ...
HF_DEFAULTS = {'gpt2': dict(activation_function=('gelu_new', 'gelu_pytorch_tanh', 'gelu'), layer_norm_epsilon=1e-5,
                            scale_attn_by_inverse_layer_idx=(False,)),
               'bert': dict(hidden_act=('gelu', 'gelu_new', 'gelu_pytorch_tanh'), layer_norm_eps=1e-12, type_vocab_size=2,
                            position_embedding_type=('absolute',)),
               'llama': dict(hidden_act=('silu',), rms_norm_eps=1e-6, tie_word_embeddings=False, use_sliding_window=(False,))}
HF_CONFIG['qwen3'], HF_DEFAULTS['qwen3'] = HF_CONFIG['llama'], HF_DEFAULTS['llama']
# ... and their weight names -> ours, module by module ('.weight' / '.bias' follow): hf=ours, or hf=ours:how, where
# T = stored transposed (GPT-2's Conv1D); q, k, v = that part of our fused c_attn (rows [0, nh hs), then n_kv_head hs
# each); skip = buffers we do not keep. First the modules of layer {i}, then the rest. BERT's names are without their
# 'bert.' prefix (as from_hf reads them), Llama's and Qwen3's (one table) with their 'model.'.
def name_table(hf_layer, layer_names, names):
    pairs = [(hf_layer + hf, 'transformer.h.{i}.' + ours) for hf, ours in (w.split('=') for w in layer_names.split())]
    pairs += [tuple(w.split('=')) for w in names.split()]
    return [(hf, *(ours.split(':') + [''])[:2]) for hf, ours in pairs]  # [(HF module, our module, how)]


HF_NAMES = {
    'gpt2': name_table('transformer.h.{i}.', """
        ln_1=ln_1  attn.c_attn=attn.c_attn:T  attn.c_proj=attn.c_proj:T  attn=-:skip  ln_2=ln_2
        mlp.c_fc=mlp.c_fc:T  mlp.c_proj=mlp.c_proj:T""", """
        transformer.wte=transformer.wte  transformer.wpe=transformer.wpe  transformer.ln_f=transformer.ln_f  lm_head=lm_head"""),
    'bert': name_table('encoder.layer.{i}.', """
        attention.self.query=attn.c_attn:q  attention.self.key=attn.c_attn:k  attention.self.value=attn.c_attn:v
        attention.output.dense=attn.c_proj  attention.output.LayerNorm=ln_1
        intermediate.dense=mlp.c_fc  output.dense=mlp.c_proj  output.LayerNorm=ln_2""", """
        embeddings.word_embeddings=transformer.wte  embeddings.position_embeddings=transformer.wpe
        embeddings.token_type_embeddings=transformer.wtype  embeddings.LayerNorm=transformer.ln_emb  embeddings=-:skip
        pooler.dense=pooler.dense  cls.predictions.transform.dense=mlm_head.dense  cls.predictions.transform.LayerNorm=mlm_head.ln
        cls.predictions=mlm_head.decoder  cls.predictions.decoder=mlm_head.decoder  cls.seq_relationship=nsp_head"""),
    'llama': name_table('model.layers.{i}.', """
        input_layernorm=ln_1  self_attn.q_proj=attn.c_attn:q  self_attn.k_proj=attn.c_attn:k  self_attn.v_proj=attn.c_attn:v
        self_attn.q_norm=attn.q_norm  self_attn.k_norm=attn.k_norm  self_attn.o_proj=attn.c_proj  self_attn.rotary_emb=-:skip
        post_attention_layernorm=ln_2  mlp.gate_proj=mlp.c_gate  mlp.up_proj=mlp.c_fc  mlp.down_proj=mlp.c_proj""", """
        model.embed_tokens=transformer.wte  model.norm=transformer.ln_f  lm_head=lm_head"""),
}
HF_NAMES['qwen3'] = HF_NAMES['llama']
QKV = ('q', 'k', 'v')


def qkv_rows(config, part):
    q, kv = config.n_head * config.head_size, config.kv_heads * config.head_size
    return {'q': slice(0, q), 'k': slice(q, q + kv), 'v': slice(q + kv, q + 2 * kv)}[part]


def hf_defaults(arch):
    return {k: v[0] if isinstance(v, tuple) else v for k, v in HF_DEFAULTS[arch].items()}


def hf_views(model, arch):
    """({HF key: (our key, how, our weight as HF lays it out: a view into it)}, [HF keys and modules we read past])
    for every weight of model, by HF_NAMES[arch]. Read past: the head weights that are wte itself (tied), and the
    modules marked skip."""
    ours = model.state_dict()  # tensors that share their storage with the parameters
    wte = ours['transformer.wte.weight'].data_ptr()
    views, ignored = {}, []
    for hf, our, how in HF_NAMES[arch]:
        for i in range(model.config.n_layer) if '{i}' in hf else [0]:
            for leaf in ('weight', 'bias'):
                key, name = (f"{n.replace('{i}', str(i))}.{leaf}" for n in (hf, our))
                if how == 'skip' or (name in ours and 'wte' not in name and ours[name].data_ptr() == wte):
                    ignored.append(key.rpartition('.')[0] if how == 'skip' else key)
                elif name in ours:
                    t = ours[name]
                    views[key] = name, how, t[qkv_rows(model.config, how)] if how in QKV else t.t() if how == 'T' else t
    return views, ignored


def load_hf_weights(model, state_dict, arch):
    """model, with the HF weights of state_dict copied in by HF_NAMES[arch]; a one-line ValueError for a weight that
    is unknown, misshapen or missing."""
    views, ignored = hf_views(model, arch)
    loaded = set()
    for key, value in state_dict.items():
        if key in views:
            name, how, view = views[key]
            if value.shape != view.shape:
                raise ValueError(f"weight {key!r} has shape {tuple(value.shape)}, expected {tuple(view.shape)}")
            with torch.no_grad():
                view.copy_(value)
            loaded.add((name, how))
        elif key not in ignored and key.rpartition('.')[0] not in ignored:
            raise ValueError(f"unexpected weight {key!r}: not a {arch} checkpoint model.py can read")
    missing = sorted({name for name, how, _ in views.values() if (name, how) not in loaded})
    if missing:
        raise ValueError(f"no weights for {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}: incomplete {arch} checkpoint")
    return model


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update (Hu et al. 2021, "LoRA"): y = W x + (alpha / r) B A x.
    B starts at zero, so training starts from the base model exactly."""

    def __init__(self, base, rank, alpha, dropout=0.0):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))  # (r, in)
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))  # (out, r)
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear initialises its weight
        self.scale = alpha / rank
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.base(x) + (self.dropout(x) @ self.lora_a.t() @ self.lora_b.t()) * self.scale


def add_lora(model, rank=8, alpha=16, dropout=0.0, targets=('c_attn', 'c_proj', 'c_fc', 'c_gate')):
    """Freeze every weight of model and wrap its attention and MLP Linears (the names in targets) in LoRALinear.
    Unfreeze what must train in full (the task head) afterwards."""
    model.requires_grad_(False)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if name in targets and isinstance(child, nn.Linear):
                setattr(module, name, LoRALinear(child, rank, alpha, dropout))
    return model


def merged_state_dict(model, state=None):
    """model's state dict (or state, the same names' full tensors, e.g. gathered from shards) with every LoRA update
    folded into its base weight, under the names of the plain model: what a checkpoint holds, loadable without LoRA."""
    state = dict(model.state_dict() if state is None else state)
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            prefix = f'{name}.' if name else ''
            lora_a, lora_b = state.pop(prefix + 'lora_a'), state.pop(prefix + 'lora_b')
            state[prefix + 'weight'] = (state.pop(prefix + 'base.weight') + (lora_b @ lora_a) * module.scale).detach()
            if prefix + 'base.bias' in state:
                state[prefix + 'bias'] = state.pop(prefix + 'base.bias').detach()
    return state


def linear_cross_entropy(x, weight, targets, chunk_rows=None):
    """cross_entropy(x @ weight.T, targets) averaged over targets != IGNORE_INDEX, without the (N, V) logits.
    Rows go through in chunks small enough to stay in cache; when gradients are wanted they are computed in the
    same pass, since the gradient of the loss w.r.t. the logits is known once the softmax is (softmax - onehot).
    The idea of Liger-Kernel's fused linear cross-entropy. Under autocast the matmuls and the softmax output use
    the autocast dtype (the softmax itself accumulates in float32), as the plain autocast path would."""
    device_type = x.device.type
    dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else x.dtype
    chunk_rows = chunk_rows or max(1, (1 << 24) // weight.size(0))  # ~16M logits a chunk: measured best on CPU
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return LinearCrossEntropy.apply(x, weight, targets, chunk_rows, dtype)
    return _linear_cross_entropy_chunks(x, weight, targets, chunk_rows, dtype, with_grads=False)[0]


def _linear_cross_entropy_chunks(x, weight, targets, chunk_rows, dtype, with_grads):
    with torch.autocast(x.device.type, enabled=False):
        valid = targets != IGNORE_INDEX
        n_valid = valid.sum().clamp(min=1)
        safe_targets = torch.where(valid, targets, 0)
        w = weight.to(dtype)
        loss = torch.zeros((), dtype=torch.float32, device=x.device)
        grad_x = torch.empty_like(x) if with_grads else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=x.device) if with_grads else None
        for start in range(0, x.size(0), chunk_rows):
            rows = slice(start, start + chunk_rows)
            xc = x[rows].to(dtype)
            probs = torch.softmax(xc @ w.t(), dim=-1)  # (n, V)
            target_prob = probs.gather(1, safe_targets[rows, None]).squeeze(1).float()
            loss -= (torch.log(target_prob.clamp(min=1e-30)) * valid[rows]).sum()
            if with_grads:
                grad = probs  # d loss / d logits = (softmax - onehot) / n_valid, built in place
                grad[torch.arange(grad.size(0), device=x.device), safe_targets[rows]] -= 1.0
                grad.mul_((valid[rows] / n_valid).to(dtype)[:, None])
                grad_x[rows] = (grad @ w).to(x.dtype)
                grad_w += (grad.t() @ xc).float()
        return loss / n_valid, grad_x, grad_w


class LinearCrossEntropy(torch.autograd.Function):

    @staticmethod
    def forward(ctx, x, weight, targets, chunk_rows, dtype):
        loss, grad_x, grad_w = _linear_cross_entropy_chunks(x, weight, targets, chunk_rows, dtype, with_grads=True)
        ctx.save_for_backward(grad_x, grad_w.to(weight.dtype))
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        grad_x, grad_w = ctx.saved_tensors
        return grad_x * grad_output, grad_w * grad_output, None, None, None


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """One token id per row (B, 1) from logits (B, V), of any float dtype (sampling runs in float32)."""
    if temperature == 0:  # the argmax of bf16 logits is that of their exact float32 copy
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None:
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
        logits[logits < v[:, [-1]]] = -float('inf')
    if top_p is not None and top_p < 1.0:  # nucleus sampling (Holtzman et al. 2019)
        sorted_logits, sorted_idx = torch.sort(logits, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
        drop = cumulative - torch.softmax(sorted_logits, dim=-1) > top_p  # keep the token that crosses top_p
        sorted_logits[drop] = -float('inf')
        logits = torch.full_like(logits, -float('inf')).scatter(1, sorted_idx, sorted_logits)
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


def config_dict(config):
    return asdict(config)
