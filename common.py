"""
What train.py and finetune.py both need, as plain functions: device/DDP/dtype setup, the learning-rate
schedule, batches, evaluation, checkpoints and the metrics log. Not a script: `import common`.
"""

import contextlib
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from model import ModelConfig, Transformer


class UserError(ValueError):
    """Bad input from the user: scripts print the one-line message and exit with status 2."""


def run_main(main):
    """Call main(); bad input (a UserError, config or data error) becomes one line on stderr and exit status 2."""
    from configurator import ConfigError
    from prepare import DataError
    try:
        main()
    except (UserError, ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


# ----------------------------------------------------------------------------------------------------------------
# device, dtype, DDP

@dataclass
class Runtime:
    device: str          # 'cuda:0', 'cpu', 'mps'
    device_type: str     # 'cuda', 'cpu', 'mps'
    dtype: str           # 'float32', 'bfloat16', 'float16'
    ddp: bool
    rank: int
    local_rank: int
    world_size: int
    master: bool         # rank 0: logs, evaluates for the record, writes checkpoints

    def autocast(self):
        """Mixed-precision context for forward passes; a no-op in float32."""
        if self.dtype == 'float32':
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=getattr(torch, self.dtype))


def cpu_has_bf16():
    """True when the CPU does bf16 matmuls natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    try:
        with open('/proc/cpuinfo') as f:
            flags = f.read()
    except OSError:
        return False
    return 'avx512_bf16' in flags or 'amx_bf16' in flags


def setup_runtime(device='auto', dtype='auto', seed=1337):
    """Pick device and dtype, join the torchrun process group if there is one, seed everything."""
    ddp = int(os.environ.get('RANK', -1)) != -1
    rank, local_rank, world_size = 0, 0, 1
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'mps' if torch.backends.mps.is_available() else 'cpu'
    if ddp:
        rank, local_rank = int(os.environ['RANK']), int(os.environ['LOCAL_RANK'])
        world_size = int(os.environ['WORLD_SIZE'])
        dist.init_process_group(backend='nccl' if device.startswith('cuda') else 'gloo')
        if device.startswith('cuda'):
            device = f'cuda:{local_rank}'
            torch.cuda.set_device(device)
        else:  # processes share the cores
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get('LOCAL_WORLD_SIZE', world_size))))
    device_type = 'cuda' if device.startswith('cuda') else device.split(':')[0]
    if device_type == 'cuda' and not torch.cuda.is_available():
        raise UserError("device='cuda' asked but CUDA is not available: use --device=cpu (or auto)")
    if dtype == 'auto':
        if device_type == 'cuda':
            dtype = 'bfloat16' if torch.cuda.is_bf16_supported() else 'float16'
        elif device_type == 'cpu':
            dtype = 'bfloat16' if cpu_has_bf16() else 'float32'
        else:
            dtype = 'float32'
    if dtype not in ('float32', 'bfloat16', 'float16'):
        raise UserError(f"dtype {dtype!r} unknown: use auto, float32, bfloat16 or float16")
    if dtype == 'float16' and device_type != 'cuda':
        raise UserError("float16 needs a GPU (it trains with a GradScaler); use bfloat16 or float32 here")
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    if device_type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Runtime(device, device_type, dtype, ddp, rank, local_rank, world_size, rank == 0)


def grad_scaler(runtime):
    """A GradScaler that is active only for float16 (bf16 and fp32 need none)."""
    return torch.amp.GradScaler(runtime.device_type if runtime.device_type == 'cuda' else 'cpu',
                                enabled=runtime.dtype == 'float16')


def cleanup_runtime(runtime):
    if runtime.ddp:
        dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------------------------
# learning rate

LR_SCHEDULES = ('cosine', 'linear', 'constant', 'exponential')


def get_lr(it, schedule, learning_rate, warmup_iters, decay_iters, min_lr):
    """Linear warmup over warmup_iters, then decay to min_lr at decay_iters (held there after)."""
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


# ----------------------------------------------------------------------------------------------------------------
# batches

def get_batch(data, batch_size, block_size, key, device):
    """Random windows (x, y) of a token array, fixed by key alone (non-negative ints: [seed, 0, iter, micro] for
    training, [seed, 1, k] for evaluation). Resuming at iteration `iter` sees exactly the batches an unbroken run
    would, and DDP ranks split an iteration's micro-batches without talking."""
    rng = np.random.default_rng(key)
    starts = rng.integers(0, len(data) - block_size, size=batch_size)
    windows = np.stack([data[s:s + block_size + 1] for s in starts]).astype(np.int64)  # (B, T + 1)
    xy = torch.from_numpy(windows)
    if device.startswith('cuda'):
        xy = xy.pin_memory().to(device, non_blocking=True)
    else:
        xy = xy.to(device)
    return xy[:, :-1], xy[:, 1:]


