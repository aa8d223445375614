"""
Optimizers and the learning-rate schedule: AdamW as the model has always used it, Muon for the transformer blocks'
weight matrices, and get_lr (warmup, then cosine / linear / exponential decay, or constant).

    import optim
    optimizer = optim.configure_optimizers(model, 'muon', learning_rate=6e-4, weight_decay=0.1,
                                           betas=(0.9, 0.95), device_type='cuda')
    for group in optimizer.param_groups:   # the LR schedule
        group['lr'] = get_lr(it, 'cosine', learning_rate, warmup_iters, decay_iters, min_lr)
    scaler.step(optimizer)                 # GradScaler, clip_grad_norm_, DDP, state_dict: as with AdamW

Muon (Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural networks") takes SGD-momentum's update
of a matrix and replaces it by the nearest semi-orthogonal matrix, computed by a few Newton-Schulz steps. Its
update is scaled to AdamW's usual RMS (Liu et al. 2025, "Muon is Scalable for LLM Training", sec. 2.2), so the
AdamW learning rate, schedule and weight decay carry over as they are.
"""

import functools
import math

import torch
from torch.distributed.tensor import DTensor, distribute_tensor

from configurator import UserError
from runtime import cpu_has_bf16

LR_SCHEDULES = ('cosine', 'linear', 'constant', 'exponential')  # get_lr's, after the warmup
CHOICES = {'optimizer': ('adamw', 'muon'), 'lr_schedule': LR_SCHEDULES}  # checked by configurator.configure


