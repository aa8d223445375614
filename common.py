"""
What train.py and finetune.py both need, as plain functions: device/DDP/dtype setup, the learning-rate
schedule, batches, evaluation, checkpoints and the metrics log. Not a script: `import common`.
"""

import contextlib
import errno
import json
import math
import os
import pickle
import random
import shutil
import sys
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

import hf
from configurator import CHOICES, ConfigError
from model import IGNORE_INDEX, ModelConfig, Transformer
from tokenizer import GPT2_META, DataError, wordpiece_meta


class UserError(ValueError):
    """Bad input from the user: scripts print the one-line message and exit with status 2."""


def run_main(main):
    """Call main(); bad input (a UserError, config or data error) becomes one line on stderr and exit status 2."""
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
        dist.barrier()
        dist.destroy_process_group()


# dense bf16 peak FLOP/s of known accelerators, for the MFU train.py logs; bench.py measures the machine's own
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


def read_text_arg(value, key):
    """The text of a --key=text or --key=FILE:path option (sample.py's --start, finetune.py's --predict); a missing,
    empty or non-UTF-8 file is a one-line UserError."""
    if not value.startswith('FILE:'):
        return value
    path = value[5:]
    try:
        with open(path, encoding='utf-8') as f:
            text = f.read()
    except FileNotFoundError:
        raise UserError(f"--{key}=FILE:{path}: file not found") from None
    except IsADirectoryError:
        raise UserError(f"--{key}=FILE:{path} is a directory: name a text file") from None
    except UnicodeDecodeError as e:
        raise UserError(f"--{key}=FILE:{path} is not UTF-8 ({e.reason} at byte {e.start}): convert it first, "
                        f"e.g. iconv -f latin1 -t utf-8") from None
    if not text.strip():
        raise UserError(f"--{key}=FILE:{path} is empty: put the text in it")
    return text


# ----------------------------------------------------------------------------------------------------------------
# learning rate

LR_SCHEDULES = CHOICES['lr_schedule']


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


def text_windows(n_tokens, room, truncation='head', max_windows=4):
    """([(start, end)], cut): the spans of a text's n_tokens tokens that a classifier reads, each at most room long,
    and whether tokens were left out. 'head' keeps the first room tokens, 'tail' the last, 'windows' up to
    max_windows consecutive windows (finetune.py trains and predicts on them; features.py explains them)."""
    if truncation == 'windows':
        spans = [(start, min(start + room, n_tokens)) for start in range(0, max(n_tokens, 1), room)]
        return spans[:max_windows], len(spans) > max_windows
    start = 0 if truncation == 'head' else max(0, n_tokens - room)
    return [(start, min(start + room, n_tokens))], n_tokens > room


def train_step(model, optimizer, scaler, batches, runtime, grad_clip):
    """One optimizer step over the micro-batches [(x, y), ...] (gradient accumulation); returns the mean loss as a
    0-dim tensor, left on the device so that the caller decides when to sync. Under DDP gradients are all-reduced
    on the last micro-batch only (under FSDP reduce-scattered then). A micro-batch may also be a dict of forward's
    keyword arguments (get_mlm_batch)."""
    loss_sum = torch.zeros((), device=runtime.device)
    for micro, batch in enumerate(batches):
        sync = micro == len(batches) - 1
        if isinstance(model, DDP):
            model.require_backward_grad_sync = sync
        elif hasattr(unwrap(model), 'set_requires_gradient_sync'):  # FSDP: reduce-scatter on the last one only
            unwrap(model).set_requires_gradient_sync(sync)
        with runtime.autocast():
            _, loss = model(**batch) if isinstance(batch, dict) else model(*batch)
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
# masked-LM and next-sentence batches (BERT)

