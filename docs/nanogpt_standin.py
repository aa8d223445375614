"""
A stand-in for nanoGPT's train.py on CPU, for timing issue 26's "time to nanoGPT's bits per byte" on one machine
(docs/results.md, round 14). Not part of scratchlm: written here from nanoGPT's published design (GPT-2's block with
LayerNorm without bias, a 4x GELU MLP, learned positions, the LM head tied to the token embedding, SDPA's causal
attention, N(0, 0.02) init), run as nanoGPT runs on a CPU: fp32, no autocast, torch's AdamW (weight decay 0.1 on
matrices, betas 0.9 / 0.95), gradients clipped at 1.0. Issue 26's shape: 4 layers x 256, 4 heads, GPT-2's vocabulary
padded to 50,304; 8 x 128 tokens a step; lr 1e-3 after 40 warmup steps, cosine to 1e-4 at the last step.

    python train.py config/pretrain_small.py --max_iters=1   # once: prepares data/bbc_news (GPT-2 BPE) if missing
    python docs/nanogpt_standin.py 400                      # 400 steps, then the val loss over 40 random batches
"""

import json
import math
import sys
import time

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F

VOCAB, N_LAYER, N_HEAD, N_EMBD, BLOCK, BATCH = 50304, 4, 4, 256, 128, 8
DATA = 'data/bbc_news'  # GPT-2 tokens, uint16, prepared by prepare.py


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.c_attn = nn.Linear(N_EMBD, 3 * N_EMBD, bias=False)
        self.c_proj = nn.Linear(N_EMBD, N_EMBD, bias=False)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (z.view(B, T, N_HEAD, C // N_HEAD).transpose(1, 2) for z in self.c_attn(x).split(C, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(N_EMBD, bias=False), nn.LayerNorm(N_EMBD, bias=False)
        self.attn = Attention()
        self.c_fc = nn.Linear(N_EMBD, 4 * N_EMBD, bias=False)
        self.c_proj = nn.Linear(4 * N_EMBD, N_EMBD, bias=False)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.c_proj(F.gelu(self.c_fc(self.ln_2(x))))


class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(VOCAB, N_EMBD), nn.Embedding(BLOCK, N_EMBD)
        self.h = nn.ModuleList(Block() for _ in range(N_LAYER))
        self.ln_f = nn.LayerNorm(N_EMBD, bias=False)
        self.lm_head = nn.Linear(N_EMBD, VOCAB, bias=False)
        self.wte.weight = self.lm_head.weight  # tied
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1)))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        return F.cross_entropy(logits.view(-1, VOCAB), targets.view(-1))


def get_batch(data):
    starts = np.random.randint(0, len(data) - BLOCK, BATCH)
    x = torch.stack([torch.from_numpy(data[s:s + BLOCK].astype(np.int64)) for s in starts])
    y = torch.stack([torch.from_numpy(data[s + 1:s + 1 + BLOCK].astype(np.int64)) for s in starts])
    return x, y


def main(steps):
    torch.manual_seed(1337)
    np.random.seed(1337)
    train_data, val_data = (np.memmap(f'{DATA}/{split}.bin', dtype=np.uint16, mode='r') for split in ('train', 'val'))
    model = GPT()
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    others = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{'params': matrices, 'weight_decay': 0.1}, {'params': others, 'weight_decay': 0.0}],
                            lr=1e-3, betas=(0.9, 0.95))
    warmup, step_times = 40, []
    for it in range(steps):
        t0 = time.time()
        progress = (it - warmup) / max(steps - warmup, 1)
        lr = 1e-3 * (it + 1) / warmup if it < warmup else 1e-4 + 0.5 * (1 + math.cos(math.pi * progress)) * 9e-4
        for group in opt.param_groups:
            group['lr'] = lr
        loss = model(*get_batch(train_data))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        step_times.append(time.time() - t0)
    model.eval()
    with torch.no_grad():
        val_loss = float(np.mean([model(*get_batch(val_data)).item() for _ in range(40)]))
    with open(f'{DATA}/meta.json') as f:
        meta = json.load(f)['splits']['val']
    bpb = val_loss * meta['tokens'] / meta['bytes'] / math.log(2)
    print(f"{steps} steps in {sum(step_times):.0f} s (median {np.median(step_times) * 1000:.0f} ms, "
          f"{torch.get_num_threads()} threads); val loss {val_loss:.4f} = {bpb:.4f} bits per byte")


if __name__ == '__main__':
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 400)