def get_lr(it, schedule, learning_rate, warmup_iters, decay_iters, min_lr):
    """The learning rate at iteration it: linear warmup over warmup_iters, then the schedule's decay to min_lr at
    decay_iters (held there after). A new schedule is a branch here and its name in LR_SCHEDULES."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if schedule == 'constant':
        return learning_rate
    if it >= decay_iters:
        return min_lr
    progress = (it - warmup_iters) / max(1, decay_iters - warmup_iters)  # 0 -> 1
    if schedule == 'cosine':
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (learning_rate - min_lr)
    if schedule == 'linear':
        return learning_rate + progress * (min_lr - learning_rate)
    if schedule == 'exponential':  # geometric from learning_rate to min_lr
        return learning_rate * (max(min_lr, 1e-12) / learning_rate) ** progress
    raise UserError(f"lr_schedule {schedule!r} unknown: use one of {', '.join(LR_SCHEDULES)}")


@functools.cache
def newtonschulz_dtype(device_type):
    """bf16 on CUDA and on CPUs with native bf16 matmuls (AVX512-BF16, AMX; measured 3x fp32's speed on such a CPU):
    the iteration is stable in bf16 (Jordan et al. run it so). fp32 elsewhere: other CPUs emulate bf16 slowly."""
    return torch.bfloat16 if device_type == 'cuda' or (device_type == 'cpu' and cpu_has_bf16()) else torch.float32


def zeropower_via_newtonschulz5(G, steps=5, dtype=None):
    """X = zeropower_via_newtonschulz5(G): for a matrix G = U S V^T, roughly U V^T (singular values pushed to ~1);
    for a stack of same-shape matrices (..., rows, cols), each one's, computed by one chain of batched matmuls.

    Each step applies p(x) = a x + b x^3 + c x^5 to the singular values. The quintic's coefficients are chosen for
    a steep slope at 0 (a = 3.4445) rather than convergence: after 5 steps the singular values lie in about
    [0.68, 1.2], not at 1, which Muon does not mind (Jordan et al. 2024). Values below ~1e-3 of the Frobenius
    norm are not lifted in 5 steps (3.4445^5 ~ 490). dtype: the iteration's (default newtonschulz_dtype's)."""
    assert G.ndim >= 2, f"Newton-Schulz needs a matrix, got shape {tuple(G.shape)}"
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.to(dtype or newtonschulz_dtype(G.device.type)).reshape(-1, *G.shape[-2:])  # (matrices, rows, cols)
    transposed = X.size(-2) > X.size(-1)
    if transposed:  # work on the wide side: X @ X.T is then the smaller Gram matrix
        X = X.mT
    # each matrix by its own Frobenius norm (>= its spectral norm), so every singular value starts in [0, 1]
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        A = X @ X.mT                                  # (matrices, rows, rows)
        B = torch.baddbmm(A, A, A, beta=b, alpha=c)   # b A + c A A, in one call (no separate elementwise passes)
        X = torch.baddbmm(X, B, X, beta=a)            # a X + B X
    if transposed:
        X = X.mT
    return X.reshape(G.shape).to(G.dtype)


def muon_update(group, state, lr):
    """One Muon step for the 2-D params of a param group (the grads already all-reduced, unscaled and clipped).
    The matrices of one shape are orthogonalised together, stacked: one chain of batched matmuls per shape."""
    by_shape = {}
    for p in group['params']:
        if p.grad is None:
            continue
        if 'momentum_buffer' not in state[p]:
            state[p]['momentum_buffer'] = torch.zeros_like(p)
        buf = state[p]['momentum_buffer']
        buf.mul_(group['momentum']).add_(p.grad)
        g = p.grad.add(buf, alpha=group['momentum']) if group['nesterov'] else buf
        # FSDP: g is a shard of rows (DTensor); orthogonalise the whole matrix, each rank keeps its own rows
        by_shape.setdefault(tuple(p.shape), []).append((p, g.full_tensor() if isinstance(g, DTensor) else g))
    for shape, pairs in by_shape.items():
        updates = zeropower_via_newtonschulz5(torch.stack([g for _, g in pairs]), group['ns_steps'])
        # an orthogonalised (rows, cols) matrix has RMS 1/sqrt(max(rows, cols)); times 0.2 sqrt(max) gives RMS 0.2,
        # about AdamW's (Liu et al. 2025, sec. 2.2), so Muon shares AdamW's learning rate and weight decay
        scale = 0.2 * math.sqrt(max(shape))
        for (p, _), update in zip(pairs, updates.unbind(0)):
            if isinstance(p, DTensor):
                update = distribute_tensor(update, p.device_mesh, p.placements, src_data_rank=None)
            p.mul_(1 - lr * group['weight_decay'])  # decoupled weight decay (Loshchilov & Hutter 2019)
            p.add_(update, alpha=-lr * scale)


def adamw_update(group, state, lr):
    """One AdamW step (Loshchilov & Hutter 2019) for the params of a group, as torch.optim.AdamW computes it."""
    beta1, beta2 = group['betas']
    for p in group['params']:
        if p.grad is None:
            continue
        s = state[p]
        if not s:
            s.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
        s['step'] += 1
        s['exp_avg'].lerp_(p.grad, 1 - beta1)
        s['exp_avg_sq'].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
        denom = (s['exp_avg_sq'] / (1 - beta2 ** s['step'])).sqrt_().add_(group['eps'])
        p.mul_(1 - lr * group['weight_decay'])
        p.addcdiv_(s['exp_avg'], denom, value=-lr / (1 - beta1 ** s['step']))


class MuonAdamW(torch.optim.Optimizer):
    """MuonAdamW(groups, lr): one optimizer whose groups with use_muon=True get Muon, the others AdamW (use_muon: the
    default of the groups that do not set it).

    Every group's step uses group['lr'] * group['lr_scale']: the LR schedule writes group['lr'] into every group
    as it does for AdamW, and lr_scale (1.0 by default) sets a group's rate relative to that. One
    torch.optim.Optimizer, so GradScaler's unscale_/step, clip_grad_norm_ and state_dict/load_state_dict work
    natively. Under DDP gradients are all-reduced before step(), so every rank computes the same update; under
    FSDP see Muon."""

    def __init__(self, params, lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0, momentum=0.95, nesterov=True,
                 ns_steps=5, use_muon=False):
        super().__init__(params, dict(lr=lr, lr_scale=1.0, use_muon=use_muon, betas=betas, eps=eps,
                                      weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                                      ns_steps=ns_steps))
        if any(group['use_muon'] and p.ndim != 2 for group in self.param_groups for p in group['params']):
            raise ValueError("Muon updates 2-D weight matrices only: put biases, norms and other "
                             "non-matrix params in an AdamW group")

    @torch.no_grad()
    def step(self, closure=None):
        with torch.enable_grad():
            loss = closure() if closure is not None else None
        for group in self.param_groups:
            update = muon_update if group['use_muon'] else adamw_update
            update(group, self.state, group['lr'] * group['lr_scale'])
        return loss


class Muon(MuonAdamW):
    """Muon(matrices, lr=6e-4, momentum=0.95): SGD-momentum (Nesterov by default), orthogonalised, for 2-D params
    (a MuonAdamW whose groups are all Muon's).

    Under DDP the gradients are all-reduced before step(), so every rank computes the same update and no extra
    communication is needed. Under FSDP each rank holds a block of rows of a matrix (and of its momentum): the
    momentum is all-gathered, every rank orthogonalises the whole matrix (the same result everywhere) and keeps
    its own rows. The lr is in AdamW units (see muon_update's scale rule)."""

    def __init__(self, params, lr=6e-4, momentum=0.95, nesterov=True, ns_steps=5, weight_decay=0.0):
        super().__init__(params, lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                         ns_steps=ns_steps, use_muon=True)


def fused_adamw_available(device_type):
    """Fused AdamW runs on CUDA, and on CPU since torch 2.4; MPS has it in recent releases."""
    try:
        p = torch.zeros(1, device=device_type, requires_grad=True)
        p.grad = torch.zeros(1, device=device_type)
        torch.optim.AdamW([p], fused=True).step()
        return True
    except (RuntimeError, ValueError):
        return False


def configure_optimizers(model, optimizer, learning_rate, weight_decay, betas, device_type, muon_lr=None,
                         muon_momentum=0.95, fused=None):
    """configure_optimizers(model, 'adamw' | 'muon', learning_rate, weight_decay, betas, device_type) -> optimizer.

    model: the plain model, before DDP or torch.compile wrap it (the 'muon' split reads parameter names).
    'adamw': torch's AdamW, decay on params of 2 or more dims only; fused (None: wherever this torch has it).
    'muon': Muon for the 2-D matrices of the transformer blocks (attention and MLP), AdamW for the rest:
    embeddings and heads (decayed), norms and biases (not) -- Muon is for hidden layers (Jordan et al. 2024).
    muon_lr (default: learning_rate) becomes the Muon group's lr_scale = muon_lr / learning_rate, so the
    schedule keeps the ratio. Only params with requires_grad; tied weights (lm_head = wte) appear once."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]  # named_parameters drops duplicates
    # the blocks' weight matrices go to Muon (none for 'adamw'); the rest to AdamW, decayed if 2-D (not norms, biases)
    matrices = {id(p) for n, p in named if optimizer == 'muon' and n.startswith('transformer.h.') and p.dim() == 2}
    groups = [{'params': [p for _, p in named if id(p) not in matrices and p.dim() >= 2], 'weight_decay': weight_decay},
              {'params': [p for _, p in named if p.dim() < 2], 'weight_decay': 0.0}]
    if optimizer == 'adamw':
        fused = fused_adamw_available(device_type) if fused is None else fused
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=fused or None)
    if optimizer == 'muon':
        if muon_lr is not None and learning_rate <= 0:
            raise UserError(f"muon_lr={muon_lr} needs learning_rate > 0: it is kept as a ratio to learning_rate")
        groups.insert(0, {'params': [p for _, p in named if id(p) in matrices], 'use_muon': True,  # Muon's first
                          'lr_scale': 1.0 if muon_lr is None else muon_lr / learning_rate,
                          'weight_decay': weight_decay})
        return MuonAdamW(groups, lr=learning_rate, betas=betas, momentum=muon_momentum)
    raise UserError(f"optimizer {optimizer!r} unknown: use 'adamw' or 'muon'")
