"""
Hugging Face checkpoints: finding and reading them (a local directory, the HF hub cache, or a download; weights
from safetensors files only, unless told to trust a pickle), and the mapping of their weights to ours and back.

    import hf
    model, directory, model_type = hf.load_model('gpt2')                  # cache or download
    model, directory, model_type = hf.load_model('path/to/checkpoint')    # config.json + model.safetensors
    model, directory, model_type = hf.load_model('hf:Qwen/Qwen3-0.6B')    # 'hf:' marks a hub name
    model = hf.from_hf(config_dict, state_dict)                           # a config.json dict + weights -> Transformer
    config_dict, state_dict = hf.to_hf(model)                             # and back (export.py writes them)

GPT-2, BERT, Llama and Qwen3: HF_ARCHS (the fields each architecture fixes), HF_CONFIG (config.json keys -> our
fields), HF_DEFAULTS and HF_NAMES (weight names -> ours) are the whole mapping; a new model option that HF has
is a line in them. Errors are one-line ValueError / FileNotFoundError messages; checkpoints.py turns them into
UserError.
"""

import json
import os
import re
import sys
import urllib.request
from dataclasses import fields

import torch

from files import atomic_path
from metrics import progress
from model import ModelConfig, Transformer

HF_URL = 'https://huggingface.co/{name}/resolve/main/{file}'
SAFETENSORS = 'model.safetensors'
SAFETENSORS_INDEX = 'model.safetensors.index.json'  # the weights in shards, named by its weight_map
PICKLE = 'pytorch_model.bin'
EXPORT_META = 'scratchlm_meta.json'  # beside the weights of an export.py directory: our tokenizer, any architecture
TRUST_HINT = ("a pickle, which can run code when read: convert it to model.safetensors, or pass "
              "--trust_checkpoint=True to read it anyway (torch.load with weights_only=True)")


def is_hf_name(init_from):
    """Whether init_from names an HF checkpoint: 'gpt2', 'gpt2-medium', ..., 'hf:org/name' (HF cache or download),
    or a local directory with config.json and weights (safetensors, or a pickle that load_model refuses by default).
    An existing local path is never a hub name: gpt2_runs/ or gpt2_small.pt is a path, whatever it starts with."""
    if os.path.exists(init_from):
        return os.path.isfile(os.path.join(init_from, 'config.json')) and any(
            os.path.isfile(os.path.join(init_from, w)) for w in (SAFETENSORS, SAFETENSORS_INDEX, PICKLE))
    return init_from.startswith(('gpt2', 'hf:'))


def load_model(init_from, dropout=0.0, allow_pickle=False):
    """(model, local directory, model_type) of the HF checkpoint init_from names (see is_hf_name). Weights are read
    from safetensors; a directory with only pytorch_model.bin is refused unless allow_pickle."""
    directory = resolve_pretrained(init_from.removeprefix('hf:'), allow_pickle=allow_pickle)
    with open(os.path.join(directory, 'config.json')) as f:
        hf_config = json.load(f)
    state_dict = load_state_dict_file(directory, allow_pickle=allow_pickle)
    return from_hf(hf_config, state_dict, dropout=dropout), directory, hf_config.get('model_type', 'gpt2')


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
    for snapshot in sorted(os.listdir(snapshots)) if os.path.isdir(snapshots) else ():
        if is_hf_name(os.path.join(snapshots, snapshot)):  # a pickle too: load_model says what to do
            return os.path.join(snapshots, snapshot)
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
    """Fetch url to path atomically (temp file + rename), showing progress (metrics.progress, as prepare.py's)."""
    with atomic_path(path) as tmp, urllib.request.urlopen(url, timeout=30) as response, open(tmp, 'wb') as f:
        update = progress(response.length, f'downloading {os.path.basename(path)}')
        while chunk := response.read(1 << 20):
            f.write(chunk)
            update(len(chunk))
        update(None)


def shard_names(index_path):
    """The shard files a model.safetensors.index.json names, sorted: plain .safetensors file names beside it, so that
    an index (from a hub repository, say) can never make us read or write outside its directory."""
    try:
        with open(index_path, encoding='utf-8') as f:
            names = sorted(set(json.load(f)['weight_map'].values()))
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
        return load_file(path)
    except ImportError:
        raise ValueError("reading HF weights needs the safetensors package: pip install safetensors") from None
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


# ----------------------------------------------------------------------------------------------------------------
# the weight mapping: a config.json dict and a state dict in, and back out

