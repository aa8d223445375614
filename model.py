"""
One Transformer for GPT-style (causal) and encoder-style (bidirectional) language models.

    from model import ModelConfig, Transformer
    model = Transformer(ModelConfig(n_layer=4, n_head=4, n_embd=256, block_size=128))
    logits, loss = model(idx, targets)                      # (B, T, vocab), scalar
    out = model.generate(idx, max_new_tokens=50, top_k=40)  # KV-cached sampling
    gpt2 = Transformer.from_pretrained('gpt2')              # HF weights, no transformers needed
    bert = Transformer.from_pretrained_bert('path/to/bert')  # HF BertModel / BertForMaskedLM / BertForPreTraining

Imports only torch and the standard library. Parameter names follow GPT-2
(wte, wpe, h, ln_f, attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj), so HF
checkpoints map by name; the few exceptions are listed in `from_pretrained`
(GPT-2) and in BERT_NAMES (BERT). BERT is the same trunk with a few config
flags: post-LayerNorm blocks, a LayerNorm on the embeddings, token-type
embeddings, exact GELU, and its heads (masked LM, pooler, next sentence).
"""

import contextlib
import functools
import inspect
import json
import math
import os
import struct
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
    bias: bool = True  # bias in Linears and LayerNorms, like GPT-2; False is a bit faster
    causal: bool = True  # False: bidirectional attention (encoder / masked LM)
    activation: str = 'gelu_tanh'  # GPT-2's "gelu_new"; 'gelu' is the exact erf form (BERT)
    layer_norm_eps: float = 1e-5
    norm_position: str = 'pre'  # 'pre': LayerNorm before attention and MLP (GPT-2); 'post': after each residual add (BERT)
    embedding_norm: bool = False  # LayerNorm on the summed embeddings (BERT)
    type_vocab_size: int = 0  # token-type (segment) embeddings, 2 in BERT; 0: none
    mlm_head: bool = False  # masked-LM head (BERT): forward computes it only at positions that have a target
    pooler: bool = False  # dense + tanh on the first position (BERT's pooler)
    nsp_head: bool = False  # next-sentence prediction: 2-way Linear on the pooled first position (needs pooler)
    task_head: str = ''  # fine-tuning head: 'sequence' (one label per text), 'token' (one per token, NER); '': none
    num_labels: int = 0  # classes of the task head
    pooling: str = 'auto'  # 'sequence' head: 'auto' (last real token if causal, else first) or 'mean' of real tokens

    def __post_init__(self):
        if self.norm_position not in ('pre', 'post'):
            raise ValueError(f"norm_position must be 'pre' or 'post', got {self.norm_position!r}")
        if self.activation not in ('gelu', 'gelu_tanh'):
            raise ValueError(f"activation must be 'gelu' or 'gelu_tanh', got {self.activation!r}")
        if self.nsp_head and not self.pooler:
            raise ValueError("nsp_head=True needs pooler=True: the next-sentence head reads the pooled first position")
        if self.pooling not in ('auto', 'mean'):
            raise ValueError(f"pooling must be 'auto' or 'mean', got {self.pooling!r}")
        if self.task_head not in ('', 'sequence', 'token') or bool(self.task_head) != (self.num_labels >= 2):
            raise ValueError(f"task_head must be 'sequence' or 'token' with num_labels >= 2, or '' with 0; got "
                             f"{self.task_head!r} with {self.num_labels}")

    @classmethod
    def from_dict(cls, d):
        """Build from a checkpoint's dict, with a one-line error for keys this version does not know."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"model config has unknown keys {unknown}: the checkpoint was written by another version of model.py")
        return cls(**d)


class SelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0, 'n_embd must be divisible by n_head'
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.causal = config.causal
        self.keep_weights = False  # set by Transformer.attention_maps: explicit path, weights kept in self.weights
        self.weights = None

    def forward(self, x, attn_mask=None, kv_cache=None, layer=0):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        past = 0
        if kv_cache is not None:
            past = kv_cache.pos
            k, v = kv_cache.update(layer, k, v)  # (B, nh, past + T, hs)
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
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side again
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


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate='tanh' if config.activation == 'gelu_tanh' else 'none')
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Residual block: pre-LayerNorm (GPT-2) or post-LayerNorm (BERT, Vaswani et al. 2017)."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.attn = SelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.mlp = MLP(config)
        self.post_norm = config.norm_position == 'post'

    def forward(self, x, attn_mask=None, kv_cache=None, layer=0):
        if self.post_norm:
            x = self.ln_1(x + self.attn(x, attn_mask, kv_cache, layer))
            return self.ln_2(x + self.mlp(x))
        x = x + self.attn(self.ln_1(x), attn_mask, kv_cache, layer)
        x = x + self.mlp(self.ln_2(x))
        return x


class MaskedLMHead(nn.Module):
    """BERT's masked-LM head: dense + activation + LayerNorm, then a decoder tied to wte plus an output bias."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate='tanh' if config.activation == 'gelu_tanh' else 'none')
        self.ln = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.decoder = nn.Linear(config.n_embd, config.vocab_size, bias=True)  # weight tied to wte by Transformer

    def transform(self, x):
        return self.ln(self.gelu(self.dense(x)))

    def forward(self, x):
        return self.decoder(self.transform(x))


