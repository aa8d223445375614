"""
Sample text from a trained model.

    python sample.py --out_dir=out/pretrain_small --start="The government said"
    python sample.py --init_from=gpt2 --start=FILE:prompt.txt --num_samples=3 --top_p=0.9
    python sample.py --out_dir=out/pretrain_small --temperature=0 --output=samples.txt   # greedy, to a file

The tokenizer always comes from the checkpoint (its data's meta), never guessed.
"""

import os
import sys

import torch

import common
import prepare
from configurator import configure, config_defaults
from model import Transformer

# -----------------------------------------------------------------------------
init_from = 'out_dir'  # 'out_dir' (best.pt, else last.pt, in out_dir), a checkpoint path, or 'gpt2', 'gpt2-xl', ...
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
# -----------------------------------------------------------------------------


def load_for_sampling(init_from, out_dir, device):
    """(model, tokenizer) from a checkpoint or an HF GPT-2 name."""
    if init_from.startswith('gpt2'):
        return Transformer.from_pretrained(init_from).to(device), prepare.get_tokenizer('gpt2')
    path = init_from
    if init_from == 'out_dir':
        best = os.path.join(out_dir, 'best.pt')
        path = best if os.path.exists(best) else os.path.join(out_dir, 'last.pt')
    checkpoint = common.load_checkpoint(path, device='cpu')
    model = common.model_from_checkpoint(checkpoint).to(device)
    meta = checkpoint.get('meta')
    if not meta:
        raise common.UserError(f"{path} records no tokenizer (no 'meta'): it was not written by train.py")
    return model, prepare.get_tokenizer(meta['tokenizer'], meta)


def main():
    globals().update(configure(config_defaults(globals()), sys.argv[1:]))
    runtime = common.setup_runtime(device, dtype, seed)
    model, tokenizer = load_for_sampling(init_from, out_dir, runtime.device)
    model.eval()
    prompt = start
    if prompt.startswith('FILE:'):
        with open(prompt[5:], encoding='utf-8') as f:
            prompt = f.read()
    ids = tokenizer.encode(prompt) or [tokenizer.eot_id]  # an empty prompt starts a fresh document
    x = torch.tensor(ids, dtype=torch.long, device=runtime.device)[None, :].repeat(num_samples, 1)
    generator = torch.Generator(device=runtime.device).manual_seed(seed)
    with torch.no_grad(), runtime.autocast():
        y = model.generate(x, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                           use_cache=use_cache, generator=generator)
    samples = []
    for row in y.tolist():
        new = row[len(ids):]
        if tokenizer.eot_id in new:  # stop at the end of the document
            new = new[:new.index(tokenizer.eot_id)]
        new = [t for t in new if t < tokenizer.vocab_size]  # padding ids of the embedding table decode to nothing
        samples.append(prompt + tokenizer.decode(new))
    text = '\n---------------\n'.join(samples) + '\n'
    if output:
        with open(output, 'w', encoding='utf-8') as f:
            f.write(text)
        print(f"wrote {len(samples)} samples to {output}")
    else:
        print(text, end='')


if __name__ == '__main__':
    common.run_main(main)
