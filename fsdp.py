"""
Fully sharded data parallel (FSDP2): each process holds 1/N of the weights, gradients and optimizer state, and
gathers a block's weights only while it computes with them. Checkpoints are sharded too, and reshard on load.

    torchrun --standalone --nproc_per_node=8 train.py config/pretrain_gpt2.py --fsdp=True
    torchrun --standalone --nproc_per_node=8 train.py config/pretrain_gpt2.py --fsdp=True --init_from=resume
    torchrun --standalone --nproc_per_node=2 finetune.py config/finetune_bbc.py --fsdp=True
    python train.py config/pretrain_small.py --fsdp=True --init_from=resume  # a sharded run, continued by 1 process
    python fsdp.py out/gpt2                 # consolidate out/gpt2/best.dcp (else last.dcp) into out/gpt2/best.pt
    python fsdp.py out/gpt2/last.dcp --output=out/gpt2/last.pt

An FSDP run of train.py writes out_dir/last.dcp and best.dcp, directories of torch.distributed.checkpoint: each
process writes its own shard, and a file per process plus .metadata (where each tensor's pieces are) plus
checkpoint.json (the config, iteration, RNG states, optimizer settings: plain values, no pickle). Any number of
processes resumes one (the pieces are re-cut on load), and every script that reads a checkpoint (sample.py,
finetune.py, plot.py, features.py, export.py) reads a .dcp directory directly; this script makes the single
.pt file of the same checkpoint, for sharing. finetune.py under FSDP writes best.pt as always: a fine-tuned
model is read by --predict and export, not resumed.

PyTorch's own FSDP2 (torch.distributed.fsdp.fully_shard, Zhao et al. 2023 describe FSDP) and distributed
checkpoint do the work; this file only decides what is sharded, in which precision, and where files go.
"""

import os
import sys

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_state_dict,
                                                     set_state_dict)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import (CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard,
                                    register_fsdp_forward_method)
from torch.distributed.tensor import DTensor
from torch.utils.checkpoint import checkpoint as recompute

import checkpoints
from configurator import UserError, config_defaults, configure, run_main
from files import full_disk_is_user_error, swap_in, temp_path, write_json

# -----------------------------------------------------------------------------
# sharding a model

def shard(model, runtime, cpu_offload=False):
    """model (a Transformer on runtime.device) sharded in place over all processes: each block, then the root
    (embeddings, final norm, heads), becomes one FSDP unit whose weights are gathered for its forward and backward
    only. bf16 runs compute in bf16 and reduce gradients in float32; the sharded weights and the optimizer stay
    float32. One process without torchrun gets a process group of its own, so that the same code and checkpoints
    serve any number of processes."""
    check_settings(runtime, True, cpu_offload)
    if not dist.is_initialized():
        dist.init_process_group('nccl' if runtime.device_type == 'cuda' else 'gloo', store=dist.HashStore(),
                                rank=0, world_size=1)
    mesh = init_device_mesh(runtime.device_type, (dist.get_world_size(),))
    options = dict(mesh=mesh, offload_policy=CPUOffloadPolicy() if cpu_offload else OffloadPolicy())
    if runtime.dtype != 'float32':
        options['mp_policy'] = MixedPrecisionPolicy(param_dtype=getattr(torch, runtime.dtype), reduce_dtype=torch.float32)
    for block in model.transformer.h:
        fully_shard(block, **options)
    fully_shard(model, **options)
    # evaluation and generation call hidden_states, then a head: it gathers like forward (the root's own weights,
    # embeddings and heads, stay gathered after a forward until backward, as FSDP2 keeps the root's)
    register_fsdp_forward_method(model, 'hidden_states')
    return model


def place(model, runtime, fsdp=False, activation_checkpointing=False, cpu_offload=False):
    """model on runtime.device, its blocks recomputed in backward if activation_checkpointing, sharded if fsdp: what
    train.py and finetune.py do before building the optimizer (which must hold the shards)."""
    model.to(runtime.device)
    if activation_checkpointing:
        for block in model.transformer.h:
            checkpoint_activations(block)
    return shard(model, runtime, cpu_offload=cpu_offload) if fsdp else model


def check_settings(runtime, fsdp, cpu_offload, optimizer='adamw'):
    """The sharding settings that cannot go together, and what shard() cannot do, refused in one line (the scripts
    call it at start, before any data is prepared)."""
    if cpu_offload and not fsdp:
        raise UserError("cpu_offload=True offloads the shards of an FSDP run: use it with --fsdp=True")
    if cpu_offload and optimizer == 'muon':  # its all-gather of each matrix would see shards in CPU memory
        raise UserError("optimizer='muon' gathers every matrix on the GPU, which cpu_offload=True keeps in CPU "
                        "memory: use --optimizer=adamw with offload, or drop --cpu_offload")
    if cpu_offload and runtime.device_type != 'cuda':
        raise UserError("cpu_offload=True keeps a GPU run's weights in CPU memory: this run is on "
                        f"{runtime.device_type}, where they already are; drop --cpu_offload")
    if fsdp and runtime.dtype == 'float16':
        raise UserError("fsdp=True trains in bfloat16 or float32 (float16 would need a sharded GradScaler): "
                        "use --dtype=bfloat16")


def checkpoint_activations(block):
    """Keep only the block's input for backward and recompute its activations there (Chen et al. 2016): memory
    per block of ~ B*T*C instead of many B*T*C and B*nh*T*T, for one more forward. The forward is replaced on
    the instance, so parameter names (and checkpoints) stay those of the plain model."""
    forward = block.forward
    block.forward = lambda *args, **kwargs: recompute(forward, *args, use_reentrant=False, **kwargs)