def mask_tokens(tokens, mask_id, n_random, special_ids, mlm_probability=0.15, generator=None):
    """BERT's masking (Devlin et al. 2019, sec. 3.1 and appendix A.1) of tokens (B, T), a CPU LongTensor: each
    position whose id is not in special_ids is selected with probability mlm_probability; a selected one becomes
    mask_id (80%), a random id in [0, n_random) (10%), or stays as it is (10%). Returns (inputs, targets), targets
    holding the original id at selected positions and IGNORE_INDEX elsewhere. Pass a seeded torch.Generator to
    make the mask a function of the batch key; a fresh key gives a fresh mask (dynamic masking, RoBERTa)."""
    selectable = ~torch.isin(tokens, torch.tensor(sorted(special_ids), dtype=tokens.dtype))
    selected = (torch.rand(tokens.shape, generator=generator) < mlm_probability) & selectable
    action = torch.rand(tokens.shape, generator=generator)  # < 0.8: mask, < 0.9: random, else keep
    random_ids = torch.randint(0, n_random, tokens.shape, generator=generator)
    inputs = torch.where(selected & (action < 0.8), mask_id, tokens)
    inputs = torch.where(selected & (action >= 0.8) & (action < 0.9), random_ids, inputs)
    return inputs, torch.where(selected, tokens, IGNORE_INDEX)


def document_spans(data, eot_id, chunk=1 << 26):
    """(starts, ends) int64 arrays of the documents in a token array: the non-empty runs between eot ids."""
    eots = [np.flatnonzero(np.asarray(data[i:i + chunk]) == eot_id) + i for i in range(0, len(data), chunk)]
    bounds = np.concatenate([[-1], *eots, [len(data)]]).astype(np.int64)
    starts, ends = bounds[:-1] + 1, bounds[1:]
    keep = ends > starts
    return starts[keep], ends[keep]


