"""
Sample text from a trained model.

    python sample.py --out_dir=out/pretrain_small --start="The government said"
    python sample.py --init_from=gpt2 --start=FILE:prompt.txt --num_samples=3 --top_p=0.9
    python sample.py --out_dir=out/pretrain_small --temperature=0 --output=samples.txt   # greedy, to a new file
    python sample.py --out_dir=out/pretrain_bert_small --fill_mask="The [MASK] of England"  # encoders: top-k fillers
    python sample.py --init_from=path/to/bert --fill_mask="Paris is the [MASK] of France."  # HF BertForMaskedLM dir
    python sample.py --out_dir=out/finetune_sft --start="Capitalise: cash prison phone" --temperature=0 --num_samples=1

The tokenizer always comes from the checkpoint (its data's meta, or an HF BERT directory's vocab.txt), never guessed.
"""

import contextlib
import functools
import sys

import torch
import torch.nn as nn

import checkpoints
from configurator import UserError, config_defaults, configure, read_text_arg, run_main
from files import atomic_path
from runtime import setup_runtime
from tokenizer import token_text, tokenizer_of

# -----------------------------------------------------------------------------
init_from = 'out_dir'  # 'out_dir' (best.pt, else last.pt, in out_dir), a checkpoint path, 'gpt2', ..., an HF dir or 'hf:name'
out_dir = 'out/pretrain_small'
start = "\n"  # prompt text, or FILE:path to read it from a file
num_samples = 3
max_new_tokens = 200
temperature = 0.8  # 0 = greedy
top_k = 200  # None = no top-k filter
top_p = None  # e.g. 0.9 for nucleus sampling
seed = 1337
device = 'auto'
dtype = 'auto'
use_cache = True  # KV cache: each new token costs one position
output = None  # write the samples to this file instead of printing them
overwrite = False  # replace an existing --output file (never the checkpoint or the --start=FILE: prompt read)
fill_mask = None  # text with [MASK] in it: print the likeliest fillers of each mask (masked-LM checkpoints)
fill_mask_top_k = 5  # fillers shown per mask
trust_checkpoint = False  # unpickle a checkpoint that holds more than tensors (old or foreign files): it can run code
template = 'auto'  # 'auto': a checkpoint instruction-tuned by finetune.py (task='sft') gets the prompt in its template; '' never
# -----------------------------------------------------------------------------


def generate(model, idx, max_new_tokens, **kwargs):
    """model.generate (KV cache, sampling), its Linears prepacked for long outputs (packed_linears)."""
    with packed_linears(model, enabled=max_new_tokens >= 16):
        return model.generate(idx, max_new_tokens, **kwargs)


def can_pack_linears():
    """Whether this torch can run bf16 linears on weights prepacked by oneDNN (x86 CPUs with AVX-512 BF16 or AMX)."""
    try:
        return (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
                and torch.ops.mkldnn._is_mkldnn_bf16_supported() and hasattr(torch.ops.mkldnn, '_linear_pointwise'))
    except (AttributeError, RuntimeError):  # a build without these ops
        return False


@contextlib.contextmanager
def packed_linears(model, enabled=True):
    """Inside: every nn.Linear of model multiplies by a copy of its weight laid out once in oneDNN's blocked format.
    Plain F.linear on a CPU bf16 weight re-lays the weight out on every call, which for one row costs more than the
    product: the 50304 x 256 LM head takes 2.5 ms that way and 0.5 ms prepacked. Bit-identical to F.linear
    (tested); CPU bfloat16 weights only, a no-op otherwise. Packing all weights costs what a few decode steps
    save, so generate() packs only for outputs of 16 tokens or more."""
    # every Linear that computes plain F.linear (the LM head too; not the task heads, which pool first); LoRALinear's
    # base is one, its update runs as is
    linears = [m for m in model.modules() if isinstance(m, nn.Linear) and type(m).forward is nn.Linear.forward]
    packed = linears if enabled and all(m.weight.device.type == 'cpu' and m.weight.dtype == torch.bfloat16
                                        for m in linears) and can_pack_linears() else []

    def packed_forward(weight, bias, x):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, 'none', [], '')

    try:
        for m in packed:  # an instance attribute shadows nn.Linear.forward until deleted
            m.forward = functools.partial(packed_forward, torch.ops.mkldnn._reorder_linear_weight(m.weight.detach()),
                                          None if m.bias is None else m.bias.detach())
        yield
    finally:
        for m in packed:
            m.__dict__.pop('forward', None)


