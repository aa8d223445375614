"""
What tests/test_fsdp.py runs under torchrun (2 gloo processes on the CPU), one mode per invocation:

    torchrun --standalone --nproc_per_node=2 tests/fsdp_worker.py memory OUT.json
    torchrun --standalone --nproc_per_node=2 tests/fsdp_worker.py kill RUN_DIR

memory: one train step of the same model under DDP and under FSDP; rank 0 writes each rank's bytes of parameters,
        gradients and optimizer state (fsdp.state_bytes) for both.
kill:   a sharded checkpoint is saved, the model trains a step, and during the second save rank 1 kills itself
        with SIGKILL before writing its shard (a crash at the worst moment); RUN_DIR/reference.pt holds the first
        checkpoint's weights to compare with.
"""
import json
import os
import signal
import sys

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train  # noqa: E402
from runtime import cleanup_runtime, grad_scaler, setup_runtime  # noqa: E402
import fsdp  # noqa: E402
import optim  # noqa: E402
from model import ModelConfig, Transformer  # noqa: E402

CONFIG = dict(n_layer=2, n_head=2, n_embd=64, block_size=16, vocab_size=128, dropout=0.0, bias=False)


def fresh(runtime, optimizer='adamw'):
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**CONFIG))
    return model, lambda m: optim.configure_optimizers(m, optimizer, 1e-3, 0.1, (0.9, 0.95), 'cpu', fused=False)


def step(model, opt, runtime, keep_grads=False):
    """A train step; keep_grads: then one more backward, so that the gradients are there to be counted."""
    g = torch.Generator().manual_seed(runtime.rank)
    x, y = (torch.randint(0, CONFIG['vocab_size'], (4, 16), generator=g) for _ in range(2))
    train.train_step(model, opt, grad_scaler(runtime), [(x, y)], runtime, grad_clip=1.0)
    if keep_grads:
        model(x, y)[1].backward()


def memory(runtime, out):
    model, make_opt = fresh(runtime, 'muon')
    ddp = DDP(model)
    opt = make_opt(model)
    step(ddp, opt, runtime, keep_grads=True)
    ddp_bytes = fsdp.state_bytes(model, opt)
    model, make_opt = fresh(runtime, 'muon')
    fsdp.shard(model, runtime)
    opt = make_opt(model)
    step(model, opt, runtime, keep_grads=True)
    fsdp_bytes = fsdp.state_bytes(model, opt)
    rows = [None] * runtime.world_size
    dist.all_gather_object(rows, {'ddp': ddp_bytes, 'fsdp': fsdp_bytes})
    if runtime.master:
        with open(out, 'w') as f:
            json.dump(rows, f)


def kill(runtime, run_dir):
    model, make_opt = fresh(runtime)
    fsdp.shard(model, runtime)
    opt = make_opt(model)
    step(model, opt, runtime)
    path = os.path.join(run_dir, 'last.dcp')
    fsdp.save_sharded(path, model, opt, {'model_args': CONFIG, 'config': {}, 'meta': {}}, runtime)
    reference = fsdp.full_state_dict(model)
    if runtime.master:
        torch.save(reference, os.path.join(run_dir, 'reference.pt'))
    step(model, opt, runtime)
    if runtime.rank == 1:
        def die(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGKILL)
        dcp.FileSystemWriter.write_data = die
    fsdp.save_sharded(path, model, opt, {'model_args': CONFIG, 'config': {}, 'meta': {}}, runtime)
    print("the second save completed: the kill did not happen", file=sys.stderr)
    sys.exit(3)


if __name__ == '__main__':
    mode, target = sys.argv[1:3]
    runtime = setup_runtime('cpu', 'float32', 0)
    {'memory': memory, 'kill': kill}[mode](runtime, target)
    cleanup_runtime(runtime)