def segment_pairs(data, docs, batch_size, block_size, rng, cls_id, sep_id):
    """Next-sentence pairs `[CLS] A [SEP] B [SEP]` (B, block_size) with token types (0 up to the first [SEP], 1
    after) and labels (B,): 0 when B is A's continuation in the same document, 1 when B comes from another
    document (each half the time). A is cut at a random point; neither segment crosses a document boundary."""
    starts, ends = docs
    lengths = ends - starts
    n = block_size - 3  # tokens of A and B together
    long_enough = np.flatnonzero(lengths >= n)
    if len(long_enough) < 2:
        raise UserError(f"next-sentence pairs need two documents of at least {n} tokens; this split has "
                        f"{len(long_enough)}: use a smaller --block_size or a corpus of longer documents")
    cumulative = np.cumsum(lengths[long_enough])  # documents drawn by length, so that every token is alike

    def draw_document():
        return long_enough[np.searchsorted(cumulative, rng.integers(0, cumulative[-1]), side='right')]

    tokens = np.empty((batch_size, block_size), dtype=np.int64)
    token_types = np.zeros((batch_size, block_size), dtype=np.int64)
    labels = rng.integers(0, 2, size=batch_size)
    for row in range(batch_size):
        doc = draw_document()
        n_a = int(rng.integers(n // 4, n - n // 4 + 1))  # A takes a quarter to three quarters
        start = starts[doc] + rng.integers(0, lengths[doc] - n + 1)
        a, b = data[start:start + n_a], data[start + n_a:start + n]
        if labels[row] == 1:
            other = doc
            while other == doc:
                other = draw_document()
            b_start = starts[other] + rng.integers(0, lengths[other] - (n - n_a) + 1)
            b = data[b_start:b_start + n - n_a]
        tokens[row] = np.concatenate([[cls_id], a, [sep_id], b, [sep_id]])
        token_types[row, n_a + 2:] = 1
    return tokens, token_types, labels


def get_mlm_batch(data, batch_size, block_size, key, device, special, mlm_probability=0.15, docs=None):
    """A masked-LM batch as forward's keyword arguments, fixed by key alone (as get_batch). special: the ids of
    special_tokens(meta). Without docs, each row is `[CLS] window [SEP]` of a random window of data
    (documents packed, their eot ids kept, as RoBERTa's FULL-SENTENCES); with docs (document_spans) each row is a
    next-sentence pair (segment_pairs) and the batch carries token_type_ids and nsp_labels."""
    rng = np.random.default_rng(key)
    batch = {}
    if docs is None:
        n = block_size - 2
        starts = rng.integers(0, len(data) - n + 1, size=batch_size)
        tokens = np.stack([np.concatenate([[special['cls']], data[s:s + n], [special['sep']]]) for s in starts])
    else:
        tokens, token_types, labels = segment_pairs(data, docs, batch_size, block_size, rng, special['cls'], special['sep'])
        batch.update(token_type_ids=torch.from_numpy(token_types), nsp_labels=torch.from_numpy(labels))
    generator = torch.Generator().manual_seed(int(rng.integers(0, 2 ** 62)))
    specials = {special[k] for k in ('mask', 'cls', 'sep', 'pad', 'eot', 'unk') if k in special}
    batch['idx'], batch['targets'] = mask_tokens(torch.from_numpy(tokens.astype(np.int64)), special['mask'],
                                                 special['n_random'], specials, mlm_probability, generator)
    return {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def estimate_mlm(model, batches, runtime):
    """Masked-LM loss and masked-token accuracy over batches (dicts from get_mlm_batch), and the accuracy of always
    predicting the most frequent masked token, the baseline to beat; NSP loss and accuracy when batches have
    nsp_labels. Token-weighted means over all masked positions."""
    was_training = model.training
    model.eval()
    loss_sum = correct = n_masked = nsp_loss_sum = nsp_correct = n_pairs = 0.0
    target_counts = {}
    for batch in batches:
        selected = batch['targets'] != IGNORE_INDEX
        targets = batch['targets'][selected]
        with runtime.autocast():
            x = model.hidden_states(batch['idx'], token_type_ids=batch.get('token_type_ids'))
            logits = model.mlm_head(x[selected])  # (N, V), only where there is a target
            nsp_logits = model.nsp_head(model.pooler(x)) if 'nsp_labels' in batch else None
        loss_sum += F.cross_entropy(logits.float(), targets, reduction='sum').item()
        correct += (logits.argmax(-1) == targets).sum().item()
        n_masked += len(targets)
        for token, count in zip(*np.unique(targets.cpu().numpy(), return_counts=True)):
            target_counts[int(token)] = target_counts.get(int(token), 0) + int(count)
        if nsp_logits is not None:
            nsp_loss_sum += F.cross_entropy(nsp_logits.float(), batch['nsp_labels'], reduction='sum').item()
            nsp_correct += (nsp_logits.argmax(-1) == batch['nsp_labels']).sum().item()
            n_pairs += len(batch['nsp_labels'])
    model.train(was_training)
    n_masked = max(n_masked, 1)
    result = {'mlm_loss': loss_sum / n_masked, 'mlm_acc': correct / n_masked,
              'mlm_baseline_acc': max(target_counts.values(), default=0) / n_masked}
    if n_pairs:
        result.update(nsp_loss=nsp_loss_sum / n_pairs, nsp_acc=nsp_correct / n_pairs)
    return result


# ----------------------------------------------------------------------------------------------------------------
# checkpoints

TEMP_PREFIX = '.tmp-'  # every temp file we write is <dir>/.tmp-<pid>-<name>: a later run knows and removes it
SHARDED_JSON = 'checkpoint.json'  # a sharded checkpoint's plain values, beside torch.distributed.checkpoint's files


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temp name beside path to write to; renamed to path when the block ends without an error, removed
    otherwise: a crash never leaves half a file, and never touches an existing one. A temp file that a killed
    process (SIGKILL) could not remove is removed by the next run in that directory (remove_stale_temps)."""
    directory, name = os.path.split(path)
    os.makedirs(directory or '.', exist_ok=True)
    tmp = os.path.join(directory, f"{TEMP_PREFIX}{os.getpid()}-{name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path, obj):
    with atomic_path(path) as tmp, open(tmp, 'w') as f:
        json.dump(obj, f, indent=2)


def write_jsonl(path, rows):
    with atomic_path(path) as tmp, open(tmp, 'w', encoding='utf-8') as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + '\n' for row in rows)


def swap_in(new, path, old):
    """Move the complete directory new to path. An existing path is renamed to old first (and put back if the move
    fails), then removed: at every moment path is either the old directory or the new one."""
    if not os.path.exists(path):
        os.replace(new, path)
        return
    os.replace(path, old)
    try:
        os.replace(new, path)
    except OSError:
        os.replace(old, path)
        raise
    shutil.rmtree(old)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except (OverflowError, ValueError):  # not a pid this system can have
        return False
    return True


def remove_stale_temps(directory):
    """Remove the temp files (atomic_path) and directories (a sharded checkpoint being written) that processes no
    longer alive left in directory; returns their names."""
    removed = []
    for name in os.listdir(directory) if os.path.isdir(directory) else ():
        pid = name[len(TEMP_PREFIX):].split('-', 1)[0]
        if name.startswith(TEMP_PREFIX) and pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            path = os.path.join(directory, name)
            with contextlib.suppress(OSError):
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
                removed.append(name)
    return removed


def write_failed(e):
    """Whether an error of a write means the disk (or a file-size limit) is full."""
    if isinstance(e, OSError):
        return e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
    return isinstance(e, RuntimeError) and any(s in str(e) for s in ('unexpected pos', 'file write failed',
                                                                    'No space left', 'File too large'))


def save_checkpoint(path, checkpoint):
    """torch.save to a temp file in the same directory, fsync, then rename (atomic_path). A full disk or a file-size
    limit is a one-line UserError; the previous file at path is left as it was."""
    try:
        with atomic_path(path) as tmp, open(tmp, 'wb') as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
    except (OSError, RuntimeError) as e:
        if not write_failed(e):
            raise
        previous = f"the previous {os.path.basename(path)} is intact" if os.path.exists(path) else "nothing was written"
        raise UserError(f"no space left / file too large while writing {path}: {previous}; free some space "
                        f"(or raise the limit) and run again") from None


CHECKPOINT_NAMES = ('best.pt', 'best.dcp', 'last.pt', 'last.dcp')  # what a run directory can hold


def checkpoint_path(path):
    """The checkpoint a path means, for every script: a .pt file, or a .dcp directory (a sharded checkpoint of an
    FSDP run, fsdp.py), as given; a run directory means its best checkpoint (the lowest val loss, what fine-tuning
    and sampling want: best.pt, or best.dcp, the newer if both), else its last. --init_from=resume reads the last."""
    if os.path.isdir(path) and not path.rstrip(os.sep).endswith('.dcp'):
        for kind in ('best', 'last'):
            held = [name for name in (os.path.join(path, kind + '.pt'), os.path.join(path, kind + '.dcp'))
                    if os.path.exists(name)]
            if held:
                return max(held, key=os.path.getmtime)  # both: a .pt consolidated from a sharded run that went on
        raise UserError(f"{path} holds no checkpoint (best.pt or last.pt): train one first or pass a .pt file")
    if not os.path.exists(path):
        raise UserError(f"checkpoint {path} not found: train one first or pass the path of a .pt file")
    return path


def load_checkpoint(path, device='cpu', trust=False):
    """A train.py / finetune.py checkpoint (a .pt file or a run directory, see checkpoint_path). Loaded with
    torch.load(weights_only=True): tensors and plain Python values only, so a checkpoint can never run code. A
    pickle that needs more is refused, unless trust=True (--trust_checkpoint=True), for old or foreign files."""
    path = checkpoint_path(path)
    if os.path.isdir(path):
        return read_sharded(path, device)
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=not trust)
    except pickle.UnpicklingError as e:
        if 'GLOBAL' not in str(e) and 'Unsupported global' not in str(e):  # garbage, not a refused Python object
            raise UserError(f"checkpoint {path} cannot be read (UnpicklingError): it is damaged or not a checkpoint") from None
        raise UserError(f"{path} holds Python objects besides tensors, which could run code when loaded: refused. "
                        f"If you trust where it comes from, pass --trust_checkpoint=True") from None
    except Exception as e:
        raise UserError(f"checkpoint {path} cannot be read ({type(e).__name__}): it is damaged or not a checkpoint") from None
    if trust:
        print(f"warning: {path} was unpickled with weights_only=False (--trust_checkpoint=True): any code in it ran",
              file=sys.stderr)
    if not isinstance(checkpoint, dict) or 'model' not in checkpoint or 'model_args' not in checkpoint:
        raise UserError(f"{path} is not a scratchlm checkpoint (no model / model_args)")
    checkpoint['model'] = clean_state_dict(checkpoint['model'])
    return checkpoint


# The exact globals the .metadata index of torch.distributed.checkpoint names (read off the index torch 2.13
# writes: its dataclasses, torch.Size, the dtypes, a layout by name, the checkpoint's path): nothing else is built.
# Names are matched whole, so a dotted name ('os.system' inside an allowed module) is never followed.
DCP_GLOBALS = {
    ('torch.distributed.checkpoint.metadata', name) for name in (
        'Metadata', 'TensorStorageMetadata', 'BytesStorageMetadata', 'ChunkStorageMetadata', 'TensorProperties',
        'MetadataIndex', 'StorageMeta', '_MEM_FORMAT_ENCODING')} | {
    ('torch.distributed.checkpoint.filesystem', '_StorageInfo'), ('torch', 'Size'),
    ('torch.serialization', '_get_layout'), ('pathlib', 'PosixPath')} | {
    ('torch', name) for name, value in vars(torch).items() if isinstance(value, torch.dtype)}


class SafeCheckpointReader(dcp.FileSystemReader):
    """torch.distributed.checkpoint's file reader, whose .metadata (an index of the tensors' pieces) is a pickle:
    read here by an unpickler that builds only the index's own classes (DCP_GLOBALS, exact names), and checked to
    be an index and nothing else, so a sharded checkpoint cannot run code either. Entries that are not tensors
    (pickled Python objects, which we never write) are refused, and so are pieces outside the directory."""

    class Unpickler(pickle.Unpickler):

        def find_class(self, module, name):
            if (module, name) in DCP_GLOBALS:
                return super().find_class(module, name)
            raise pickle.UnpicklingError(f"Unsupported global {module}.{name} in a checkpoint's .metadata")

        def persistent_load(self, pid):
            raise pickle.UnpicklingError("persistent ids in a checkpoint's .metadata")

    def read_metadata(self, *args, **kwargs):
        path = os.path.join(self.path, '.metadata')
        try:
            with open(path, 'rb') as f:
                metadata = self.Unpickler(f).load()
                trailing = f.read(1)
        except pickle.UnpicklingError:
            raise UserError(f"{path} holds Python objects besides the tensor index, which could run code: refused") from None
        except Exception as e:  # a damaged file: EOFError, a bad opcode's ValueError, a dataclass's TypeError, ...
            raise UserError(f"{path} cannot be read ({type(e).__name__}): the sharded checkpoint is incomplete or damaged") from None
        problem = 'bytes after the index' if trailing else index_problem(metadata)
        if problem:
            raise UserError(f"{path} is not a tensor index torch wrote ({problem}): refused")
        if any(isinstance(entry, dcp.metadata.BytesStorageMetadata) for entry in metadata.state_dict_metadata.values()):
            raise UserError(f"{self.path} holds pickled Python objects besides tensors, which could run code: refused")
        if getattr(metadata, 'storage_meta', None) is None:
            metadata.storage_meta = dcp.metadata.StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


def index_problem(metadata):
    """What makes an unpickled .metadata something other than the index torch writes, or '' for a sound one: its
    types, and the relative paths of its pieces (plain file names in the checkpoint directory)."""
    md = dcp.metadata
    if not isinstance(metadata, md.Metadata):
        return f"a {type(metadata).__name__}, not a Metadata"
    entries, storage = metadata.state_dict_metadata, metadata.storage_data
    if not isinstance(entries, dict) or not all(isinstance(k, str) and isinstance(
            v, (md.TensorStorageMetadata, md.BytesStorageMetadata)) for k, v in entries.items()):
        return "state_dict_metadata is not a dict of tensor entries"
    for entry in entries.values():
        if isinstance(entry, md.TensorStorageMetadata) and not (
                isinstance(entry.properties, md.TensorProperties) and isinstance(entry.size, torch.Size)
                and isinstance(entry.chunks, list) and all(isinstance(c, md.ChunkStorageMetadata) for c in entry.chunks)):
            return "a tensor entry of the wrong shape"
    if not isinstance(storage, dict) or not all(isinstance(k, md.MetadataIndex) for k in storage):
        return "storage_data is not a dict of MetadataIndex"
    for info in storage.values():
        if not isinstance(info, dcp.filesystem._StorageInfo):
            return f"a piece described by a {type(info).__name__}"
        relative = info.relative_path
        if not isinstance(relative, str) or os.path.basename(relative) != relative or relative in ('', '.', '..'):
            return f"a piece stored at {relative!r}, not a file of the checkpoint directory"
    return ''


def read_sharded_json(path):
    try:
        with open(os.path.join(path, SHARDED_JSON), encoding='utf-8') as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is not a complete sharded checkpoint ({SHARDED_JSON}: {type(e).__name__})") from None


def read_sharded(path, device='cpu'):
    """A sharded checkpoint directory (fsdp.save_sharded) read whole by one process, without a process group: the
    same dict as a .pt checkpoint (model weights as full tensors, model_args, config, meta, ...), except the
    optimizer state, which a resumed FSDP run reads itself (fsdp.load_sharded)."""
    checkpoint = read_sharded_json(path)
    checkpoint.pop('optimizer', None)
    SafeCheckpointReader(path).read_metadata()  # an unsafe index refused here, in one line, not inside dcp's retries
    # what torch's own dcp_to_torch_save does: a planner that allocates every tensor the index names, then load
    from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict
    state = {}
    _load_state_dict(state, storage_reader=SafeCheckpointReader(path), planner=_EmptyStateDictLoadPlanner(keys={'model'}),
                     no_dist=True)
    checkpoint['model'] = {k: v.to(device) for k, v in state['model'].items()}
    return checkpoint


@contextlib.contextmanager
def run_lock(out_dir):
    """Hold out_dir/.lock (the owner's pid) while a run writes there: a second run into the same out_dir fails at
    start with one line. A lock whose pid is no longer alive (a run killed with SIGKILL) is taken over. An out_dir
    made here and still empty at the end (the run stopped on bad input) is removed again."""
    created = not os.path.isdir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, '.lock')
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            try:
                with open(path) as f:
                    owner = int(f.read().strip() or 0)
            except (OSError, ValueError):
                owner = 0
            if owner and owner != os.getpid() and pid_alive(owner):
                raise UserError(f"{out_dir} is in use by another run (pid {owner}, see {path}): wait for it to end "
                                f"or choose another --out_dir") from None
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)  # stale: its run is gone
    else:
        raise UserError(f"cannot take the lock {path}: another run is starting in {out_dir}; try again")
    with os.fdopen(fd, 'w') as f:
        f.write(str(os.getpid()))
    remove_stale_temps(out_dir)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(out_dir)  # only if empty


def clean_state_dict(state_dict):
    """Strip the wrappers' prefixes: '_orig_mod.' from torch.compile, 'module.' from DDP. The one place for it."""
    cleaned = {}
    for k, v in state_dict.items():
        while k.startswith(('_orig_mod.', 'module.')):  # in any order: DDP(compile(m)) gives 'module._orig_mod.'
            k = k.split('.', 1)[1]
        cleaned[k] = v
    return cleaned


def with_heads(model, **heads):
    """The model with the heads (and token types) the run needs switched on, fresh weights for the new ones: e.g. an
    MLM head on a BertModel checkpoint. Heads the model has already are kept with their weights."""
    new = {k: v for k, v in heads.items() if v and not getattr(model.config, k)}
    if not new:
        return model
    grown = Transformer(replace(model.config, **new))
    missing, unexpected = grown.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected, unexpected
    return grown.to(next(model.parameters()).device)


def model_from_checkpoint(checkpoint, dropout=None):
    args = dict(checkpoint['model_args'])
    if dropout is not None:
        args['dropout'] = dropout
    model = Transformer(ModelConfig.from_dict(args))
    model.load_state_dict(checkpoint['model'])
    return model


def load_pretrained(init_from, device='cpu', dropout=None, trust=False):
    """(model, meta) to fine-tune or sample from: a train.py / finetune.py checkpoint (a .pt file or a run directory)
    or an HF GPT-2 / BERT checkpoint (hf.is_hf_name; trust: read a pytorch_model.bin), or an export.py directory of
    any architecture (its scratchlm_meta.json). meta names the tokenizer and holds what it needs (the WordPiece
    vocabulary, a char list), so the tokenizer always comes from the checkpoint."""
    if hf.is_hf_name(init_from):
        try:
            model, directory, model_type = hf.load_model(init_from, dropout=dropout or 0.0, allow_pickle=trust)
        except (OSError, ValueError) as e:  # not found, not readable, not a model model.py can represent
            raise UserError(str(e)) from None
        exported = os.path.join(directory, hf.EXPORT_META)
        if os.path.isfile(exported):  # written by export.py: the tokenizer the model was trained with
            with open(exported, encoding='utf-8') as f:
                return model.to(device), json.load(f)
        if model_type not in ('gpt2', 'bert'):
            raise UserError(f"{init_from} is a {model_type} checkpoint: its weights load (hf.load_model), but scratchlm "
                            f"has no tokenizer for it yet (GPT-2 BPE, chars and WordPiece only)")
        if model_type == 'bert':
            meta = wordpiece_meta(directory)  # refuses a vocab.txt that does not fit the embeddings
            meta.update(tokenizer='wordpiece', vocab_size=len(meta['vocab']), eot_id=meta['special_ids']['sep'])
        else:
            meta = dict(GPT2_META)
        return model.to(device), meta
    checkpoint = load_checkpoint(init_from, device='cpu', trust=trust)
    if not checkpoint.get('meta'):
        raise UserError(f"{init_from} records no tokenizer (no 'meta'): it was not written by train.py or finetune.py")
    return model_from_checkpoint(checkpoint, dropout=dropout).to(device), checkpoint['meta']


def for_task(model, task_head, num_labels, pooling='auto'):
    """model with a fresh task head ('sequence' or 'token', num_labels classes) and without the pretraining heads
    (masked LM, next sentence) that fine-tuning does not train; BERT's pooler stays, the sequence head reads it."""
    config = replace(model.config, task_head=task_head, num_labels=num_labels, pooling=pooling, mlm_head=False,
                     nsp_head=False)
    tuned = Transformer(config)
    missing, unexpected = tuned.load_state_dict(model.state_dict(), strict=False)
    assert all(k.startswith('classifier.') for k in missing), missing
    assert all(k.startswith(('mlm_head.', 'nsp_head.')) for k in unexpected), unexpected
    return tuned.to(next(model.parameters()).device)


def unwrap(model):
    """The plain Transformer inside DDP and/or torch.compile wrappers."""
    model = model.module if hasattr(model, 'module') else model
    return getattr(model, '_orig_mod', model)


def rng_states():
    """Every random generator's state as tensors and plain Python values (what torch.load(weights_only=True) reads);
    numpy's global state too, though batches draw from their own keyed generators."""
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    states = {'torch': torch.get_rng_state(), 'python': random.getstate(),
              'numpy': [kind, keys.tolist(), int(pos), int(has_gauss), float(cached_gaussian)]}
    if torch.cuda.is_available():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states):
    torch.set_rng_state(states['torch'].cpu())
    kind, keys, pos, has_gauss, cached_gaussian = states['numpy']
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached_gaussian))
    random.setstate(tuple(v if not isinstance(v, list) else tuple(v) for v in states['python']))
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in states['cuda']])


