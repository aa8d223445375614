"""
Pretrain a GPT-style (next-token) or BERT-style (masked-LM) language model.

    python train.py config/pretrain_small.py                  # a GPT on the default corpus on a laptop CPU
    python train.py config/pretrain_small.py --max_iters=100  # any global below can be overridden
    python train.py config/pretrain_bert_small.py             # a BERT-style encoder: masked LM, causal=False
    python train.py config/pretrain_bert_small.py --nsp=True  # ... plus next-sentence prediction
    torchrun --standalone --nproc_per_node=8 train.py config/pretrain_gpt2.py
    torchrun --standalone --nproc_per_node=8 train.py config/pretrain_gpt2.py --fsdp=True   # sharded, see fsdp.py

init_from: 'scratch', 'resume' (continue the run in out_dir exactly), a checkpoint path (continued
pretraining: its weights, a fresh optimizer and schedule), an HF GPT-2 name ('gpt2', 'gpt2-medium', ...),
or an HF GPT-2 / BERT checkpoint: a local directory with config.json, or 'hf:org/name' (HF cache or download).
SIGINT/SIGTERM save out_dir/last.pt (last.dcp under FSDP) before exiting.

The file reads top to bottom: the settings, the batches of pretraining (next-token and masked-LM), train_step (one
optimizer step: forward, backward, clip, step; finetune.py and bench.py run the same function), then main(), the
run itself: data, model, optimizer, and the loop.
"""

import collections
import contextlib
import math
import os
import signal
import sys
import time
from dataclasses import fields

import numpy as np
import torch
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

import checkpoints
import fsdp as sharding
import optim
import prepare
from configurator import UserError, config_defaults, configure, run_main, settings_of
from files import run_lock, set_aside, write_json
from metrics import MetricsLog, bits_per_byte, log_step
from model import IGNORE_INDEX, ModelConfig, Transformer, config_dict
from runtime import (cleanup_runtime, eval_mode, grad_scaler, peak_flops_for, same_on_all_ranks, setup_runtime, unwrap,
                     wrap)
from tokenizer import special_tokens

# -----------------------------------------------------------------------------
# I/O
out_dir = 'out'
eval_interval = 200
log_interval = 10
eval_iters = 20
eval_only = False
always_save_checkpoint = True  # write last.pt at every eval, not only at the end
overwrite = False  # start from scratch in an out_dir that holds a run (its checkpoints are replaced as new ones land)
trust_checkpoint = False  # unpickle a checkpoint that holds more than tensors (old or foreign files): it can run code
init_from = 'scratch'  # 'scratch', 'resume', a checkpoint path, 'gpt2' / 'gpt2-medium' / ..., an HF dir or 'hf:name'
tensorboard = False
wandb_project = None  # e.g. 'scratchlm'; needs `pip install wandb`
wandb_run_name = None
# data
dataset = 'bbc_news'  # a directory under data_root made by prepare.py
data_root = 'data'
tokenizer = 'gpt2'  # a dataset named bbc_news* that is not there yet is prepared on first use with this tokenizer
batch_size = 16  # sequences per micro-batch
block_size = 256
gradient_accumulation_steps = 1  # micro-batches per process per iteration
# model: every field of model.ModelConfig is a setting (with its choices and range), GPT-2's architecture by
# default; here the ones pretraining sets otherwise. rope + rms + swiglu + tie_embeddings=False (bias=False) is
# Llama's, + qk_norm Qwen3's, so that export.py maps it one to one. vocab_size and the heads follow from the data
# and the objective.
n_layer = 4
n_head = 4
n_embd = 256
dropout = 0.0
bias = False
causal = True  # False: bidirectional attention, which objective='mlm' needs
# objective
objective = 'clm'  # 'clm': predict the next token (GPT); 'mlm': masked LM (BERT), needs causal=False
mlm_probability = 0.15  # mlm: share of non-special positions predicted (of those 80% -> mask, 10% random, 10% kept)
nsp = False  # mlm: also next-sentence prediction on `[CLS] A [SEP] B [SEP]` pairs, with token types
# optimizer
optimizer = 'adamw'  # 'muon': Muon (Jordan et al. 2024) for the blocks' weight matrices, AdamW for the rest
muon_lr = None  # None: learning_rate (Muon's update is scaled to AdamW's typical RMS, so one rate fits both)
muon_momentum = 0.95
learning_rate = 1e-3
max_iters = 1000
weight_decay = 0.1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0  # 0 disables clipping
fused_adam = True  # fused AdamW kernel where this torch has one
# learning-rate schedule
lr_schedule = 'cosine'  # 'cosine', 'linear', 'constant' or 'exponential', after linear warmup (optim.get_lr)
warmup_iters = 50
lr_decay_iters = None  # None: max_iters
min_lr = None  # None: learning_rate / 10
# system
device = 'auto'  # 'auto', 'cpu', 'cuda', 'cuda:1', 'mps'
dtype = 'auto'  # 'auto' (bf16 where the hardware has it), 'float32', 'bfloat16', 'float16'
compile = False  # torch.compile the model
seed = 1337
# scaling out (torchrun): DDP by default, a full copy of everything on every process
fsdp = False  # shard weights, gradients and optimizer state over the processes instead (fsdp.py); any count resumes
activation_checkpointing = False  # recompute each block's activations in backward: less memory, ~1/3 more compute
cpu_offload = False  # fsdp on GPUs: keep the sharded weights and optimizer state in CPU memory
# -----------------------------------------------------------------------------


