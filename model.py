"""
One Transformer for GPT-style (causal) and encoder-style (bidirectional) language models: the network alone.

    from model import ModelConfig, Transformer
    model = Transformer(ModelConfig(n_layer=4, n_head=4, n_embd=256, block_size=128))
    logits, loss = model(idx, targets)                      # (B, T, vocab) or None when fused, scalar
    out = model.generate(idx, max_new_tokens=50, top_k=40)  # KV-cached sampling
    logits = model.lm_head(model.hidden_states(idx))        # (B, T, vocab) at every position
    llama = ModelConfig(pos_embedding='rope', norm='rms', mlp='swiglu', bias=False, tie_embeddings=False)

Imports only torch and the standard library. Parameter names follow GPT-2 (wte, wpe, h, ln_f, attn.c_attn,
attn.c_proj, mlp.c_fc, mlp.c_proj), so HF weights map by name (hf.py holds the tables, from_hf and to_hf).
Every difference between GPT-2, BERT, Llama and Qwen3 is one ModelConfig field with GPT-2's behaviour as its
default, read in one place: search for its name to see its effect. A field declares its choices or range (option),
which configurator.py checks for every script. BERT is post-LayerNorm blocks, a LayerNorm on the embeddings,
token-type embeddings, exact GELU and its heads (masked LM, pooler, next sentence); Llama is rotary positions,
RMSNorm, a SwiGLU MLP, no biases and an untied LM head; Qwen3 adds QK-norm. The heads are small modules, each
giving logits and its loss; forward picks the model's head in one place.
"""

import functools
import math
from collections import namedtuple
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn as nn
from torch.nn import functional as F

IGNORE_INDEX = -100  # the one "no loss here" label, for every task


def option(default, choices=None, low=None, above=None, below=None, changeable=False, settable=True):
    """A ModelConfig field and what configurator.py checks of it: one of choices, or low <= x (above < x) and
    x < below. changeable: may differ when a run is resumed (train.py); settable=False: no script setting of its
    own, the scripts derive it (the vocabulary from the data, the heads from the objective or the task)."""
    bounds = {k: v for k, v in dict(choices=choices, low=low, above=above, below=below).items() if v is not None}
    return field(default=default, metadata={**bounds, 'changeable': changeable, 'settable': settable})