def from_hf(hf_config, state_dict, dropout=0.0):
    """The model of an HF config.json dict and state dict, by its model_type: GPT2Model / GPT2LMHeadModel,
    BertModel / BertForMaskedLM / BertForPreTraining (the heads present in the weights are built),
    LlamaForCausalLM, Qwen3ForCausalLM. A one-line ValueError for a checkpoint model.py cannot represent."""
    arch = hf_config.get('model_type', 'gpt2')
    if arch not in HF_ARCHS:
        raise ValueError(f"model_type {arch!r} is not one model.py reads ({', '.join(HF_ARCHS)})")
    hf = {**hf_defaults(arch), **hf_config}
    for key, values in HF_DEFAULTS[arch].items():
        if isinstance(values, tuple) and hf[key] not in values:
            raise ValueError(f"{arch} checkpoint with {key}={hf[key]!r}: model.py supports {', '.join(map(repr, values))}")
    args = {**HF_ARCHS[arch], **{f: hf[k] for k, f in HF_CONFIG[arch].items() if k in hf}, 'dropout': dropout}
    if arch == 'gpt2':  # GPT2Model files lack the 'transformer.' prefix
        args['activation'] = 'gelu' if hf['activation_function'] == 'gelu' else 'gelu_tanh'
        state_dict = {k if k.startswith(('transformer.', 'lm_head.')) else f'transformer.{k}': v for k, v in state_dict.items()}
    elif arch == 'bert':  # the 'bert.' prefix of the models with heads; gamma / beta: TF-converted LayerNorm names
        args['activation'] = 'gelu' if hf['hidden_act'] == 'gelu' else 'gelu_tanh'
        state_dict = {re.sub(r'\.gamma$', '.weight', re.sub(r'\.beta$', '.bias', k.removeprefix('bert.'))): v
                      for k, v in state_dict.items()}
        args.update({head: any(k.startswith(prefix) for k in state_dict) for head, prefix in (
            ('mlm_head', 'cls.predictions.'), ('pooler', 'pooler.'), ('nsp_head', 'cls.seq_relationship.'))})
    else:  # llama, qwen3
        rope = hf.get('rope_parameters') or {**(hf.get('rope_scaling') or {}), 'rope_theta': hf.get('rope_theta', 1e4)}
        if rope.get('rope_type', rope.get('type', 'default')) != 'default':
            raise ValueError(f"{arch} checkpoint with scaled rotary embeddings ({rope}): model.py has plain rope only")
        args['rope_theta'] = rope['rope_theta']
        state_dict = {k if k.startswith(('model.', 'lm_head.')) else 'model.' + k: v for k, v in state_dict.items()}
    return load_hf_weights(Transformer(ModelConfig(**args)), state_dict, arch)

def to_hf(model):
    """(config.json dict, state dict) of the transformers model that model equals, weight for weight (the inverse
    of from_hf): GPT2LMHeadModel; BertModel, BertForMaskedLM or BertForPreTraining, by the heads it has;
    LlamaForCausalLM; Qwen3ForCausalLM. A ValueError for a configuration none of them expresses."""
    c = model.config
    differ = {arch: [k for k, v in fixed.items() if getattr(c, k) != v] for arch, fixed in HF_ARCHS.items()}
    arch = min(differ, key=lambda a: (len(differ[a]), 'causal' in differ[a]))  # the one c matches, or the closest
    if differ[arch]:
        raise ValueError(f"no transformers architecture has this configuration; the closest, {arch}, needs "
                         + ', '.join(f"{k}={HF_ARCHS[arch][k]!r}" for k in differ[arch]))
    mapped = set(HF_ARCHS[arch]) | set(HF_CONFIG[arch].values()) | HANDLED
    unmapped = [f for f in fields(c) if f.name not in mapped and getattr(c, f.name) != f.default]
    if unmapped:  # a field the tables do not name (a new option) goes out only at its default, GPT-2's behaviour
        raise ValueError(f"no transformers architecture has {unmapped[0].name}={getattr(c, unmapped[0].name)!r}: "
                         f"export it at its default, {unmapped[0].default!r}, or map it in hf.py's tables")
    resolved = dict(mlp_hidden=model.transformer.h[0].mlp.c_fc.out_features, n_kv_head=c.kv_heads, head_dim=c.head_size)
    hf = {'model_type': arch, **hf_defaults(arch), **{k: resolved.get(f, getattr(c, f)) for k, f in HF_CONFIG[arch].items()}}
    state = {k: view.clone(memory_format=torch.contiguous_format) for k, (_, _, view) in hf_views(model, arch)[0].items()}
    if arch == 'gpt2':
        hf.update(architectures=['GPT2LMHeadModel'], activation_function='gelu_new' if c.activation == 'gelu_tanh' else 'gelu')
    elif arch == 'bert':
        kind = 'BertForPreTraining' if c.nsp_head else 'BertForMaskedLM' if c.mlm_head else 'BertModel'
        prefix = '' if kind == 'BertModel' else 'bert.'  # the trunk under 'bert.', the heads under 'cls.'
        state = {k if k.startswith('cls.') else prefix + k: v for k, v in state.items()}
        if not c.type_vocab_size:  # HF BERT always has token-type embeddings: one row of zeros adds nothing
            state[prefix + 'embeddings.token_type_embeddings.weight'] = torch.zeros(1, c.n_embd)
        hf.update(architectures=[kind], type_vocab_size=max(c.type_vocab_size, 1),
                  hidden_act='gelu' if c.activation == 'gelu' else 'gelu_new')
    else:
        hf.update(architectures=['LlamaForCausalLM' if arch == 'llama' else 'Qwen3ForCausalLM'],
                  rope_parameters={'rope_type': 'default', 'rope_theta': c.rope_theta})
    return hf, state