# -----------------------------------------------------------------------------
# batches: next-token windows, and masked-LM (+ next-sentence) rows, each fixed by its key alone

def get_batch(data, batch_size, block_size, key, device):
    """Random windows (x, y) of a token array, fixed by key alone (non-negative ints: [seed, 0, iter, micro] for
    training, [seed, 1, k] for evaluation). Resuming at iteration `iter` sees exactly the batches an unbroken run
    would, and DDP ranks split an iteration's micro-batches without talking."""
    rng = np.random.default_rng(key)
    starts = rng.integers(0, len(data) - block_size, size=batch_size)
    xy = torch.from_numpy(np.stack([data[s:s + block_size + 1] for s in starts]).astype(np.int64))  # (B, T + 1)
    xy = xy.pin_memory().to(device, non_blocking=True) if device.startswith('cuda') else xy.to(device)
    return xy[:, :-1], xy[:, 1:]


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
def estimate_loss(model, batches, runtime):
    """Mean loss over batches [(x, y), ...] from get_batch (the same fixed ones at every evaluation, so evals
    compare cleanly)."""
    losses = []
    with eval_mode(model):
        for x, y in batches:
            with runtime.autocast():
                losses.append(model(x, y)[1].float())
    return torch.stack(losses).mean().item()


@torch.no_grad()
def estimate_mlm(model, batches, runtime):
    """Masked-LM loss and masked-token accuracy over batches (dicts from get_mlm_batch), and the accuracy of always
    predicting the most frequent masked token, the baseline to beat; NSP loss and accuracy when batches have
    nsp_labels. Token-weighted means over all masked positions."""
    # sums[head, 'loss' / 'acc' / 'n']: summed cross-entropy, correct argmaxes, count
    sums, target_counts = collections.Counter(), collections.Counter()
    with eval_mode(model):
        for batch in batches:
            selected = batch['targets'] != IGNORE_INDEX
            targets = batch['targets'][selected]
            with runtime.autocast():
                x = model.hidden_states(batch['idx'], token_type_ids=batch.get('token_type_ids'))
                heads = {'mlm': (model.mlm_head(x[selected]), targets)}  # (N, V), only where there is a target
                if 'nsp_labels' in batch:
                    heads['nsp'] = (model.nsp_head(model.pooler(x)), batch['nsp_labels'])  # (B, 2)
            for head, (logits, labels) in heads.items():
                sums[head, 'loss'] += F.cross_entropy(logits.float(), labels, reduction='sum').item()
                sums[head, 'acc'] += (logits.argmax(-1) == labels).sum().item()
                sums[head, 'n'] += len(labels)
            target_counts.update(targets.tolist())
    scores = {f'{head}_{kind}': total / max(sums[head, 'n'], 1) for (head, kind), total in sums.items() if kind != 'n'}
    return {**scores, 'mlm_baseline_acc': max(target_counts.values(), default=0) / max(sums['mlm', 'n'], 1)}


# -----------------------------------------------------------------------------
# the step