@dataclass
class ModelConfig:
    block_size: int = option(1024, low=1)
    vocab_size: int = option(50304, low=1, settable=False)  # GPT-2's 50257 up to a multiple of 64: faster matmuls
    n_layer: int = option(12, low=1)
    n_head: int = option(12, low=1)
    n_embd: int = option(768, low=1)
    dropout: float = option(0.0, low=0, below=1, changeable=True)
    bias: bool = True  # bias in Linears and LayerNorms, like GPT-2; False is a bit faster (and Llama's choice)
    causal: bool = True  # False: bidirectional attention (encoder / masked LM)
    # mlp='gelu' and the MLM head: GPT-2's "gelu_new"; 'gelu' is the exact erf form (BERT)
    activation: str = option('gelu_tanh', choices=('gelu_tanh', 'gelu'))
    layer_norm_eps: float = option(1e-5, above=0)  # epsilon of every norm, LayerNorm or RMSNorm
    # 'pre': norm before attention and MLP (GPT-2); 'post': after each residual add (BERT)
    norm_position: str = option('pre', choices=('pre', 'post'))
    embedding_norm: bool = False  # LayerNorm on the summed embeddings (BERT)
    type_vocab_size: int = option(0, low=0, settable=False)  # token-type (segment) embeddings, 2 in BERT; 0: none
    # 'learned': a wpe table (GPT-2, BERT); 'rope': rotary, no wpe (Su et al. 2021)
    pos_embedding: str = option('learned', choices=('learned', 'rope'))
    rope_theta: float = option(10000.0, above=0)  # rope: base of the rotary frequencies
    norm: str = option('layer', choices=('layer', 'rms'))  # 'rms': RMSNorm (Zhang & Sennrich 2019), as Llama
    # 'gelu' (GPT-2, BERT), 'swiglu' (gated, Shazeer 2020; Llama), 'relu2' (ReLU squared, So et al. 2021)
    mlp: str = option('gelu', choices=('gelu', 'swiglu', 'relu2'))
    mlp_hidden: int = option(None, low=1)  # MLP width; None: 4 * n_embd, or for swiglu 8/3 * n_embd up to a multiple of 64
    n_kv_head: int = option(None, low=1)  # key/value heads < n_head: grouped-query attention (Ainslie et al. 2023)
    head_dim: int = option(None, low=1)  # width of a head; None: n_embd // n_head (Qwen3 uses wider heads)
    qk_norm: bool = False  # RMSNorm over each head's q and k before attention (Dehghani et al. 2023), as Qwen3
    tie_embeddings: bool = True  # the LM (and MLM) head's weight is wte (Press & Wolf 2017); False: a separate weight
    fused_loss: bool = option(True, changeable=True)  # LM / MLM loss by linear_cross_entropy, no (B, T, V) logits
    mlm_head: bool = option(False, settable=False)  # masked-LM head (BERT), computed only at positions with a target
    pooler: bool = option(False, settable=False)  # dense + tanh on the first position (BERT's pooler)
    nsp_head: bool = option(False, settable=False)  # next sentence: a 2-way Linear on the pooled first position
    # fine-tuning head: 'sequence' (one label per text), 'token' (one per token, NER), 'span' (start / end logits
    # per token, extractive QA: num_labels=2); '': none
    task_head: str = option('', choices=('', 'sequence', 'token', 'span'), settable=False)
    num_labels: int = option(0, low=0, settable=False)  # classes of the task head
    # 'sequence' head: 'auto' (last real token if causal, else first) or 'mean' of real tokens
    pooling: str = option('auto', choices=('auto', 'mean'), settable=False)

    def __post_init__(self):
        for f in fields(self):
            if 'choices' in f.metadata and getattr(self, f.name) not in f.metadata['choices']:
                raise ValueError(f"{f.name} must be one of {', '.join(map(repr, f.metadata['choices']))}, got "
                                 f"{getattr(self, f.name)!r}")
        if self.nsp_head and not self.pooler:
            raise ValueError("nsp_head=True needs pooler=True: the next-sentence head reads the pooled first position")
        if bool(self.task_head) != (self.num_labels >= 2):
            raise ValueError(f"task_head must be 'sequence', 'token' or 'span' with num_labels >= 2, or '' with 0; got "
                             f"{self.task_head!r} with {self.num_labels}")
        if self.head_dim is None and self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}: pick sizes where "
                             f"n_embd / n_head is a whole head size (e.g. 256 / 4), or give head_dim")
        if self.n_head % self.kv_heads:
            raise ValueError(f"n_head={self.n_head} must be a multiple of n_kv_head={self.kv_heads}")
        if self.pos_embedding == 'rope' and (self.head_size % 2 or self.head_size < 2):
            raise ValueError(f"rotary positions turn a head's dimensions in pairs: a head of {self.head_size} needs to "
                             f"be even (change n_embd, n_head or head_dim)")

    @property
    def head_size(self):
        return self.head_dim or self.n_embd // self.n_head

    @property
    def kv_heads(self):
        return self.n_kv_head or self.n_head

    @classmethod
    def from_dict(cls, d):
        """Build from a checkpoint's dict, with a one-line error for keys this version does not know."""
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"model config has unknown keys {unknown}: the checkpoint was written by another version of model.py")
        return cls(**d)


def config_dict(config):
    return asdict(config)


class RMSNorm(nn.RMSNorm):
    """nn.RMSNorm with its weight in the input's dtype: under bf16 autocast q and k arrive in bf16 (QK-norm), and an
    fp32 weight would leave torch's fused kernel. In fp32 the same as nn.RMSNorm (and HF Llama's)."""

    def forward(self, x):
        return F.rms_norm(x, self.normalized_shape, self.weight.to(x.dtype), self.eps)


def make_norm(config, dim):
    """The one place that reads config.norm: LayerNorm (GPT-2, BERT) or RMSNorm (Llama; no mean, no bias)."""
    if config.norm == 'rms':
        return RMSNorm(dim, eps=config.layer_norm_eps)
    return nn.LayerNorm(dim, eps=config.layer_norm_eps, bias=config.bias)