# The fixed fields of each architecture transformers knows (to_hf refuses a config that differs from all of them)...
HF_ARCHS = {
    'gpt2': dict(pos_embedding='learned', norm='layer', mlp='gelu', norm_position='pre', embedding_norm=False,
                 causal=True, bias=True, qk_norm=False, tie_embeddings=True, n_kv_head=None, head_dim=None,
                 type_vocab_size=0, mlm_head=False, pooler=False, task_head=''),
    'bert': dict(pos_embedding='learned', norm='layer', mlp='gelu', norm_position='post', embedding_norm=True,
                 causal=False, bias=True, qk_norm=False, tie_embeddings=True, n_kv_head=None, head_dim=None, task_head=''),
    'llama': dict(pos_embedding='rope', norm='rms', mlp='swiglu', norm_position='pre', embedding_norm=False,
                  causal=True, bias=False, qk_norm=False, type_vocab_size=0, mlm_head=False, pooler=False, task_head=''),
}
HF_ARCHS['qwen3'] = {**HF_ARCHS['llama'], 'qk_norm': True}
# ... (the fields to_hf and export.py write out themselves, or that no config.json holds) ...
HANDLED = {'activation', 'mlm_head', 'pooler', 'nsp_head', 'type_vocab_size', 'rope_theta', 'task_head', 'num_labels',
           'pooling', 'dropout', 'fused_loss'}
# ... their config.json keys -> our fields, read by from_hf and written by to_hf ...
BERT_LLAMA_CONFIG = dict(max_position_embeddings='block_size', vocab_size='vocab_size', num_hidden_layers='n_layer',
                      num_attention_heads='n_head', hidden_size='n_embd', intermediate_size='mlp_hidden')
HF_CONFIG = {'gpt2': dict(n_positions='block_size', vocab_size='vocab_size', n_layer='n_layer', n_head='n_head',
                          n_embd='n_embd', n_inner='mlp_hidden', layer_norm_epsilon='layer_norm_eps'),
             'bert': dict(BERT_LLAMA_CONFIG, layer_norm_eps='layer_norm_eps', type_vocab_size='type_vocab_size'),
             'llama': dict(BERT_LLAMA_CONFIG, num_key_value_heads='n_kv_head', head_dim='head_dim', rms_norm_eps='layer_norm_eps',
                           rope_theta='rope_theta', tie_word_embeddings='tie_embeddings')}
# ... transformers' defaults for keys a config.json may lack; a tuple: the values model.py can represent, default first ...
HF_DEFAULTS = {'gpt2': dict(activation_function=('gelu_new', 'gelu_pytorch_tanh', 'gelu'), layer_norm_epsilon=1e-5,
                            scale_attn_by_inverse_layer_idx=(False,)),
               'bert': dict(hidden_act=('gelu', 'gelu_new', 'gelu_pytorch_tanh'), layer_norm_eps=1e-12, type_vocab_size=2,
                            position_embedding_type=('absolute',)),
               'llama': dict(hidden_act=('silu',), rms_norm_eps=1e-6, tie_word_embeddings=False, use_sliding_window=(False,))}
HF_CONFIG['qwen3'], HF_DEFAULTS['qwen3'] = HF_CONFIG['llama'], HF_DEFAULTS['llama']
# ... and their weight names -> ours, module by module ('.weight' / '.bias' follow): hf=ours, or hf=ours:how, where
# T = stored transposed (GPT-2's Conv1D); q, k, v = that part of our fused c_attn (rows [0, nh hs), then n_kv_head hs
# each); skip = buffers we do not keep. First the modules of layer {i}, then the rest. BERT's names are without their
# 'bert.' prefix (as from_hf reads them), Llama's and Qwen3's (one table) with their 'model.'.
def name_table(hf_layer, layer_names, names):
    pairs = [(hf_layer + hf, 'transformer.h.{i}.' + ours) for hf, ours in (w.split('=') for w in layer_names.split())]
    pairs += [tuple(w.split('=')) for w in names.split()]
    return [(hf, *(ours.split(':') + [''])[:2]) for hf, ours in pairs]  # [(HF module, our module, how)]


