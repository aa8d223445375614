"""
Checkpoints: saving one, finding the one a path means, and loading a model from every source a script takes.

    model, meta, checkpoint = load('out/pretrain_small')   # best.pt (else last.pt) of a run; a .pt; a .dcp
    model, meta, _ = load('gpt2')                           # an HF checkpoint: 'gpt2', 'hf:org/name', a directory
    save_checkpoint('out/run/last.pt', {...})               # atomic: the previous file survives a crash

meta names the model's tokenizer (and holds its vocabulary), so the tokenizer always comes from the checkpoint. A
checkpoint is a dict: model (the state dict), model_args (the ModelConfig fields), config (the run's settings),
meta, iter_num, best_val_loss, optimizer, scaler, rng_states, ... Every .pt is read with torch.load(weights_only=True)
and every sharded .dcp index by an allow-list unpickler: a checkpoint cannot run code.
"""

import json
import os
import pickle
import random
import re
import sys
from dataclasses import replace

import numpy as np
import torch
import torch.distributed.checkpoint as dcp

import hf
from configurator import UserError
from files import atomic_path, full_disk_is_user_error
from model import ModelConfig, Transformer
from tokenizer import GPT2_META, wordpiece_meta

SHARDED_JSON = 'checkpoint.json'  # a sharded checkpoint's plain values, beside torch.distributed.checkpoint's files
CHECKPOINT_NAMES = ('best.pt', 'best.dcp', 'last.pt', 'last.dcp')  # what a run directory can hold


def load(source, device='cpu', trust=False, dropout=None):
    """(model, meta, checkpoint) of any source: a train.py / finetune.py checkpoint (a run directory, a .pt file or a
    .dcp directory; checkpoint is the dict it holds), or an HF checkpoint (hf.is_hf_name: 'gpt2', 'hf:org/name', a
    directory with config.json and weights, an export.py directory; checkpoint None). trust: unpickle what holds
    more than tensors. dropout: the model's, instead of the checkpoint's."""
    if hf.is_hf_name(source):
        try:
            model, directory, model_type = hf.load_model(source, dropout=dropout or 0.0, allow_pickle=trust)
        except (OSError, ValueError) as e:  # not found, not readable, not a model model.py can represent
            raise UserError(str(e)) from None
        return model.to(device), hf_meta(source, directory, model_type), None
    checkpoint = read(source, trust=trust)
    if not checkpoint.get('meta'):
        raise UserError(f"{source} records no tokenizer (no 'meta'): it was not written by train.py or finetune.py")
    return model_of(checkpoint, dropout).to(device), checkpoint['meta'], checkpoint


def files_read(source):
    """The files that load(source) reads, or may, with the run's metrics.jsonl beside them: what no output of the
    same command may replace (check_output). Nothing for a hub name."""
    if not os.path.exists(source):
        return []
    if os.path.isfile(source):
        directory, names, found = os.path.dirname(source), ['metrics.jsonl'], [source]
    else:  # a sharded checkpoint's own files, or a run / HF directory's
        directory, found = source, []
        names = ['.'] if source.rstrip(os.sep).endswith('.dcp') else [
            *CHECKPOINT_NAMES, 'metrics.jsonl', 'config.json', 'vocab.txt', hf.SAFETENSORS, hf.SAFETENSORS_INDEX,
            hf.PICKLE, hf.EXPORT_META]
    for name in names:
        path = os.path.join(directory or '.', name)
        if os.path.isfile(path):
            found.append(path)
        elif os.path.isdir(path):  # a sharded checkpoint: every file in it
            found += [os.path.join(root, f) for root, _, files in os.walk(path) for f in files]
    return found


def check_output(path, inputs, overwrite=False, key='output'):
    """A one-line UserError unless --key=path may be written: never one of inputs (the files the same command reads),
    whatever overwrite says; never a directory; an existing file only with overwrite."""
    if not os.path.exists(path):
        return
    for read in inputs:
        if os.path.exists(read) and os.path.samefile(read, path):
            raise UserError(f"--{key}={path} is {read}, which this command reads: choose another --{key}")
    if os.path.isdir(path):
        raise UserError(f"--{key}={path} is a directory: name a file")
    if not overwrite:
        raise UserError(f"{path} exists: pass --overwrite=True to replace it, or choose another --{key}")


def model_of(checkpoint, dropout=None):
    """The Transformer of a checkpoint dict (read, or train.py's resume): built from its model_args (dropout
    changed if given) with its weights, when it holds them (a sharded run resumed by FSDP loads them into the
    shards instead)."""
    args = {**checkpoint['model_args'], **({} if dropout is None else {'dropout': dropout})}
    model = Transformer(ModelConfig.from_dict(args))
    if 'model' in checkpoint:
        model.load_state_dict(checkpoint['model'])
    return model


def hf_meta(source, directory, model_type):
    """The tokenizer meta of an HF checkpoint directory: an export's own (scratchlm_meta.json), BERT's vocab.txt
    (refused when it does not fit the embeddings), or GPT-2's BPE."""
    exported = os.path.join(directory, hf.EXPORT_META)
    if os.path.isfile(exported):  # written by export.py: the tokenizer the model was trained with
        with open(exported, encoding='utf-8') as f:
            return json.load(f)
    if model_type == 'bert':
        return wordpiece_meta(directory)
    if model_type == 'gpt2':
        return dict(GPT2_META)
    raise UserError(f"{source} is a {model_type} checkpoint: its weights load (hf.load_model), but scratchlm has no "
                    f"tokenizer for it yet (GPT-2 BPE, chars and WordPiece only)")