def train_step(model, optimizer, scaler, batches, runtime, grad_clip):
    """One optimizer step over the micro-batches [(x, y), ...] or [{forward's keyword arguments}, ...] (gradient
    accumulation), and its record: the mean loss and the gradient norm before clipping (0-dim tensors left on the
    device, so that the caller decides when to sync) and the tokens it read. Under DDP the gradients are
    all-reduced on the last micro-batch only (under FSDP reduce-scattered then)."""
    loss, tokens = torch.zeros((), device=runtime.device), 0
    for micro, batch in enumerate(batches):
        sync = micro == len(batches) - 1
        if isinstance(model, DDP):
            model.require_backward_grad_sync = sync
        elif hasattr(unwrap(model), 'set_requires_gradient_sync'):  # FSDP: reduce-scatter on the last one only
            unwrap(model).set_requires_gradient_sync(sync)
        with runtime.autocast():
            _, micro_loss = model(**batch) if isinstance(batch, dict) else model(*batch)
            micro_loss = micro_loss / len(batches)  # the mean over the micro-batches, as one large batch
        scaler.scale(micro_loss).backward()
        loss += micro_loss.detach()
        tokens += (batch['idx'] if isinstance(batch, dict) else batch[0]).numel()
    scaler.unscale_(optimizer)  # the true gradients to clip (a no-op without float16's scaler)
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else math.inf)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, 'full_tensor') else grad_norm  # FSDP: a DTensor
    return {'loss': loss, 'grad_norm': grad_norm.detach(), 'tokens': tokens}


# -----------------------------------------------------------------------------
# the run