# ----------------------------------------------------------------------------------------------------------------
# metrics log

class MetricsLog:
    """Appends one JSON object a line to out_dir/metrics.jsonl, each record in a single write: a line is complete
    or absent. resume_iter: the iteration of the checkpoint a run resumes from; records after it (and a torn last
    line) are dropped first, so that the log and the checkpoint agree. Mirrors scalars to tensorboard / wandb."""

    def __init__(self, out_dir, config, tensorboard=False, wandb_project=None, run_name=None, resume_iter=None):
        os.makedirs(out_dir, exist_ok=True)
        self.path = os.path.join(out_dir, 'metrics.jsonl')
        if resume_iter is not None and os.path.exists(self.path):
            self.keep_until(resume_iter)
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

    def keep_until(self, iter_num):
        """Rewrite the log (atomically) with its complete records up to iter_num."""
        kept = []
        with open(self.path, encoding='utf-8', errors='replace') as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a crash or a full disk
                if line.endswith('\n') and isinstance(record, dict) and record.get('iter', 0) <= iter_num:
                    kept.append(line)
        with atomic_path(self.path) as tmp, open(tmp, 'w', encoding='utf-8') as f:
            f.writelines(kept)

    def log(self, record):
        record = {'time': round(time.time(), 3), **record}
        line = (json.dumps(record) + '\n').encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, line)  # one write with O_APPEND: never interleaved, never half a record
            if written != len(line):  # short write (disk full): cut the torn piece off again
                os.ftruncate(fd, os.lseek(fd, 0, os.SEEK_END) - written)
                raise OSError(errno.ENOSPC, 'No space left on device')
        except OSError as e:
            raise UserError(f"cannot append to {self.path} ({e.strerror}): free some space and resume with "
                            f"--init_from=resume") from None
        finally:
            os.close(fd)
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k not in ('iter', 'time')}
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, record.get('iter', 0))
        if self.wandb is not None:
            self.wandb.log(scalars, step=record.get('iter'))