def save_checkpoint(path, checkpoint):
    """torch.save to a temp file in the same directory, fsync, then rename (atomic_path). A full disk or a file-size
    limit is a one-line UserError; the previous file at path is left as it was."""
    previous = f"the previous {os.path.basename(path)} is intact" if os.path.exists(path) else "nothing was written"
    with full_disk_is_user_error(path, f"{previous}; free some space (or raise the limit) and run again"):
        with atomic_path(path) as tmp, open(tmp, 'wb') as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())


def checkpoint_path(path, last=False):
    """The checkpoint a path means, for every script: a .pt file, or a .dcp directory (a sharded checkpoint of an
    FSDP run, fsdp.py), as given; a run directory means its best checkpoint (the lowest val loss, what fine-tuning
    and sampling want: best.pt, or best.dcp, the newer if both), else its last. last=True (--init_from=resume): the
    run directory's last.pt or last.dcp, the newer if both (a run that moved between DDP and FSDP)."""
    if last or (os.path.isdir(path) and not path.rstrip(os.sep).endswith('.dcp')):
        for kind in ('last',) if last else ('best', 'last'):
            held = list(filter(os.path.exists, (os.path.join(path, kind + ext) for ext in ('.pt', '.dcp'))))
            if held:
                return max(held, key=os.path.getmtime)  # both: a .pt consolidated from a sharded run that went on
        if last:
            raise UserError(f"{os.path.join(path, 'last.pt')} not found (nor last.dcp): nothing to resume; train "
                            f"there first, or pass the out_dir of the run to continue")
        raise UserError(f"{path} holds no checkpoint (best.pt or last.pt): train one first or pass a .pt file")
    if not os.path.exists(path):
        raise UserError(f"checkpoint {path} not found: train one first or pass the path of a .pt file")
    return path


def read(path, trust=False):
    """The dict of a train.py / finetune.py checkpoint (a .pt file or a run directory, see checkpoint_path). Loaded with
    torch.load(weights_only=True): tensors and plain Python values only, so a checkpoint can never run code. A
    pickle that needs more is refused, unless trust=True (--trust_checkpoint=True), for old or foreign files."""
    path = checkpoint_path(path)
    if os.path.isdir(path):
        return read_sharded(path)
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=not trust)
    except Exception as e:  # an UnpicklingError that names a global is a refused Python object; others are garbage
        if isinstance(e, pickle.UnpicklingError) and ('GLOBAL' in str(e) or 'Unsupported global' in str(e)):
            raise UserError(f"{path} holds Python objects besides tensors, which could run code when loaded: refused. "
                            f"If you trust where it comes from, pass --trust_checkpoint=True") from None
        raise UserError(f"checkpoint {path} cannot be read ({type(e).__name__}): it is damaged or not a checkpoint") from None
    if trust:
        print(f"warning: {path} was unpickled with weights_only=False (--trust_checkpoint=True): any code in it ran",
              file=sys.stderr)
    if not isinstance(checkpoint, dict) or 'model' not in checkpoint or 'model_args' not in checkpoint:
        raise UserError(f"{path} is not a scratchlm checkpoint (no model / model_args)")
    checkpoint['model'] = clean_state_dict(checkpoint['model'])
    return checkpoint


def clean_state_dict(state_dict):
    """Strip the wrappers' prefixes: '_orig_mod.' from torch.compile, 'module.' from DDP. The one place for it."""
    # any number, in any order: DDP(compile(m)) gives 'module._orig_mod.'
    return {re.sub(r'^(?:_orig_mod\.|module\.)+', '', k): v for k, v in state_dict.items()}


def with_heads(model, **heads):
    """The model with the heads (and token types) the run needs switched on, fresh weights for the new ones: e.g. an
    MLM head on a BertModel checkpoint. Heads the model has already are kept with their weights."""
    new = {k: v for k, v in heads.items() if v and not getattr(model.config, k)}
    if not new:
        return model
    grown = Transformer(replace(model.config, **new))
    unexpected = grown.load_state_dict(model.state_dict(), strict=False).unexpected_keys
    assert not unexpected, unexpected
    return grown.to(next(model.parameters()).device)


def for_task(model, task_head, num_labels, pooling='auto'):
    """model with a fresh task head ('sequence' or 'token', num_labels classes) and without the pretraining heads
    (masked LM, next sentence) that fine-tuning does not train; BERT's pooler stays, the sequence head reads it."""
    tuned = Transformer(replace(model.config, task_head=task_head, num_labels=num_labels, pooling=pooling,
                                mlm_head=False, nsp_head=False))
    missing, unexpected = tuned.load_state_dict(model.state_dict(), strict=False)
    assert all(k.startswith('classifier.') for k in missing), missing
    assert all(k.startswith(('mlm_head.', 'nsp_head.')) for k in unexpected), unexpected
    return tuned.to(next(model.parameters()).device)


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
    """Restore rng_states(): as a .pt holds them, or with their tensors as lists (checkpoint.json, fsdp.jsonable_rng)."""
    torch.set_rng_state(torch.as_tensor(states['torch'], dtype=torch.uint8, device='cpu'))
    kind, keys, pos, has_gauss, cached_gaussian = states['numpy']
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached_gaussian))
    random.setstate(tuple(v if not isinstance(v, list) else tuple(v) for v in states['python']))
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.as_tensor(s, dtype=torch.uint8, device='cpu') for s in states['cuda']])


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


def read_sharded(path):
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
    checkpoint['model'] = state['model']
    return checkpoint