def main():
    explicit = set()  # keys set by config files or overrides: on resume they win over the checkpoint's config
    config = configure(config_defaults(globals()), sys.argv[1:], explicit=explicit, fields_of=ModelConfig,
                       choices=optim.CHOICES)
    checkpoint = None
    if config['init_from'] == 'resume':  # the run's own settings and model, but for what is given again now
        checkpoint = resume_checkpoint(config['out_dir'], config['fsdp'] if 'fsdp' in explicit else None,
                                       config['trust_checkpoint'])
        saved = {**checkpoint['config'], **checkpoint['model_args']}
        config = {**config, **{k: v for k, v in saved.items() if k not in explicit and k in config}}
        config = keep_tokens_per_iter(config, checkpoint, explicit)
    globals().update(config)
    if objective == 'mlm' and causal:
        raise UserError("objective='mlm' needs a bidirectional model: set causal=False "
                        "(as config/pretrain_bert_small.py does)")
    if objective == 'clm' and not causal:
        raise UserError("objective='clm' needs causal=True: a bidirectional model sees the token it predicts")
    if nsp and objective != 'mlm':
        raise UserError("nsp=True is part of BERT-style pretraining: use it with objective='mlm'")
    runtime = setup_runtime(device, dtype, seed)
    sharding.check_settings(runtime, fsdp, cpu_offload, optimizer)  # before any data is prepared
    master = runtime.master
    with run_lock(out_dir) if master else contextlib.nullcontext():
        if master and init_from != 'resume':
            held = [name for name in checkpoints.CHECKPOINT_NAMES if os.path.exists(os.path.join(out_dir, name))]
            if held and not overwrite:
                raise UserError(f"{out_dir} already holds a run ({', '.join(held)}): continue it with "
                                f"--init_from=resume, replace it with --overwrite=True, or choose another --out_dir")
            # no tool may read the old run's best.pt (or its metrics) as this one's
            set_aside(out_dir, (*checkpoints.CHECKPOINT_NAMES, 'metrics.jsonl'))
        tokens_per_iter = gradient_accumulation_steps * runtime.world_size * batch_size * block_size
        if master:
            print(f"device {runtime.device}, dtype {runtime.dtype}, {runtime.world_size} process(es); "
                  f"{tokens_per_iter:,} tokens/iter = {gradient_accumulation_steps} accum * {runtime.world_size} "
                  f"proc * {batch_size} batch * {block_size} block")

        # data: the default corpus prepares itself on first use, so the README's one command works on a fresh clone
        data_dir = os.path.join(data_root, dataset)
        if not os.path.exists(os.path.join(data_dir, 'meta.json')) and dataset.startswith('bbc_news'):
            if master:
                prepare.prepare(name=dataset, tokenizer=tokenizer, out_root=data_root)
            if runtime.ddp:
                torch.distributed.barrier()
        meta = prepare.load_meta(data_dir)
        train_data, val_data = prepare.open_split(data_dir, 'train'), prepare.open_split(data_dir, 'val')
        for split, data in (('train', train_data), ('val', val_data)):
            if len(data) <= block_size:
                raise UserError(f"{split} split of {data_dir} has {len(data)} tokens, fewer than one block of "
                                f"{block_size + 1}: use a larger corpus or a smaller --block_size")
        # special tokens (BERT-style): WordPiece's own, or the ids just above a GPT-2 / char vocabulary
        special, n_ids = None, meta['vocab_size']
        if objective == 'mlm':
            special = special_tokens(meta)
            n_ids = max(n_ids, *(special[k] + 1 for k in ('mask', 'cls', 'sep', 'pad')))
            meta = {**meta, 'special_tokens': special}  # recorded in every checkpoint

        # model: the settings that are ModelConfig fields, the vocabulary of the data (rounded up to a multiple of
        # 64: faster matmuls, and spare ids for special tokens), the objective's heads
        heads = dict(mlm_head=objective == 'mlm', type_vocab_size=2 if nsp else 0, pooler=nsp, nsp_head=nsp)
        model_args = {**settings_of(config, ModelConfig), 'vocab_size': (n_ids + 63) // 64 * 64, **heads}
        iter_num, best_val_loss, elapsed_before = 0, float('inf'), 0.0
        if init_from == 'scratch':
            model = Transformer(ModelConfig(**model_args))
        else:  # resume, or continued pretraining from a checkpoint of ours or an HF one (its weights, a new optimizer)
            source = checkpoint['path'] if init_from == 'resume' else init_from
            if init_from == 'resume':
                model, source_meta = checkpoints.model_of(checkpoint, dropout), checkpoint.get('meta') or {}
                check_resumable(checkpoint['model_args'], {**settings_of(config, ModelConfig),
                                                           'vocab_size': model_args['vocab_size']}, source)
                iter_num, best_val_loss = checkpoint['iter_num'], checkpoint['best_val_loss']
                elapsed_before = checkpoint.get('elapsed_s', 0.0)
            else:
                model, source_meta, _ = checkpoints.load(init_from, trust=trust_checkpoint, dropout=dropout)
            check_compatible(source_meta, model.config.vocab_size, meta, source, data_dir)
            if model.config.causal != causal:
                kind = 'causal (GPT-style)' if model.config.causal else 'bidirectional (BERT-style)'
                raise UserError(f"init_from={init_from} is a {kind} model but the config asks for causal={causal} "
                                f"(objective={objective!r}): use a matching checkpoint")
            model = checkpoints.with_heads(model, **heads)  # e.g. a fresh MLM head on a BertModel; existing ones stay
            if block_size < model.config.block_size:
                model.crop_block_size(block_size)
            model_args = config_dict(model.config)
            if n_ids > model.config.vocab_size:
                raise UserError(f"init_from={init_from} embeds {model.config.vocab_size} ids but the data's tokens "
                                f"and special tokens need {n_ids}: start from scratch or a larger vocabulary")
        if block_size > model.config.block_size:  # else the first forward fails deep inside the model
            raise UserError(f"init_from={init_from} has block_size {model.config.block_size}, smaller than "
                            f"block_size={block_size}: use --block_size={model.config.block_size} or less")
        model = sharding.place(model, runtime, fsdp, activation_checkpointing, cpu_offload)  # device, recompute, shards

        # optimizer (and on resume its state, the scaler's and the random generators')
        scaler = grad_scaler(runtime)
        opt = optim.configure_optimizers(model, optimizer, learning_rate=learning_rate, weight_decay=weight_decay,
                                         betas=(beta1, beta2), device_type=runtime.device_type, muon_lr=muon_lr,
                                         muon_momentum=muon_momentum, fused=None if fused_adam else False)
        if init_from == 'resume':
            if fsdp:
                sharding.load_sharded(checkpoint['path'], model, opt)
            else:
                try:
                    opt.load_state_dict(checkpoint['optimizer'])
                except (ValueError, KeyError) as e:
                    raise UserError(f"{out_dir}/last.pt holds the state of another optimizer than optimizer="
                                    f"{optimizer!r} ({e}): resume with the run's own optimizer") from None
                scaler.load_state_dict(checkpoint['scaler'])
            checkpoints.set_rng_states(checkpoint['rng_states'])
        checkpoint = None  # free memory
        raw_model = model
        if compile:
            print("compiling the model (takes a minute)...")
        model = wrap(model, runtime, compile, ddp=not fsdp,  # FSDP has sharded it instead
                     find_unused_parameters=raw_model.config.pooler and not nsp)  # a BERT checkpoint's idle pooler
        peak = peak_flops_for(torch.cuda.get_device_name(runtime.device)) if runtime.device_type == 'cuda' else None

        def save(name):
            """name.pt by rank 0 alone; under FSDP name.dcp, written by every process (each its shards)."""
            plain = {'model_args': model_args, 'config': config, 'iter_num': iter_num, 'best_val_loss': best_val_loss,
                     'data_state': {'seed': seed, 'next_iter': iter_num}, 'meta': meta, 'data_dir': data_dir,
                     'world_size': runtime.world_size, 'elapsed_s': round(time.time() - t_start, 1)}
            if not (fsdp or all(torch.isfinite(p).all() for p in raw_model.parameters())):
                raise UserError(f"not saving {name}: the weights are no longer finite at iteration {iter_num}; "
                                + diverged_hint(out_dir, saved_iter, learning_rate))
            if fsdp:
                sharding.save_sharded(os.path.join(out_dir, name.replace('.pt', '.dcp')), raw_model, opt,
                                      {**plain, 'rng_states': sharding.jsonable_rng(checkpoints.rng_states())}, runtime)
            elif master:
                checkpoints.save_checkpoint(os.path.join(out_dir, name), {
                    **plain, 'model': raw_model.state_dict(), 'optimizer': opt.state_dict(),
                    'scaler': scaler.state_dict(), 'rng_states': checkpoints.rng_states()})
            saved_iter[name] = iter_num

        def batch(data, docs, key):
            """A training or evaluation micro-batch: next-token windows, or BERT-style rows masked afresh."""
            if objective == 'mlm':
                return get_mlm_batch(data, batch_size, block_size, key, runtime.device, special, mlm_probability, docs)
            return get_batch(data, batch_size, block_size, key, runtime.device)
        train_docs, val_docs = ((document_spans(data, meta['eot_id']) if nsp else None) for data in (train_data, val_data))

        # SIGINT / SIGTERM: finish the current iteration, save, exit
        stop = {'signal': None}
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, _frame: stop.update(signal=signum))
        resumed_at = iter_num if init_from == 'resume' else None  # its evaluation is in the log already
        log = MetricsLog(out_dir, config, tensorboard, wandb_project, wandb_run_name,
                         resume_iter=resumed_at) if master else None
        if master:
            print(f"{raw_model.num_params() / 1e6:.2f}M parameters; data {data_dir}: {len(train_data):,} train "
                  f"tokens, {len(val_data):,} val tokens")
            write_json(os.path.join(out_dir, 'config.json'), config)

        decay_iters = lr_decay_iters if lr_decay_iters is not None else max_iters
        final_lr = min_lr if min_lr is not None else learning_rate / 10
        t0 = time.time()
        t_start = t0 - elapsed_before  # elapsed time goes on across resumes
        saved_iter = {} if resumed_at is None else {'last.dcp' if fsdp else 'last.pt': iter_num}  # what each holds
        sums = torch.zeros(2, device=runtime.device)  # loss and grad norm, summed on device; read back at log time
        n_steps = 0
        while True:
            lr = optim.get_lr(iter_num, lr_schedule, learning_rate, warmup_iters, decay_iters, final_lr)
            for group in opt.param_groups:
                group['lr'] = lr

            if (iter_num % eval_interval == 0 or iter_num == max_iters or eval_only) and iter_num != resumed_at:
                # val only: the running train loss is logged every log_interval, and eval time is training time lost
                val_batches = (batch(val_data, val_docs, [seed, 1, k]) for k in range(eval_iters))  # the same each time
                if objective == 'mlm':
                    scores = estimate_mlm(raw_model, val_batches, runtime)
                    val_loss = scores['mlm_loss'] + scores.get('nsp_loss', 0.0)
                    scores['mlm_bpb'] = bits_per_byte(scores['mlm_loss'], meta)  # per masked token's bytes
                    summary = (f"masked-token acc {scores['mlm_acc']:.3f} (most frequent token "
                               f"{scores['mlm_baseline_acc']:.3f})" + (f", NSP acc {scores['nsp_acc']:.3f}" if nsp else ''))
                else:
                    val_loss = estimate_loss(raw_model, val_batches, runtime)
                    val_bpb = bits_per_byte(val_loss, meta)  # tokenizer-independent: any vocabulary compares
                    scores = {'val_ppl': math.exp(min(val_loss, 700.0)), 'val_bpb': val_bpb}
                    summary = f"val ppl {scores['val_ppl']:.1f}" + (f", {val_bpb:.4f} bits/byte" if val_bpb else '')
                val_loss = same_on_all_ranks(val_loss, runtime)  # one decision to save, taken by all processes
                if not math.isfinite(val_loss):
                    raise UserError(f"val loss is {val_loss} at iteration {iter_num}: the run diverged; "
                                    + diverged_hint(out_dir, saved_iter, learning_rate))
                if master:
                    elapsed = time.time() - t_start
                    print(f"step {iter_num}: val loss {val_loss:.4f}, {summary}, {elapsed / 60:.1f} min")
                    log.log({'iter': iter_num, 'tokens': iter_num * tokens_per_iter, 'elapsed_s': round(elapsed, 1),
                             'val_loss': val_loss, **{k: v for k, v in scores.items() if v is not None}, 'lr': lr})
                    import plot  # here, not at the top: importing train.py stays light (no features, no matplotlib)
                    plot.try_plot_curves(out_dir)  # out_dir/curves.png, when matplotlib is installed
                if val_loss < best_val_loss:
                    best_val_loss = val_loss
                    if iter_num > 0:
                        save('best.pt')
                if iter_num > 0 and (always_save_checkpoint or iter_num == max_iters):
                    save('last.pt')
                t0 = time.time()  # evaluation time is not training time
            if iter_num >= max_iters or eval_only:
                break

            # one optimizer step over this process's micro-batches of the iteration
            batches = [batch(train_data, train_docs, [seed, 0, iter_num, micro * runtime.world_size + runtime.rank])
                       for micro in range(gradient_accumulation_steps)]
            record = train_step(model, opt, scaler, batches, runtime, grad_clip)
            sums += torch.stack([record['loss'], record['grad_norm'].to(sums.device, torch.float32)])
            n_steps += 1
            iter_num += 1

            if iter_num % log_interval == 0:
                if runtime.ddp:  # the mean over processes (gloo has no AVG: sum, then divide)
                    torch.distributed.all_reduce(sums)
                    sums /= runtime.world_size
                if not torch.isfinite(sums).all():  # every process sees the same sums: all stop together
                    raise UserError(f"the training loss is {(sums[0] / n_steps).item()} at iteration {iter_num}: the "
                                    f"run diverged; " + diverged_hint(out_dir, saved_iter, learning_rate))
                if master:
                    dt = (time.time() - t0) / n_steps
                    train_loss, grad_norm = (sums / n_steps).tolist()  # the one host sync per log_interval
                    record = {'iter': iter_num, 'tokens': iter_num * tokens_per_iter, 'train_loss': train_loss,
                              'grad_norm': grad_norm, 'lr': lr, 'ms_per_iter': round(dt * 1000, 1),
                              'tokens_per_s': round(tokens_per_iter / dt)}
                    if peak:
                        record['mfu'] = raw_model.estimate_mfu(tokens_per_iter, dt, peak)
                    log_step(log, record, f"iter {iter_num}")
                sums.zero_()
                n_steps, t0 = 0, time.time()
            signum = stop['signal'] or 0
            if fsdp and runtime.ddp:  # a sharded save needs every process: all stop at the same iteration
                flag = torch.tensor([signum], device=runtime.device)
                torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
                signum = int(flag.item())
            if signum:
                save('last.pt')
                if master:
                    print(f"signal {signum}: saved {out_dir}/last.{'dcp' if fsdp else 'pt'} at iter {iter_num}; "
                          f"continue with --init_from=resume")
                cleanup_runtime(runtime)
                sys.exit(128 + signum)
        cleanup_runtime(runtime)