@torch.no_grad()
def fill_masks(model, tokenizer, special, text, top_k=5):
    """For each [MASK] in text, the top_k (token text, probability) of a masked-LM model, as `[CLS] text [SEP]`."""
    if not model.config.mlm_head or special is None:
        raise UserError("fill_mask needs an encoder checkpoint with a masked-LM head (objective='mlm' or an "
                        "HF BertForMaskedLM); this one has none")
    pieces = text.split('[MASK]')
    if len(pieces) == 1:
        raise UserError(f"fill_mask text {text!r} has no [MASK] in it")
    ids = [special['cls']]
    for piece in pieces[:-1]:  # byte-level BPE tokens carry their leading space: the mask stands for ' word'
        ids += tokenizer.encode(piece.rstrip(' ') if tokenizer.name in ('gpt2', 'bpe') else piece) + [special['mask']]
    ids += tokenizer.encode(pieces[-1]) + [special['sep']]
    if len(ids) > model.config.block_size:
        raise UserError(f"fill_mask text is {len(ids)} tokens with [CLS] and [SEP], more than the model's "
                        f"block_size {model.config.block_size}: shorten it")
    idx = torch.tensor([ids], device=next(model.parameters()).device)
    logits = model.mlm_head(model.hidden_states(idx))[0, idx[0] == special['mask']]  # (masks, V), in text order
    top = torch.topk(torch.softmax(logits.float(), dim=-1), top_k)
    return [[(token_text(tokenizer, i, special), p) for p, i in zip(values, indices)]
            for values, indices in zip(top.values.tolist(), top.indices.tolist())]


def main():
    globals().update(configure(config_defaults(globals()), sys.argv[1:]))
    source = out_dir if init_from == 'out_dir' else init_from
    if output:
        checkpoints.check_output(output, checkpoints.files_read(source) + ([start[5:]] if start.startswith('FILE:') else []),
                                 overwrite)
    runtime = setup_runtime(device, dtype, seed)
    model, meta, _ = checkpoints.load(source, runtime.device, trust_checkpoint)
    tokenizer, special = tokenizer_of(meta)
    model.eval()
    if fill_mask is not None:
        with runtime.autocast():
            results = fill_masks(model, tokenizer, special, fill_mask, fill_mask_top_k)
        print(fill_mask)
        for n, candidates in enumerate(results, 1):
            print(f"[MASK] {n}: " + ', '.join(f"{token!r} {p:.3f}" for token, p in candidates))
        return
    if not model.config.causal:
        raise UserError("this checkpoint is a bidirectional encoder and cannot generate text: "
                        "use --fill_mask='text with a [MASK] in it'")
    if model.config.task_head:
        raise UserError(f"this checkpoint is a {meta.get('task')} model: predict with "
                        f"python finetune.py --out_dir=... --predict='text'")
    prompt = read_text_arg(start, 'start')
    if template == 'auto' and meta.get('prompt_template'):  # instruction-tuned by finetune.py: ask in its template
        prompt = meta['prompt_template'].format(prompt=prompt)
    ids = tokenizer.encode(prompt) or [tokenizer.eot_id]  # an empty prompt starts a fresh document
    x = torch.tensor(ids, dtype=torch.long, device=runtime.device)[None, :].repeat(num_samples, 1)
    generator = torch.Generator(device=runtime.device).manual_seed(seed)
    with torch.no_grad(), runtime.autocast():
        y = generate(model, x, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                     use_cache=use_cache, generator=generator, vocab_limit=tokenizer.vocab_size)
    new = [row[len(ids):] + [tokenizer.eot_id] for row in y.tolist()]  # each stops at the end of its document
    samples = [prompt + tokenizer.decode(tokens[:tokens.index(tokenizer.eot_id)]) for tokens in new]
    text = '\n---------------\n'.join(samples) + '\n'
    if output:
        with atomic_path(output) as tmp, open(tmp, 'w', encoding='utf-8') as f:
            f.write(text)
        print(f"wrote {len(samples)} samples to {output}")
    else:
        print(text, end='')


if __name__ == '__main__':
    run_main(main)
