"""
The runtime every script runs in: device, dtype (mixed precision), torchrun's process group (DDP), seeds.

    runtime = setup_runtime(device='auto', dtype='auto', seed=1337)
    with runtime.autocast(): logits, loss = model(x, y)
    scaler = grad_scaler(runtime)              # active for float16 only
    model = wrap(model, runtime, use_compile)  # torch.compile'd, and in DDP under torchrun
    model = unwrap(model)                      # the Transformer inside DDP / torch.compile
    with eval_mode(model): ...                 # dropout off, the model's own mode back afterwards
"""

import contextlib
import ctypes
import gc
import os
import random
import shutil
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from configurator import UserError


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


def keep_freed_memory():
    """Have glibc's malloc keep the memory of freed tensors for the next ones instead of handing it back to the
    system: by default each block over 32 MB is mapped fresh and the heap's free top is given back, so their pages
    fault in again when next written (measured on 2 cores: a (4,096 x 256) x (256 x 4,096) bf16 matmul 13-16 ms
    into new memory, 3.4 ms into kept memory; the main recipe's step 0.8-0.9x, docs/results.md round 12).
    Elsewhere (macOS, musl) a no-op."""
    try:
        mallopt = ctypes.CDLL('libc.so.6').mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # malloc.h
    return bool(mallopt(M_MMAP_THRESHOLD, 1 << 30) and mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1))


def setup_runtime(device='auto', dtype='auto', seed=1337):
    """Pick device and dtype, join the torchrun process group if there is one, seed everything."""
    ddp = int(os.environ.get('RANK', -1)) != -1
    rank, local_rank, world_size = ((int(os.environ[k]) for k in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE')) if ddp
                                    else (0, 0, 1))
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'mps' if torch.backends.mps.is_available() else 'cpu'
    device_type = 'cuda' if device.startswith('cuda') else device.split(':')[0]
    if ddp:
        dist.init_process_group(backend='nccl' if device_type == 'cuda' else 'gloo')
        if device_type == 'cuda':
            device = f'cuda:{local_rank}'
            torch.cuda.set_device(device)
        else:  # processes share the cores
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get('LOCAL_WORLD_SIZE', world_size))))
    if device_type == 'cuda' and not torch.cuda.is_available():
        raise UserError("device='cuda' asked but CUDA is not available: use --device=cpu (or auto)")
    if dtype == 'auto':  # bf16 where the hardware has it; else float16 on a GPU (with a GradScaler), float32 elsewhere
        bf16 = torch.cuda.is_bf16_supported() if device_type == 'cuda' else device_type == 'cpu' and cpu_has_bf16()
        dtype = 'bfloat16' if bf16 else 'float16' if device_type == 'cuda' else 'float32'
    if dtype not in ('float32', 'bfloat16', 'float16'):
        raise UserError(f"dtype {dtype!r} unknown: use auto, float32, bfloat16 or float16")
    if dtype == 'float16' and device_type != 'cuda':
        raise UserError("float16 needs a GPU (it trains with a GradScaler); use bfloat16 or float32 here")
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    if device_type == 'cpu':
        keep_freed_memory()
    if device_type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    return Runtime(device, device_type, dtype, ddp, rank, local_rank, world_size, rank == 0)


def grad_scaler(runtime):
    """A GradScaler that is active only for float16 (bf16 and fp32 need none)."""
    return torch.amp.GradScaler('cuda' if runtime.device_type == 'cuda' else 'cpu', enabled=runtime.dtype == 'float16')


def same_on_all_ranks(value, runtime):
    """Rank 0's value of a float on every process: decisions taken on it (save best.pt) are then taken by all,
    which a collective save (FSDP) needs."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=runtime.device)
    dist.broadcast(t, src=0)
    return t.item()


def cleanup_runtime(runtime):
    """Leave the process group together: a rank that tears it down while another is still saving or drawing its
    last evaluation can abort the run at exit (gloo)."""
    if runtime.ddp:
        gc.collect()  # the run's last DTensors and collective works hold the group: free them while Python is whole
        dist.barrier()
        dist.destroy_process_group()


# dense bf16 peak FLOP/s of known accelerators, for the MFU train.py logs; bench.py measures the machine's own
PEAK_FLOPS = {'A100': 312e12, 'H100': 989e12, 'H200': 989e12, 'L4': 121e12, 'A10': 125e12, 'RTX 4090': 165e12,
              'RTX 3090': 71e12}


def peak_flops_for(device_name):
    """Look up the table by a device name such as torch.cuda.get_device_name(); None if unknown."""
    return next((value for key, value in PEAK_FLOPS.items() if key.lower() in device_name.lower()), None)


def cpu_compiler():
    """The C++ compiler torch.compile would build CPU kernels with (as Inductor looks: $CXX, else g++; clang++ on
    macOS), or None."""
    return shutil.which(os.environ.get('CXX', 'clang++' if sys.platform == 'darwin' else 'g++'))


def wrap(model, runtime, use_compile=False, dynamic=None, ddp=True, find_unused_parameters=False):
    """The model the step runs: torch.compile'd if use_compile (dynamic: torch.compile's), then in DDP under torchrun
    unless ddp=False (an FSDP run is sharded instead). Build the optimizer on the plain model first."""
    if use_compile and runtime.device_type == 'cpu' and not cpu_compiler():
        raise UserError("compile=True on a CPU needs a C++ compiler (g++, or $CXX): install one or leave compile off")
    if use_compile:
        model = torch.compile(model, dynamic=dynamic)
    if runtime.ddp and ddp:
        model = DDP(model, device_ids=[runtime.local_rank] if runtime.device_type == 'cuda' else None,
                    find_unused_parameters=find_unused_parameters)
    return model


def unwrap(model):
    """The plain Transformer inside DDP and/or torch.compile wrappers."""
    model = getattr(model, 'module', model)
    return getattr(model, '_orig_mod', model)


@contextlib.contextmanager
def eval_mode(model):
    """model.eval() for the block (no dropout), then the training flag it had before: evaluations mid-training."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
