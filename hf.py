"""
Finding and reading Hugging Face checkpoints: a local directory, the HF hub cache, or a download; weights from
safetensors files only, unless told to trust a pickle.

    import hf
    model, directory, model_type = hf.load_model('gpt2')                  # cache or download
    model, directory, model_type = hf.load_model('path/to/checkpoint')    # config.json + model.safetensors
    model, directory, model_type = hf.load_model('hf:Qwen/Qwen3-0.6B')    # 'hf:' marks a hub name

Reads GPT-2, BERT, Llama and Qwen3 checkpoints (Transformer.from_hf maps their weights; this module never does).
Errors are one-line ValueError / FileNotFoundError messages; common.py turns them into UserError.
"""

import json
import os
import sys
import urllib.request

import torch

from model import Transformer

HF_URL = 'https://huggingface.co/{name}/resolve/main/{file}'
SAFETENSORS = 'model.safetensors'
SAFETENSORS_INDEX = 'model.safetensors.index.json'  # the weights in shards, named by its weight_map
PICKLE = 'pytorch_model.bin'
EXPORT_META = 'scratchlm_meta.json'  # beside the weights of an export.py directory: our tokenizer, any architecture
TRUST_HINT = ("a pickle, which can run code when read: convert it to model.safetensors, or pass "
              "--trust_checkpoint=True to read it anyway (torch.load with weights_only=True)")


def is_hf_name(init_from):
    """Whether init_from names an HF checkpoint: 'gpt2', 'gpt2-medium', ..., 'hf:org/name' (HF cache or download),
    or a local directory with config.json and weights (safetensors, or a pickle that load_model refuses by default)."""
    return init_from.startswith(('gpt2', 'hf:')) or (os.path.isfile(os.path.join(init_from, 'config.json')) and any(
        os.path.isfile(os.path.join(init_from, w)) for w in (SAFETENSORS, SAFETENSORS_INDEX, PICKLE)))


def load_model(init_from, dropout=0.0, allow_pickle=False):
    """(model, local directory, model_type) of the HF checkpoint init_from names (see is_hf_name). Weights are read
    from safetensors; a directory with only pytorch_model.bin is refused unless allow_pickle."""
    directory = resolve_pretrained(init_from.removeprefix('hf:'), allow_pickle=allow_pickle)
    with open(os.path.join(directory, 'config.json')) as f:
        hf_config = json.load(f)
    state_dict = load_state_dict_file(directory, allow_pickle=allow_pickle)
    model = Transformer.from_hf(hf_config, state_dict, dropout=dropout)  # refuses what it cannot represent
    return model, directory, hf_config.get('model_type', 'gpt2')


def resolve_pretrained(name_or_path, allow_pickle=False):
    """A local directory holding config.json and weights: the path itself, the HF cache, or a download."""
    weight_files = (SAFETENSORS, SAFETENSORS_INDEX) + ((PICKLE,) if allow_pickle else ())
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
            if os.path.exists(os.path.join(d, 'config.json')) and any(  # a pickle too: load_model says what to do
                    os.path.exists(os.path.join(d, w)) for w in (SAFETENSORS, SAFETENSORS_INDEX, PICKLE)):
                return d
    target = os.path.join(snapshots, 'scratchlm')
    try:
        download(HF_URL.format(name=name_or_path, file='config.json'), os.path.join(target, 'config.json'))
        for file in weight_files:
            try:
                download(HF_URL.format(name=name_or_path, file=file), os.path.join(target, file))
            except OSError:
                continue
            if file == SAFETENSORS_INDEX:  # then its shards
                for shard in shard_names(os.path.join(target, file)):
                    download(HF_URL.format(name=name_or_path, file=shard), os.path.join(target, shard))
            return target
        raise OSError('no safetensors weights' + ('' if allow_pickle else ' (pytorch_model.bin not tried: --trust_checkpoint=True)'))
    except OSError as e:
        raise FileNotFoundError(f"cannot find {name_or_path!r}: not a local directory, not in the HF cache ({hub}), "
                                f"and the download failed ({e}); pass a directory with config.json and weights") from None


def download(url, path):
    """Fetch url to path atomically (temp file + rename), printing progress."""
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


def shard_names(index_path):
    """The shard files a model.safetensors.index.json names, sorted: plain .safetensors file names beside it, so that
    an index (from a hub repository, say) can never make us read or write outside its directory."""
    try:
        with open(index_path, encoding='utf-8') as f:
            weight_map = json.load(f)['weight_map']
        names = sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{index_path} is not a safetensors index ({type(e).__name__}): no weight_map of file names") from None
    for name in names:
        if not isinstance(name, str) or os.path.basename(name) != name or name in ('', '.', '..') or not name.endswith('.safetensors'):
            raise ValueError(f"{index_path} names the shard {name!r}: only .safetensors files beside the index are read")
    return names


def load_safetensors(path):
    """The tensors of a .safetensors file, by the safetensors package (a requirement): it checks the header
    against the file, and maps the file instead of reading it into memory twice as a pure-torch reader would."""
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise ValueError("reading HF weights needs the safetensors package: pip install safetensors") from None
    try:
        return load_file(path)
    except Exception as e:  # safetensors raises its own SafetensorError for a damaged file
        raise ValueError(f"{path} cannot be read as safetensors ({e}): the file is damaged or not safetensors") from None


def load_state_dict_file(directory, allow_pickle=False):
    """The state dict of an HF checkpoint directory: model.safetensors, or the shards that
    model.safetensors.index.json names; pytorch_model.bin only with allow_pickle (a warning on stderr)."""
    if os.path.exists(os.path.join(directory, SAFETENSORS)):
        return load_safetensors(os.path.join(directory, SAFETENSORS))
    if os.path.exists(os.path.join(directory, SAFETENSORS_INDEX)):
        shards = shard_names(os.path.join(directory, SAFETENSORS_INDEX))
        return {k: v for shard in shards for k, v in load_safetensors(os.path.join(directory, shard)).items()}
    bin_path = os.path.join(directory, PICKLE)
    if not os.path.exists(bin_path):
        raise FileNotFoundError(f"{directory} has no {SAFETENSORS} (nor {SAFETENSORS_INDEX}): no weights to read")
    if not allow_pickle:
        raise ValueError(f"{directory} holds its weights only in {PICKLE}, {TRUST_HINT}")
    print(f"warning: reading {bin_path}, a pickle (--trust_checkpoint=True); torch.load with weights_only=True",
          file=sys.stderr)
    try:
        return torch.load(bin_path, map_location='cpu', weights_only=True)
    except Exception as e:
        raise ValueError(f"{bin_path} cannot be read with weights_only=True ({type(e).__name__}): damaged, or "
                         f"it holds more than tensors") from None