class Pooler(nn.Module):
    """BERT's pooler: dense + tanh on the first position ([CLS]); what the next-sentence head reads."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.n_embd, config.n_embd, bias=True)

    def forward(self, x):
        return torch.tanh(self.dense(x[:, 0]))  # (B, C)


class KVCache:
    """Keys and values of every layer for positions [0, pos), preallocated to block_size."""

    def __init__(self, config, batch_size, device, dtype):
        hs = config.n_embd // config.n_head
        shape = (config.n_layer, batch_size, config.n_head, config.block_size, hs)
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
    linears = [m for m in model.modules() if type(m) is nn.Linear]  # LoRALinear's base is one; its update runs as is
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
        assert config.vocab_size is not None and config.block_size is not None
        self.config = config
        modules = dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
        )
        if config.type_vocab_size:
            modules['wtype'] = nn.Embedding(config.type_vocab_size, config.n_embd)  # token types (segments A/B)
        if config.embedding_norm:
            modules['ln_emb'] = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        if config.norm_position == 'pre':  # post-LN blocks end normalised already
            modules['ln_f'] = nn.LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.transformer = nn.ModuleDict(modules)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying (Press & Wolf 2017)
        if config.mlm_head:
            self.mlm_head = MaskedLMHead(config)
            self.mlm_head.decoder.weight = self.transformer.wte.weight
        if config.pooler:
            self.pooler = Pooler(config)
        if config.nsp_head:
            self.nsp_head = nn.Linear(config.n_embd, 2)
        if config.task_head:
            self.classifier = nn.Linear(config.n_embd, config.num_labels)  # HF's name for BERT's task heads
        self.label_weights = None  # task head: per-class loss weights (class imbalance), a (num_labels,) tensor
        self.fused_loss = True  # LM loss by linear_cross_entropy: no (B, T, V) logits; False for the plain path
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith('c_proj.weight'):  # GPT-2 paper sec. 2.3: scale residual projections by 1/sqrt(N)
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding=True):
        """Parameter count; position embeddings are left out by default, token embeddings are shared with the head."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
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
        x = self.transformer.wte(idx) + self.transformer.wpe.weight[past:past + T]  # positions past .. past + T - 1
        if 'wtype' in self.transformer:
            x = x + self.transformer.wtype(token_type_ids if token_type_ids is not None else torch.zeros_like(idx))
        elif token_type_ids is not None:
            raise ValueError("token_type_ids given but this model has no token-type embeddings (type_vocab_size=0)")
        if 'ln_emb' in self.transformer:
            x = self.transformer.ln_emb(x)
        x = self.transformer.drop(x)
        for layer, block in enumerate(self.transformer.h):
            x = block(x, attn_mask, kv_cache, layer)
        if kv_cache is not None:
            kv_cache.pos += T
        return self.transformer.ln_f(x) if 'ln_f' in self.transformer else x

    def masked_lm(self, x, targets=None):
        """Masked-LM (logits, loss) from hidden states x (B, T, C). With targets (B, T) the head runs only at the N
        positions whose target is not IGNORE_INDEX: their mean loss, and logits (N, V) in row-major order, or None
        when fused_loss is on. Without targets: logits (B, T, V) everywhere and loss None."""
        if targets is None:
            return self.mlm_head(x), None
        selected = targets != IGNORE_INDEX
        h = self.mlm_head.transform(x[selected])  # (N, C)
        if self.fused_loss:  # the output bias rides along as one more column: [h, 1] @ [W, b].T = h @ W.T + b
            decoder = self.mlm_head.decoder
            return None, linear_cross_entropy(torch.cat([h, h.new_ones(h.size(0), 1)], dim=1),
                                              torch.cat([decoder.weight, decoder.bias[:, None]], dim=1), targets[selected])
        logits = self.mlm_head.decoder(h)  # (N, V)
        if logits.size(0) == 0:  # nothing masked in this batch: zero loss, still connected to the graph
            return logits, logits.sum()
        return logits, F.cross_entropy(logits.float(), targets[selected])

    def next_sentence(self, x):
        """Next-sentence logits (B, 2) from hidden states x (B, T, C): index 0 = B follows A, 1 = B is random."""
        return self.nsp_head(self.pooler(x))

    def classify(self, x, attn_mask=None):
        """Task-head logits from hidden states x (B, T, C). 'token': (B, T, num_labels). 'sequence': (B, num_labels)
        from one position a text: the last real token for causal models (the only one that has read it all; padding
        on the right, attn_mask (B, T) 1 for real tokens), the first ([CLS]) for bidirectional ones, through BERT's
        pooler when the model has one; or, with pooling='mean', the mean over the real tokens."""
        if self.config.task_head == 'token':
            return self.classifier(self.transformer.drop(x))
        if self.config.pooling == 'mean':
            real = attn_mask[..., None].to(x.dtype) if attn_mask is not None else torch.ones_like(x[..., :1])  # (B, T, 1)
            pooled = (x * real).sum(1) / real.sum(1)
        elif self.config.causal:
            last = attn_mask.sum(1) - 1 if attn_mask is not None else torch.full_like(x[:, 0, 0], x.size(1) - 1, dtype=torch.long)
            pooled = x[torch.arange(x.size(0), device=x.device), last.long()]  # (B, C)
        else:
            pooled = self.pooler(x) if self.config.pooler else x[:, 0]
        return self.classifier(self.transformer.drop(pooled))

    def forward(self, idx, targets=None, attn_mask=None, all_logits=False, token_type_ids=None, nsp_labels=None):
        """Returns (logits, loss).
        With targets: the mean loss over targets != IGNORE_INDEX. When fused_loss is on (the default) the (B, T, V)
        logits are never materialised and None is returned for them; otherwise they are.
        Without targets: logits (B, 1, V) of the last position, all that sampling needs, or (B, T, V) if all_logits.
        Models with mlm_head return the masked-LM head's logits and loss instead (see masked_lm), plus the
        next-sentence loss when nsp_labels (B,) are given. Models with task_head return its logits (see classify) and,
        with targets (B,) or (B, T), the cross-entropy weighted by label_weights."""
        x = self.hidden_states(idx, attn_mask, token_type_ids=token_type_ids)
        if self.config.task_head:
            logits = self.classify(x, attn_mask)
            if targets is None:
                return logits, None
            weight = None if self.label_weights is None else self.label_weights.to(x.device)
            return logits, F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1),
                                           weight=weight, ignore_index=IGNORE_INDEX)
        if self.config.mlm_head:
            logits, loss = self.masked_lm(x, targets)
            if nsp_labels is not None:
                nsp_loss = F.cross_entropy(self.next_sentence(x).float(), nsp_labels)
                loss = nsp_loss if loss is None else loss + nsp_loss
            return logits, loss
        if targets is None:
            return self.lm_head(x if all_logits else x[:, [-1], :]), None
        if self.fused_loss:
            return None, linear_cross_entropy(x.view(-1, x.size(-1)), self.lm_head.weight, targets.reshape(-1))
        logits = self.lm_head(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=IGNORE_INDEX)
        return logits, loss

    def crop_block_size(self, block_size):
        """Shrink the context (e.g. to fine-tune GPT-2 with a shorter block)."""
        assert block_size <= self.config.block_size
        self.config.block_size = block_size
        self.transformer.wpe.weight = nn.Parameter(self.transformer.wpe.weight[:block_size])

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type, fused=None):
        """AdamW with decay on matrices and embeddings only; fused kernel wherever this torch has one."""
        params = [p for p in self.parameters() if p.requires_grad]  # tied weights appear once here
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{'params': decay, 'weight_decay': weight_decay}, {'params': no_decay, 'weight_decay': 0.0}]
        if fused is None:
            fused = fused_adamw_available(device_type)
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=fused or None)

    def flops_per_token(self, T=None):
        """Training FLOPs per token (forward + backward), PaLM appendix B: 6N + 12 L H Q T."""
        cfg = self.config
        T = T or cfg.block_size
        return 6 * self.num_params() + 12 * cfg.n_layer * cfg.n_head * (cfg.n_embd // cfg.n_head) * T

    def estimate_mfu(self, tokens_per_iter, dt, peak_flops, T=None):
        """Model FLOP utilisation: achieved FLOP/s over the given peak FLOP/s (see PEAK_FLOPS or bench.py)."""
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
                if not use_cache or T > block_size:
                    cache = None
                    logits, _ = self(tokens[:, max(0, T - block_size):T])
                elif cache is None:
                    # fill the cache with the whole context; its last position gives the next token
                    cache = KVCache(self.config, B, idx.device, self.lm_head.weight.dtype)
                    logits = self.lm_head(self.hidden_states(tokens[:, :T], kv_cache=cache)[:, [-1], :])
                else:
                    logits = self.lm_head(self.hidden_states(tokens[:, T - 1:T], kv_cache=cache))
                idx_next = sample_next(logits[:, -1, :], temperature, top_k, top_p, generator)
                tokens[:, T:T + 1] = idx_next
                T += 1
                if stop_token is not None and bool((idx_next == stop_token).all()):
                    break
        return tokens[:, :T]

    @classmethod
    def from_pretrained(cls, name_or_path, dropout=0.0):
        """GPT-2 weights from HF: a local directory with config.json and model.safetensors or pytorch_model.bin,
        or a model name ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl') from the HF cache or downloaded."""
        directory = resolve_pretrained(name_or_path)
        with open(os.path.join(directory, 'config.json')) as f:
            hf = json.load(f)
        if hf.get('model_type', 'gpt2') != 'gpt2':
            hint = ': use Transformer.from_pretrained_bert' if hf.get('model_type') == 'bert' else ''
            raise ValueError(f"{name_or_path} is a {hf.get('model_type')!r} checkpoint; from_pretrained reads GPT-2 checkpoints{hint}")
        act = hf.get('activation_function', 'gelu_new')
        config = ModelConfig(block_size=hf['n_positions'], vocab_size=hf['vocab_size'], n_layer=hf['n_layer'],
                             n_head=hf['n_head'], n_embd=hf['n_embd'], dropout=dropout, bias=True, causal=True,
                             activation='gelu_tanh' if act in ('gelu_new', 'gelu_pytorch_tanh') else 'gelu',
                             layer_norm_eps=hf.get('layer_norm_epsilon', 1e-5))
        model = cls(config)
        sd = model.state_dict()
        hf_sd = load_state_dict_file(directory)
        # exceptions to name-for-name: a 'transformer.' prefix in GPT2LMHeadModel files (absent in GPT2Model ones),
        # causal-mask buffers we do not keep, and Conv1D weights stored (in, out) where nn.Linear wants (out, in)
        transposed = ('attn.c_attn.weight', 'attn.c_proj.weight', 'mlp.c_fc.weight', 'mlp.c_proj.weight')
        loaded = set()
        for key, value in hf_sd.items():
            name = key if key.startswith('transformer.') or key == 'lm_head.weight' else 'transformer.' + key
            if name.endswith(('.attn.bias', '.attn.masked_bias')) or name == 'lm_head.weight':
                continue  # lm_head is tied to wte
            if name not in sd:
                raise ValueError(f"unexpected weight {key!r} in {directory}: not a GPT-2 checkpoint")
            if name.endswith(transposed):
                value = value.t()
            if value.shape != sd[name].shape:
                raise ValueError(f"weight {key!r} has shape {tuple(value.shape)}, expected {tuple(sd[name].shape)}")
            with torch.no_grad():
                sd[name].copy_(value)
            loaded.add(name)
        missing = [k for k in sd if k not in loaded and k != 'lm_head.weight']
        if missing:
            raise ValueError(f"{directory} lacks weights {missing[:3]}...: incomplete GPT-2 checkpoint")
        return model

    @classmethod
    def from_pretrained_bert(cls, name_or_path, dropout=0.0):
        """BERT weights from HF (BertModel, BertForMaskedLM or BertForPreTraining files): a local directory with
        config.json and model.safetensors or pytorch_model.bin, or a hub name from the HF cache or downloaded.
        The heads present in the file (masked LM, pooler, next sentence) are built; the rest are not."""
        directory = resolve_pretrained(name_or_path)
        with open(os.path.join(directory, 'config.json')) as f:
            hf = json.load(f)
        if hf.get('model_type') != 'bert':
            raise ValueError(f"{name_or_path} is a {hf.get('model_type')!r} checkpoint; from_pretrained_bert reads BERT checkpoints")
        if hf.get('position_embedding_type', 'absolute') != 'absolute':
            raise ValueError(f"{name_or_path} uses {hf['position_embedding_type']!r} position embeddings; only 'absolute' is supported")
        if hf['intermediate_size'] != 4 * hf['hidden_size']:
            raise ValueError(f"{name_or_path} has an MLP of {hf['intermediate_size']} for width {hf['hidden_size']}; "
                             f"model.py supports 4 x width only")
        act = hf.get('hidden_act', 'gelu')
        if act not in ('gelu', 'gelu_new', 'gelu_pytorch_tanh'):
            raise ValueError(f"{name_or_path} uses activation {act!r}; model.py supports gelu and its tanh form")
        hf_sd = {k.removeprefix('bert.'): v for k, v in load_state_dict_file(directory).items()}
        config = ModelConfig(block_size=hf['max_position_embeddings'], vocab_size=hf['vocab_size'],
                             n_layer=hf['num_hidden_layers'], n_head=hf['num_attention_heads'], n_embd=hf['hidden_size'],
                             dropout=dropout, bias=True, causal=False, activation='gelu' if act == 'gelu' else 'gelu_tanh',
                             layer_norm_eps=hf.get('layer_norm_eps', 1e-12), norm_position='post', embedding_norm=True,
                             type_vocab_size=hf.get('type_vocab_size', 2),
                             mlm_head=any(k.startswith('cls.predictions.') for k in hf_sd),
                             pooler=any(k.startswith('pooler.') for k in hf_sd),
                             nsp_head=any(k.startswith('cls.seq_relationship.') for k in hf_sd))
        model = cls(config)
        sd = model.state_dict()
        C = config.n_embd
        loaded = set()
        for key, value in hf_sd.items():
            if key in BERT_SKIP:
                continue
            name, part = bert_name(key)
            if name not in sd:
                raise ValueError(f"unexpected weight {key!r} in {directory}: not a BERT checkpoint model.py can read")
            target = sd[name] if part is None else sd[name][part * C:(part + 1) * C]  # q, k, v thirds of c_attn
            if value.shape != target.shape:
                raise ValueError(f"weight {key!r} has shape {tuple(value.shape)}, expected {tuple(target.shape)}")
            with torch.no_grad():
                target.copy_(value)
            loaded.add((name, part))
        expected = {(name, part) for name in sd if name not in ('lm_head.weight', 'mlm_head.decoder.weight')
                    for part in ((0, 1, 2) if '.attn.c_attn.' in name else (None,))}
        missing = sorted(f'{name}' + ('' if part is None else f'[{part}]') for name, part in expected - loaded)
        if missing:
            raise ValueError(f"{directory} lacks weights for {missing[:3]}...: incomplete BERT checkpoint")
        return model


# HF BERT module names (after the 'bert.' prefix of BertForMaskedLM / BertForPreTraining) -> ours; {i} is the layer.
# Everything else maps by the same rule as GPT-2's names; q, k and v are the thirds of our fused c_attn.
BERT_NAMES = {
    'embeddings.word_embeddings': 'transformer.wte',
    'embeddings.position_embeddings': 'transformer.wpe',
    'embeddings.token_type_embeddings': 'transformer.wtype',
    'embeddings.LayerNorm': 'transformer.ln_emb',
    'encoder.layer.{i}.attention.self.query': 'transformer.h.{i}.attn.c_attn',  # rows [0, C)
    'encoder.layer.{i}.attention.self.key': 'transformer.h.{i}.attn.c_attn',  # rows [C, 2C)
    'encoder.layer.{i}.attention.self.value': 'transformer.h.{i}.attn.c_attn',  # rows [2C, 3C)
    'encoder.layer.{i}.attention.output.dense': 'transformer.h.{i}.attn.c_proj',
    'encoder.layer.{i}.attention.output.LayerNorm': 'transformer.h.{i}.ln_1',  # post-LN: after attention
    'encoder.layer.{i}.intermediate.dense': 'transformer.h.{i}.mlp.c_fc',
    'encoder.layer.{i}.output.dense': 'transformer.h.{i}.mlp.c_proj',
    'encoder.layer.{i}.output.LayerNorm': 'transformer.h.{i}.ln_2',
    'pooler.dense': 'pooler.dense',
    'cls.predictions.transform.dense': 'mlm_head.dense',
    'cls.predictions.transform.LayerNorm': 'mlm_head.ln',
    'cls.predictions': 'mlm_head.decoder',  # its 'bias' is the output bias
    'cls.predictions.decoder': 'mlm_head.decoder',  # the same bias, tied, in some files
    'cls.seq_relationship': 'nsp_head',
}
BERT_QKV = {'query': 0, 'key': 1, 'value': 2}
# a buffer, and the decoder weight that is wte itself (tied)
BERT_SKIP = {'embeddings.position_ids', 'cls.predictions.decoder.weight'}


def bert_name(key):
    """(our parameter name, third of c_attn or None) for a HF BERT weight name."""
    module, _, leaf = key.rpartition('.')
    leaf = {'gamma': 'weight', 'beta': 'bias'}.get(leaf, leaf)  # LayerNorm names of TF-converted files
    parts = module.split('.')
    layer = parts[2] if module.startswith('encoder.layer.') else None
    pattern = '.'.join(parts[:2] + ['{i}'] + parts[3:]) if layer is not None else module
    if pattern not in BERT_NAMES:
        return key, None
    part = BERT_QKV.get(parts[-1]) if '.attention.self.' in module else None
    return BERT_NAMES[pattern].replace('{i}', str(layer)) + '.' + leaf, part


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

    def merged_weight(self):
        return self.base.weight + (self.lora_b @ self.lora_a) * self.scale


def add_lora(model, rank=8, alpha=16, dropout=0.0, targets=('c_attn', 'c_proj', 'c_fc')):
    """Freeze every weight of model and wrap its attention and MLP Linears (the names in targets) in LoRALinear.
    Unfreeze what must train in full (the task head) afterwards."""
    model.requires_grad_(False)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if name in targets and isinstance(child, nn.Linear):
                setattr(module, name, LoRALinear(child, rank, alpha, dropout))
    return model


def merged_state_dict(model):
    """model's state dict with every LoRA update folded into its base weight, under the names of the plain model:
    what a checkpoint holds, so that it loads without LoRA."""
    state = model.state_dict()
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            prefix = f'{name}.' if name else ''
            for key in ('base.weight', 'base.bias', 'lora_a', 'lora_b'):
                state.pop(prefix + key, None)
            state[prefix + 'weight'] = module.merged_weight().detach()
            if module.base.bias is not None:
                state[prefix + 'bias'] = module.base.bias.detach()
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


def fused_adamw_available(device_type):
    """Fused AdamW runs on CUDA, and on CPU since torch 2.4; MPS has it in recent releases."""
    if 'fused' not in inspect.signature(torch.optim.AdamW).parameters:
        return False
    try:
        p = torch.zeros(1, device=device_type, requires_grad=True)
        p.grad = torch.zeros(1, device=device_type)
        torch.optim.AdamW([p], fused=True).step()
        return True
    except (RuntimeError, ValueError):
        return False


# dense bf16 peak FLOP/s of known accelerators; bench.py measures the peak of the machine it runs on
PEAK_FLOPS = {
    'A100': 312e12,
    'H100': 989e12,
    'H200': 989e12,
    'L4': 121e12,
    'A10': 125e12,
    'RTX 4090': 165e12,
    'RTX 3090': 71e12,
}


def peak_flops_for(device_name):
    """Look up the table by a device name such as torch.cuda.get_device_name(); None if unknown."""
    for key, value in PEAK_FLOPS.items():
        if key.lower() in device_name.lower():
            return value
    return None


# ----------------------------------------------------------------------------------------------------------------
# reading HF checkpoints with torch alone

HF_URL = 'https://huggingface.co/{name}/resolve/main/{file}'


def resolve_pretrained(name_or_path, files=('config.json',), weight_files=('model.safetensors', 'pytorch_model.bin')):
    """A local directory holding config.json and one weight file: the path itself, the HF cache, or a download."""
    if os.path.isdir(name_or_path):
        if not os.path.exists(os.path.join(name_or_path, 'config.json')):
            raise FileNotFoundError(f"{name_or_path} has no config.json: not a HF checkpoint directory")
        return name_or_path
    hub = os.environ.get('HF_HUB_CACHE') or os.path.join(
        os.environ.get('HF_HOME', os.path.expanduser('~/.cache/huggingface')), 'hub')
    snapshots = os.path.join(hub, 'models--' + name_or_path.replace('/', '--'), 'snapshots')
    if os.path.isdir(snapshots):
        for snap in sorted(os.listdir(snapshots)):
            d = os.path.join(snapshots, snap)
            if os.path.exists(os.path.join(d, 'config.json')) and any(os.path.exists(os.path.join(d, w)) for w in weight_files):
                return d
    target = os.path.join(hub, 'models--' + name_or_path.replace('/', '--'), 'snapshots', 'scratchlm')
    try:
        for file in files:
            download(HF_URL.format(name=name_or_path, file=file), os.path.join(target, file))
        for file in weight_files:
            try:
                download(HF_URL.format(name=name_or_path, file=file), os.path.join(target, file))
                return target
            except OSError:
                continue
        raise OSError('no weight file')
    except OSError as e:
        raise FileNotFoundError(f"cannot find {name_or_path!r}: not a local directory, not in the HF cache ({hub}), "
                                f"and the download failed ({e}); pass a directory with config.json and weights") from None


def download(url, path):
    """Fetch url to path atomically (temp file + rename), printing progress."""
    import urllib.request
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + '.part'
    with urllib.request.urlopen(url, timeout=30) as response, open(tmp, 'wb') as f:
        total = int(response.headers.get('Content-Length') or 0)
        done = 0
        while chunk := response.read(1 << 20):
            f.write(chunk)
            done += len(chunk)
            if total:
                print(f"\rdownloading {os.path.basename(path)}: {done / 1e6:.0f}/{total / 1e6:.0f} MB", end='', flush=True)
    print()
    os.replace(tmp, path)


SAFETENSORS_DTYPES = {'F64': torch.float64, 'F32': torch.float32, 'F16': torch.float16, 'BF16': torch.bfloat16,
                      'I64': torch.int64, 'I32': torch.int32, 'I16': torch.int16, 'I8': torch.int8,
                      'U8': torch.uint8, 'BOOL': torch.bool}


def load_safetensors(path):
    """Read a .safetensors file: 8-byte little-endian header length, JSON header, raw little-endian tensor bytes."""
    with open(path, 'rb') as f:
        (header_len,) = struct.unpack('<Q', f.read(8))
        header = json.loads(f.read(header_len))
        data = f.read()
    tensors = {}
    for name, info in header.items():
        if name == '__metadata__':
            continue
        start, end = info['data_offsets']
        dtype = SAFETENSORS_DTYPES[info['dtype']]
        t = torch.frombuffer(bytearray(data[start:end]), dtype=dtype) if end > start else torch.empty(0, dtype=dtype)
        tensors[name] = t.reshape(info['shape'])
    return tensors


def load_state_dict_file(directory):
    safetensors_path = os.path.join(directory, 'model.safetensors')
    if os.path.exists(safetensors_path):
        return load_safetensors(safetensors_path)
    bin_path = os.path.join(directory, 'pytorch_model.bin')
    if os.path.exists(bin_path):
        return torch.load(bin_path, map_location='cpu', weights_only=True)
    raise FileNotFoundError(f"{directory} has neither model.safetensors nor pytorch_model.bin")


def config_dict(config):
    return asdict(config)