# -----------------------------------------------------------------------------
# what a run may continue from

def resume_checkpoint(out_dir, fsdp_setting, trust):
    """The checkpoint --init_from=resume continues, with its 'path': out_dir/last.pt, or out_dir/last.dcp of an
    FSDP run (then its plain values only: the shards load into the sharded model). fsdp_setting: --fsdp if given."""
    path = checkpoints.checkpoint_path(out_dir, last=True)
    sharded = path.endswith('.dcp')
    if fsdp_setting is not None and fsdp_setting != sharded:
        raise UserError(f"{path} is a {'sharded (FSDP)' if sharded else 'single-file'} checkpoint but "
                        f"--fsdp={fsdp_setting}: drop the flag to resume it as it was saved" +
                        ('' if sharded else ", or start an FSDP run from it with --init_from=" + path))
    return {**(checkpoints.read_sharded_json(path) if sharded else checkpoints.read(path, trust=trust)), 'path': path}


def keep_tokens_per_iter(config, checkpoint, explicit):
    """A run resumed on another number of processes keeps its tokens per iteration (and so its batches and its
    losses): gradient_accumulation_steps is rescaled, unless given on the command line."""
    saved, world = checkpoint.get('world_size', 1), int(os.environ.get('WORLD_SIZE', 1))
    if saved == world or 'gradient_accumulation_steps' in explicit:
        return config
    micro_batches = config['gradient_accumulation_steps'] * saved  # per iteration, over all processes
    if micro_batches % world:
        raise UserError(f"the run was saved by {saved} process(es) x {config['gradient_accumulation_steps']} "
                        f"micro-batches; {world} processes cannot split {micro_batches}: resume on a divisor of "
                        f"{micro_batches} processes, or pass --gradient_accumulation_steps")
    print(f"resuming on {world} process(es) instead of {saved}: gradient_accumulation_steps = {micro_batches // world}")
    return {**config, 'gradient_accumulation_steps': micro_batches // world}


def diverged_hint(out_dir, saved_iter, learning_rate):
    """The last good checkpoint of a run that diverged, and what to try."""
    last = max(saved_iter.items(), key=lambda item: item[1], default=None)
    kept = (f"{out_dir}/{last[0]} holds the last finite weights (iteration {last[1]})" if last else
            "nothing of this run was saved")
    return (f"{kept}; try a lower --learning_rate (now {learning_rate:g}), --grad_clip=1.0 or more --warmup_iters")


def check_resumable(saved_args, wanted, path):
    """A resumed run is the run it continues: every ModelConfig field the settings name (and the vocabulary) equals
    the checkpoint's, except the fields marked changeable (dropout, fused_loss, ...)."""
    saved = config_dict(ModelConfig.from_dict(saved_args))
    for field in fields(ModelConfig):
        if not field.metadata.get('changeable') and field.name in wanted and wanted[field.name] != saved[field.name]:
            raise UserError(f"{path} has {field.name}={saved[field.name]} but the config asks for {wanted[field.name]}: "
                            f"drop that override to resume, or train into a new out_dir")


def check_compatible(source_meta, n_embedded, meta, source, data_dir):
    """The model to continue fits the data: it embeds the data's ids, and its tokenizer (the vocabulary itself, for a
    WordPiece or a trained BPE) is the data's."""
    if n_embedded < meta['vocab_size']:
        raise UserError(f"{source} has a vocabulary of {n_embedded} but the data needs {meta['vocab_size']} "
                        f"({meta['tokenizer']}): prepare the data with the checkpoint's tokenizer")
    theirs = source_meta.get('tokenizer')
    if theirs and theirs != meta['tokenizer']:
        raise UserError(f"{source} was trained on {theirs!r} tokens but the data uses {meta['tokenizer']!r}: "
                        f"prepare the data with --tokenizer={theirs}")
    if meta['tokenizer'] == 'char' and source_meta.get('chars') not in (None, meta.get('chars')):
        raise UserError(f"{source} was trained on another character set than {data_dir} (its ids would mean other "
                        f"characters): prepare the data from the checkpoint's corpus, or train from scratch on this one")
    if source_meta.get('vocab_sha256') != meta.get('vocab_sha256'):  # two WordPiece vocabularies, or two trained BPEs
        if meta['tokenizer'] == 'bpe':
            raise UserError(f"{source} was trained with another BPE vocabulary than {meta.get('vocab_sha256', '')[:12]} "
                            f"of the data (its own: {source_meta.get('vocab_sha256', '')[:12]}): prepare the data "
                            f"with that checkpoint's tokenizer, or train from scratch on this one")
        raise UserError(f"{data_dir} was tokenized with {meta.get('vocab_path')}, not the WordPiece vocabulary "
                        f"{source_meta.get('vocab_path')} of {source}: prepare the data with "
                        f"--tokenizer=wordpiece:{source_meta.get('vocab_path')}")


if __name__ == '__main__':
    run_main(main)