def rotary(config, past, T, device):
    """(cos, sin) (T, 1, hs) of rotary embeddings for positions past .. past + T - 1, in float32 (Su et al. 2021).
    Frequencies as HF's Llama computes them, and laid out as its rotate_half wants: the same T x hs/2 angles
    twice, so q's first half pairs with its second half and HF weights need no permutation."""
    hs = config.head_size
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, hs, 2, dtype=torch.float, device=device) / hs))  # (hs/2,)
    angles = torch.arange(past, past + T, dtype=torch.float, device=device)[:, None] * inv_freq  # (T, hs/2)
    angles = torch.cat([angles, angles], dim=-1)[:, None]  # (T, 1, hs): broadcast over the heads
    return angles.cos(), angles.sin()


def apply_rotary(x, cos, sin):
    """Rotate x (B, T, nh, hs) by the position angles: each pair (x[i], x[i + hs/2]) turns as a 2-D vector."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos.to(x.dtype) + torch.cat([-x2, x1], dim=-1) * sin.to(x.dtype)


# ----------------------------------------------------------------------------------------------------------------
# who attends to whom: one small function per case, combined in attention_mask, the one definition for the full
# forward and for every cached generation step alike; sdpa_fast_path says when SDPA's own masking equals it

def causal_mask(T, past, device):
    """(T, past + T) bool, True = may attend: query i sits at position past + i (the cache offset) and sees the
    keys up to its own position."""
    return torch.ones(T, past + T, dtype=torch.bool, device=device).tril(diagonal=past)


def padding_mask(mask, key_padding, past):
    """mask (T, T_k) with the padded keys (key_padding (B, T_k): 1 for real tokens) taken out, (B, 1, T, T_k).
    A padded query may have nothing left to attend to: it sees itself, so its softmax stays finite."""
    T = mask.size(0)
    itself = torch.zeros_like(mask)
    itself[torch.arange(T), past + torch.arange(T)] = True
    return (mask & key_padding.bool()[:, None, None, :]) | itself


def attention_mask(config, T, past, key_padding, device):
    """(1 or B, 1, T, past + T) bool, True = may attend: causal (or all keys, bidirectional), minus padding."""
    mask = causal_mask(T, past, device) if config.causal else torch.ones(T, past + T, dtype=torch.bool, device=device)
    return mask[None, None] if key_padding is None else padding_mask(mask, key_padding, past)


def sdpa_fast_path(config, T, past, key_padding):
    """How scaled_dot_product_attention computes attention_mask's mask by itself: 'causal' (is_causal=True: the
    causal mask of a sequence from position 0), 'none' (every key: bidirectional, or a single causal query after the
    cache), or None (it is given the mask). A new pattern in attention_mask must change this too."""
    if key_padding is not None:
        return None
    if not config.causal or T == 1:
        return 'none'
    return 'causal' if past == 0 else None


def explicit_attention(q, k, v, mask, dropout_p=0.0):
    """(y, weights): what SDPA computes, softmax(q k^T / sqrt(hs) + mask) v (dropout_p on the weights), with the
    weights kept (attention_maps)."""
    B, nh, T, hs = q.shape
    # the mask as 0 / -inf added inside one baddbmm with the scale: no pass over the scores to scale or to mask them
    bias = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill_(~mask, float('-inf'))
    bias = (bias if bias.size(0) == 1 else bias.expand(B, nh, -1, -1)).flatten(0, 1)  # (1 or B nh, T, past + T)
    att = torch.baddbmm(bias, q.reshape(B * nh, T, hs), k.reshape(B * nh, -1, hs).transpose(1, 2), alpha=hs ** -0.5)
    weights = att.softmax(dim=-1).view(B, nh, T, -1)  # (B, nh, T, past + T)
    return (F.dropout(weights, dropout_p) if dropout_p else weights) @ v, weights


def explicit_is_faster(x, n_keys):
    """On a CPU in bf16, SDPA's kernel took 2.3x the explicit path's time over 128 keys (forward + backward; even at
    256, 3x faster at 1,024; docs/results.md, round 10): short contexts there take the explicit path, compiled too.
    Not a single query x (B, 1, C), a cached generation step: SDPA needs no mask there, 1.4-1.8x the tokens/s
    (round 13)."""
    bf16 = x.dtype == torch.bfloat16 or (torch.is_autocast_enabled('cpu')
                                         and torch.get_autocast_dtype('cpu') == torch.bfloat16)
    return x.device.type == 'cpu' and bf16 and n_keys <= 256 and x.size(1) > 1


# what every layer's attention reads, made once per forward by hidden_states: mask (attention_mask), fast
# (sdpa_fast_path), rope ((cos, sin) or None), cache (a KVCache or None), weights (a list for attention_maps or
# None), explicit (explicit_attention instead of SDPA: for the weights, or where it is faster)
Attend = namedtuple('Attend', 'mask fast rope cache weights explicit')


class SelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.n_head, self.n_kv_head, self.hs = config.n_head, config.kv_heads, config.head_size
        # q, k, v in one matmul: rows [0, nh hs) are q, then n_kv_head * hs each for k and v
        self.c_attn = nn.Linear(config.n_embd, (self.n_head + 2 * self.n_kv_head) * self.hs, bias=config.bias)
        self.c_proj = nn.Linear(self.n_head * self.hs, config.n_embd, bias=config.bias)
        self.q_norm = RMSNorm(self.hs, eps=config.layer_norm_eps) if config.qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.hs, eps=config.layer_norm_eps) if config.qk_norm else nn.Identity()
        self.resid_dropout = nn.Dropout(config.dropout)
        self.dropout = config.dropout

    def forward(self, x, attend, layer):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split([self.n_head * self.hs, self.n_kv_head * self.hs, self.n_kv_head * self.hs], dim=2)
        q = self.q_norm(q.view(B, T, self.n_head, self.hs))  # (B, T, nh, hs)
        k = self.k_norm(k.view(B, T, self.n_kv_head, self.hs))  # (B, T, nkv, hs)
        # rotated before the heads are transposed: rotating the transposed views gave non-finite bf16 gradients
        # under torch.compile on a CPU (torch 2.13, docs/results.md round 11). Keys are cached rotated to their own
        # position, so a cached step needs no redo.
        if attend.rope is not None:
            q, k = apply_rotary(q, *attend.rope), apply_rotary(k, *attend.rope)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v.view(B, T, self.n_kv_head, self.hs)))  # (B, nh or nkv, T, hs)
        if attend.cache is not None:
            k, v = attend.cache.update(layer, k, v)  # (B, nkv, past + T, hs)
        if self.n_kv_head != self.n_head:  # grouped-query attention: each k, v head serves nh / nkv query heads
            k, v = (t.repeat_interleave(self.n_head // self.n_kv_head, dim=1) for t in (k, v))  # (B, nh, past + T, hs)
        dropout_p = self.dropout if self.training else 0.0
        if attend.explicit:
            y, weights = explicit_attention(q, k, v, attend.mask, dropout_p)
            if attend.weights is not None:
                attend.weights.append(weights)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=None if attend.fast else attend.mask,
                                               is_causal=attend.fast == 'causal', dropout_p=dropout_p)
        y = y.transpose(1, 2).contiguous().view(B, T, self.n_head * self.hs)  # (B, T, nh hs): heads side by side again
        return self.resid_dropout(self.c_proj(y))


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

    def forward(self, x, attend, layer):
        if self.post_norm:
            x = self.ln_1(x + self.attn(x, attend, layer))
            return self.ln_2(x + self.mlp(x))
        x = x + self.attn(self.ln_1(x), attend, layer)
        return x + self.mlp(self.ln_2(x))


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
    pooling='mean', the mean of the real tokens. 'span': start and end logits (B, T, 2) a token (extractive QA),
    padding masked out; targets (B, 2) the start and end positions, the loss the mean of their cross-entropies
    (Devlin et al. 2019, sec. 4.2)."""

    def __init__(self, config):
        super().__init__(config.n_embd, config.num_labels)
        self.drop = nn.Dropout(config.dropout)
        self.span = config.task_head == 'span'
        self.pooling = ('token' if config.task_head in ('token', 'span') else 'mean' if config.pooling == 'mean'
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
        if self.span and attn_mask is not None:
            logits = logits.masked_fill(attn_mask[..., None] == 0, -1e4)  # (B, T, 2): no span starts in padding
        if targets is None:
            return logits, None
        if self.span:
            return logits, sum(F.cross_entropy(logits[..., i].float(), targets[:, i], ignore_index=IGNORE_INDEX)
                               for i in (0, 1)) / 2
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
        weights = []
        self.hidden_states(idx, attn_mask, token_type_ids=token_type_ids, attention_weights=weights)
        return torch.stack(weights)

    def hidden_states(self, idx, attn_mask=None, kv_cache=None, token_type_ids=None, attention_weights=None):
        """Final hidden states (B, T, n_embd). attn_mask (B, T): 1 for real tokens (padding on the right);
        token_type_ids (B, T): segment ids, zeros when not given; attention_weights: a list that receives every
        layer's attention weights (the explicit path)."""
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
        explicit = attention_weights is not None or explicit_is_faster(x, past + T)
        fast = None if explicit else sdpa_fast_path(self.config, T, past, attn_mask)
        mask = None if fast else attention_mask(self.config, T, past, attn_mask, idx.device)
        attend = Attend(mask, fast, rope, kv_cache, attention_weights, explicit)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, attend, layer)
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
        """Training FLOPs per token (forward + backward), PaLM appendix B: 6N + 12 L H Q T, N the weights that
        multiply: an embedding table looked up costs none (wte counts once when the LM head shares it)."""
        cfg = self.config
        T = T or cfg.block_size
        looked_up = sum(m.weight.numel() for m in self.transformer.values()
                        if isinstance(m, nn.Embedding) and m.weight is not self.lm_head.weight)
        return 6 * (self.num_params(non_embedding=False) - looked_up) + 12 * cfg.n_layer * cfg.n_head * cfg.head_size * T

    def estimate_mfu(self, tokens_per_iter, dt, peak_flops, T=None):
        """Model FLOP utilisation: achieved FLOP/s over the given peak FLOP/s (runtime.PEAK_FLOPS or bench.py)."""
        return self.flops_per_token(T) * tokens_per_iter / dt / peak_flops

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, use_cache=True,
                 generator=None, stop_token=None, vocab_limit=None):
        """Continue idx (B, T) by max_new_tokens. temperature 0 is greedy. With use_cache each new token costs one
        position; once the context passes block_size both paths slide the window and recompute it exactly.
        vocab_limit: only ids below it are drawn (the tokenizer's; the rest of the embedding table is padding)."""
        if not self.config.causal:
            raise ValueError("generate needs a causal model; this one is bidirectional (use fill-mask instead)")
        B, T = idx.size()
        block_size = self.config.block_size
        tokens = idx.new_empty(B, T + max_new_tokens)  # the output, filled in place: no growing torch.cat
        tokens[:, :T] = idx
        cache = None
        for _ in range(max_new_tokens):
            if not use_cache or T > block_size:  # the last block_size tokens, from scratch
                cache, context = None, tokens[:, max(0, T - block_size):T]
            elif cache is None:  # fill the cache with the whole context; its last position gives the next token
                cache, context = KVCache(self.config, B, idx.device, self.lm_head.weight.dtype), tokens[:, :T]
            else:  # one new position over the cached ones
                context = tokens[:, T - 1:T]
            logits = self.lm_head(self.hidden_states(context, kv_cache=cache)[:, [-1], :])
            idx_next = sample_next(logits[:, -1, :vocab_limit], temperature, top_k, top_p, generator)
            tokens[:, T:T + 1] = idx_next
            T += 1
            if stop_token is not None and bool((idx_next == stop_token).all()):
                break
        return tokens[:, :T]


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
        sorted_probs = torch.softmax(sorted_logits, dim=-1)
        drop = sorted_probs.cumsum(dim=-1) - sorted_probs > top_p  # keep the token that crosses top_p
        sorted_logits[drop] = -float('inf')
        logits = torch.full_like(logits, -float('inf')).scatter(1, sorted_idx, sorted_logits)
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)