# ----------------------------------------------------------------------------------------------------------------
# progress of long phases (prepare, evaluation over a split, feature extraction)

def progress(total, desc, unit='B'):
    """Progress on stderr: update(n) after n more units, update(None) at the end. unit 'B' counts bytes (shown in
    MB); any other unit ('texts', 'examples', 'batches') counts items. total may be None (unknown). A tqdm bar with
    rate and ETA on a terminal; otherwise a plain line at most every ~5 s, and a last one."""
    if sys.stderr.isatty():
        from tqdm import tqdm
        bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == 'B', leave=False)
        return lambda n: bar.close() if n is None else bar.update(n)
    scale, shown = (1e6, 'MB') if unit == 'B' else (1, unit)
    start = last = time.time()
    done = 0

    def update(n):
        nonlocal done, last
        done += n or 0
        now = time.time()
        if n is not None and now - last < 5:
            return
        last = now
        rate = done / max(now - start, 1e-6)
        amount = (f'{done / scale:.1f}' + (f'/{total / scale:.1f}' if total else '')) if unit == 'B' else (
            f'{done:,}' + (f'/{total:,}' if total else ''))
        line = f'{desc}: {amount} {shown}, {rate / scale:.1f} {shown}/s'
        if total and n is not None:
            line += f', ETA {(total - done) / max(rate, 1e-9):.0f} s'
        print(line, file=sys.stderr, flush=True)
    return update