def state_bytes(model, optimizer):
    """Bytes this process holds of the parameters, their gradients and the optimizer state: for a sharded tensor
    its local shard only. What FSDP divides by the number of processes and DDP does not."""
    def size(t):
        t = t.to_local() if isinstance(t, DTensor) else t
        return t.numel() * t.element_size()
    params = list(model.parameters())
    return {'params': sum(size(p) for p in params),
            'grads': sum(size(p.grad) for p in params if p.grad is not None),
            'optimizer': sum(size(v) for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v))}


def full_state_dict(model):
    """The whole (unsharded) state dict on rank 0, in CPU memory, gathered a tensor at a time; {} elsewhere. Every
    process must call it."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


# -----------------------------------------------------------------------------
# sharded checkpoints

def split_tensors(tree):
    """(tensors, plain): a nested dict cut in two of the same shape, one holding its tensors, the other the rest."""
    tensors, plain = {}, {}
    for key, value in tree.items():
        if isinstance(value, dict):
            tensors[key], plain[key] = split_tensors(value)
        elif torch.is_tensor(value):
            tensors[key] = value
        else:
            plain[key] = value
    return tensors, plain


def merge(tensors, plain):
    """The inverse of split_tensors."""
    merged = dict(plain)
    for key, value in tensors.items():
        merged[key] = merge(value, plain.get(key, {})) if isinstance(value, dict) else value
    return merged


def jsonable_rng(states):
    """checkpoints.rng_states() with its tensors as lists of bytes, for checkpoint.json."""
    return {k: (v.tolist() if torch.is_tensor(v) else [s.tolist() for s in v] if k == 'cuda' else v)
            for k, v in states.items()}


def save_sharded(path, model, optimizer, plain, runtime):
    """Write the checkpoint directory path (e.g. out_dir/last.dcp) from every process at once: the model's and
    the optimizer's tensors through torch.distributed.checkpoint, each process its own shard, and plain (a dict
    of JSON values: config, iteration, ...) as checkpoint.json. Written into a temp directory beside path and
    moved into place once complete (swap_in): a crash or a killed process at any moment leaves the
    previous checkpoint as it was, and the next run in that directory removes the temp directory."""
    model_state, optimizer_state = get_state_dict(model, optimizer)
    optimizer_tensors, optimizer_plain = split_tensors(optimizer_state)
    tmp = [temp_path(path)]
    dist.broadcast_object_list(tmp, src=0)  # one temp directory for all: rank 0's pid names it
    tmp = tmp[0]
    with full_disk_is_user_error(path, "the previous checkpoint is intact; free some space and run again"):
        dcp.save({'model': model_state, 'optimizer': optimizer_tensors}, storage_writer=dcp.FileSystemWriter(tmp))
        if runtime.master:
            write_json(os.path.join(tmp, checkpoints.SHARDED_JSON), {**plain, 'optimizer': optimizer_plain})
            swap_in(tmp, path, tmp + '.old')
    dist.barrier()  # no process goes on (or exits) before the checkpoint is in place


def load_sharded(path, model, optimizer):
    """Fill the sharded model and optimizer from the checkpoint directory path, whatever number of processes wrote
    it: each process reads the pieces of its own shards. Returns checkpoint.json's plain values."""
    plain = checkpoints.read_sharded_json(path)
    checkpoints.SafeCheckpointReader(path).read_metadata()  # an unsafe index refused here, in one line
    model_state, optimizer_state = get_state_dict(model, optimizer)  # the shapes to fill (creates optimizer state)
    state = {'model': model_state, 'optimizer': split_tensors(optimizer_state)[0]}
    try:
        dcp.load(state, storage_reader=checkpoints.SafeCheckpointReader(path))
    except (RuntimeError, ValueError, KeyError) as e:
        raise UserError(f"{path} does not fit this model and optimizer ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:200]}): resume with the run's own settings") from None
    set_state_dict(model, optimizer, model_state_dict=state['model'],
                   optim_state_dict=merge(state['optimizer'], plain['optimizer']))
    return plain


# -----------------------------------------------------------------------------
# python fsdp.py RUN_OR_DCP [--output=FILE]: one .pt of a sharded checkpoint

output = None  # default: beside the .dcp directory, the same name with .pt (best.dcp -> best.pt)
trust_checkpoint = False  # accepted for symmetry with the other scripts; a .dcp we write never needs it


def consolidate(source, output=None):
    """Write the single .pt file (model, config, meta; no optimizer state) of the sharded checkpoint source: a
    .dcp directory or a run directory (its best.dcp, else last.dcp). Returns the path written."""
    path = checkpoints.checkpoint_path(source)
    if not os.path.isdir(path):
        raise UserError(f"{path} is already a single file: nothing to consolidate")
    checkpoint = checkpoints.read(path)  # without the optimizer state, which only a resumed FSDP run reads
    output = output or os.path.splitext(path.rstrip(os.sep))[0] + '.pt'
    if os.path.exists(output):
        raise UserError(f"{output} exists: pass another --output (nothing is overwritten)")
    checkpoints.save_checkpoint(output, checkpoint)
    return output


def main():
    args = [a for a in sys.argv[1:] if not a.startswith('--')]
    config = configure(config_defaults(globals()), [a for a in sys.argv[1:] if a.startswith('--')])
    if len(args) != 1:
        raise UserError("usage: python fsdp.py RUN_DIR_OR_DCP_DIR [--output=FILE.pt]")
    written = consolidate(args[0], config['output'])
    print(f"wrote {written}: sample.py, finetune.py, plot.py, features.py and export.py read it "
          f"(without optimizer state: resume from the .dcp directory)")


if __name__ == '__main__':
    run_main(main)