HF_NAMES = {
    'gpt2': name_table('transformer.h.{i}.', """
        ln_1=ln_1  attn.c_attn=attn.c_attn:T  attn.c_proj=attn.c_proj:T  attn=-:skip  ln_2=ln_2
        mlp.c_fc=mlp.c_fc:T  mlp.c_proj=mlp.c_proj:T""", """
        transformer.wte=transformer.wte  transformer.wpe=transformer.wpe  transformer.ln_f=transformer.ln_f  lm_head=lm_head"""),
    'bert': name_table('encoder.layer.{i}.', """
        attention.self.query=attn.c_attn:q  attention.self.key=attn.c_attn:k  attention.self.value=attn.c_attn:v
        attention.output.dense=attn.c_proj  attention.output.LayerNorm=ln_1
        intermediate.dense=mlp.c_fc  output.dense=mlp.c_proj  output.LayerNorm=ln_2""", """
        embeddings.word_embeddings=transformer.wte  embeddings.position_embeddings=transformer.wpe
        embeddings.token_type_embeddings=transformer.wtype  embeddings.LayerNorm=transformer.ln_emb  embeddings=-:skip
        pooler.dense=pooler.dense  cls.predictions.transform.dense=mlm_head.dense  cls.predictions.transform.LayerNorm=mlm_head.ln
        cls.predictions=mlm_head.decoder  cls.predictions.decoder=mlm_head.decoder  cls.seq_relationship=nsp_head"""),
    'llama': name_table('model.layers.{i}.', """
        input_layernorm=ln_1  self_attn.q_proj=attn.c_attn:q  self_attn.k_proj=attn.c_attn:k  self_attn.v_proj=attn.c_attn:v
        self_attn.q_norm=attn.q_norm  self_attn.k_norm=attn.k_norm  self_attn.o_proj=attn.c_proj  self_attn.rotary_emb=-:skip
        post_attention_layernorm=ln_2  mlp.gate_proj=mlp.c_gate  mlp.up_proj=mlp.c_fc  mlp.down_proj=mlp.c_proj""", """
        model.embed_tokens=transformer.wte  model.norm=transformer.ln_f  lm_head=lm_head"""),
}
HF_NAMES['qwen3'] = HF_NAMES['llama']


def hf_defaults(arch):
    return {k: v[0] if isinstance(v, tuple) else v for k, v in HF_DEFAULTS[arch].items()}


def hf_views(model, arch):
    """({HF key: (our key, how, our weight as HF lays it out: a view into it)}, [HF keys and modules we read past])
    for every weight of model, by HF_NAMES[arch]. Read past: the head weights that are wte itself (tied), and the
    modules marked skip."""
    ours = model.state_dict()  # tensors that share their storage with the parameters
    wte = ours['transformer.wte.weight'].data_ptr()
    c = model.config
    q, kv = c.n_head * c.head_size, c.kv_heads * c.head_size
    rows = {'q': slice(0, q), 'k': slice(q, q + kv), 'v': slice(q + kv, q + 2 * kv)}  # of our fused c_attn
    views, ignored = {}, []
    for hf, our, how in HF_NAMES[arch]:
        for i in range(c.n_layer) if '{i}' in hf else [0]:
            for leaf in ('weight', 'bias'):
                key, name = (f"{n.replace('{i}', str(i))}.{leaf}" for n in (hf, our))
                if how == 'skip' or (name in ours and 'wte' not in name and ours[name].data_ptr() == wte):
                    ignored.append(key.rpartition('.')[0] if how == 'skip' else key)
                elif name in ours:
                    t = ours[name]
                    views[key] = name, how, t[rows[how]] if how in rows else t.t() if how == 'T' else t
    return views, ignored


def load_hf_weights(model, state_dict, arch):
    """model, with the HF weights of state_dict copied in by HF_NAMES[arch]; a one-line ValueError for a weight that
    is unknown, misshapen or missing."""
    views, ignored = hf_views(model, arch)
    loaded = set()
    for key, value in state_dict.items():
        if key in views:
            name, how, view = views[key]
            if value.shape != view.shape:
                raise ValueError(f"weight {key!r} has shape {tuple(value.shape)}, expected {tuple(view.shape)}")
            with torch.no_grad():
                view.copy_(value)
            loaded.add((name, how))
        elif key not in ignored and key.rpartition('.')[0] not in ignored:
            raise ValueError(f"unexpected weight {key!r}: not a {arch} checkpoint model.py can read")
    missing = sorted({name for name, how, _ in views.values() if (name, how) not in loaded})
    if missing:
        raise ValueError(f"no weights for {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}: incomplete {arch} checkpoint")
    return model