def train_step(model, optimizer, scaler, batches, runtime, grad_clip):
    """One optimizer step over the micro-batches [(x, y), ...] (gradient accumulation); returns the mean loss as a
    0-dim tensor, left on the device so that the caller decides when to sync. Under DDP gradients are all-reduced
    on the last micro-batch only."""
    loss_sum = torch.zeros((), device=runtime.device)
    for micro, (x, y) in enumerate(batches):
        if runtime.ddp:
            model.require_backward_grad_sync = micro == len(batches) - 1
        with runtime.autocast():
            _, loss = model(x, y)
            loss = loss / len(batches)
        scaler.scale(loss).backward()
        loss_sum += loss.detach()
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum


@torch.no_grad()
def estimate_loss(model, data, batch_size, block_size, eval_iters, runtime, seed=0):
    """Mean loss over eval_iters fixed batches (the same ones at every evaluation, so evals compare cleanly)."""
    was_training = model.training
    model.eval()
    losses = torch.zeros(eval_iters)
    for k in range(eval_iters):
        x, y = get_batch(data, batch_size, block_size, [seed, 1, k], runtime.device)
        with runtime.autocast():
            _, loss = model(x, y)
        losses[k] = loss.float()
    model.train(was_training)
    return losses.mean().item()


# ----------------------------------------------------------------------------------------------------------------
# checkpoints

def save_checkpoint(path, checkpoint):
    """torch.save to a temp file in the same directory, fsync, then rename: a crash never leaves half a file."""
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, 'wb') as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path, device='cpu'):
    if os.path.isdir(path):
        path = os.path.join(path, 'last.pt') if os.path.exists(os.path.join(path, 'last.pt')) else os.path.join(path, 'best.pt')
    if not os.path.exists(path):
        raise UserError(f"checkpoint {path} not found: train one first or pass the path of a .pt file")
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=False)
    except Exception as e:
        raise UserError(f"checkpoint {path} cannot be read ({type(e).__name__}): it is damaged or not a checkpoint") from None
    if not isinstance(checkpoint, dict) or 'model' not in checkpoint or 'model_args' not in checkpoint:
        raise UserError(f"{path} is not a scratchlm checkpoint (no model / model_args)")
    checkpoint['model'] = clean_state_dict(checkpoint['model'])
    return checkpoint


def clean_state_dict(state_dict):
    """Strip the wrappers' prefixes: '_orig_mod.' from torch.compile, 'module.' from DDP. The one place for it."""
    cleaned = {}
    for k, v in state_dict.items():
        while k.startswith(('_orig_mod.', 'module.')):  # in any order: DDP(compile(m)) gives 'module._orig_mod.'
            k = k.split('.', 1)[1]
        cleaned[k] = v
    return cleaned


def model_from_checkpoint(checkpoint, dropout=None):
    args = dict(checkpoint['model_args'])
    if dropout is not None:
        args['dropout'] = dropout
    model = Transformer(ModelConfig.from_dict(args))
    model.load_state_dict(checkpoint['model'])
    return model


def unwrap(model):
    """The plain Transformer inside DDP and/or torch.compile wrappers."""
    model = model.module if hasattr(model, 'module') else model
    return getattr(model, '_orig_mod', model)


def rng_states():
    states = {'torch': torch.get_rng_state(), 'numpy': np.random.get_state(), 'python': random.getstate()}
    if torch.cuda.is_available():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states):
    torch.set_rng_state(states['torch'].cpu())
    np.random.set_state(states['numpy'])
    random.setstate(states['python'])
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in states['cuda']])


# ----------------------------------------------------------------------------------------------------------------
# metrics log

class MetricsLog:
    """Appends one JSON object a line to out_dir/metrics.jsonl; mirrors scalars to tensorboard / wandb when asked."""

    def __init__(self, out_dir, config, tensorboard=False, wandb_project=None, run_name=None):
        os.makedirs(out_dir, exist_ok=True)
        self.path = os.path.join(out_dir, 'metrics.jsonl')
        self.tb = self.wandb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise UserError("tensorboard=True needs the tensorboard package: pip install tensorboard") from None
            self.tb = SummaryWriter(os.path.join(out_dir, 'tensorboard'))
        if wandb_project:
            try:
                import wandb
            except ImportError:
                raise UserError("wandb_project is set but wandb is not installed: pip install wandb") from None
            self.wandb = wandb
            wandb.init(project=wandb_project, name=run_name, config=config)

    def log(self, record):
        record = {'time': round(time.time(), 3), **record}
        with open(self.path, 'a') as f:
            f.write(json.dumps(record) + '\n')
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k not in ('iter', 'time')}
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, record.get('iter', 0))
        if self.wandb is not None:
            self.wandb.log(scalars, step=record.get('iter'))
