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
"""

import contextlib
import json
import math
import os
import signal
import sys
import time

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

import common
from configurator import configure, config_defaults
import hf
from model import ModelConfig, Transformer, config_dict
import fsdp as sharding
import optim
import plot
import prepare
from tokenizer import special_tokens, wordpiece_meta

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
# model
n_layer = 4
n_head = 4
n_embd = 256
dropout = 0.0
bias = False
causal = True  # False: bidirectional attention, which objective='mlm' needs
norm_position = 'pre'  # 'post': LayerNorm after each residual add, as BERT
embedding_norm = False  # LayerNorm on the embeddings, as BERT
# GPT-2's architecture by default; rope + rms + swiglu + tie_embeddings=False (bias=False) is Llama's, + qk_norm
# Qwen3's, so that export.py maps it one to one
pos_embedding = 'learned'  # 'rope': rotary positions (Su et al. 2021) instead of a learned table
norm = 'layer'  # 'rms': RMSNorm (Zhang & Sennrich 2019)
mlp = 'gelu'  # 'swiglu': gated (Shazeer 2020), 'relu2': squared ReLU (So et al. 2021, "Primer")
qk_norm = False  # RMSNorm of each head's queries and keys before attention
tie_embeddings = True  # False: an LM head of its own instead of wte's transpose
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
lr_schedule = 'cosine'  # 'cosine', 'linear', 'constant' or 'exponential', after linear warmup
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


def main():
    explicit = set()  # keys set by config files or overrides: on resume they win over the checkpoint's config
    config = configure(config_defaults(globals()), sys.argv[1:], explicit=explicit)
    checkpoint = None
    if config['init_from'] == 'resume':
        checkpoint = resume_checkpoint(config['out_dir'], config['fsdp'] if 'fsdp' in explicit else None,
                                       config['trust_checkpoint'])
        config = {**config, **{k: v for k, v in checkpoint['config'].items() if k not in explicit and k in config}}
        config = keep_tokens_per_iter(config, checkpoint, explicit)
    globals().update(config)
    if objective == 'mlm' and causal:
        raise common.UserError("objective='mlm' needs a bidirectional model: set causal=False "
                               "(as config/pretrain_bert_small.py does)")
    if objective == 'clm' and not causal:
        raise common.UserError("objective='clm' needs causal=True: a bidirectional model sees the token it predicts")
    if nsp and objective != 'mlm':
        raise common.UserError("nsp=True is part of BERT-style pretraining: use it with objective='mlm'")
    if cpu_offload and not fsdp:
        raise common.UserError("cpu_offload=True offloads the shards of an FSDP run: use it with --fsdp=True")
    if cpu_offload and optimizer == 'muon':  # its all-gather of each matrix would see shards in CPU memory
        raise common.UserError("optimizer='muon' gathers every matrix on the GPU, which cpu_offload=True keeps in CPU "
                               "memory: use --optimizer=adamw with offload, or drop --cpu_offload")
    runtime = common.setup_runtime(device, dtype, seed)
    if fsdp:
        sharding.check_settings(runtime, cpu_offload)  # before any data is prepared
    with common.run_lock(out_dir) if runtime.master else contextlib.nullcontext():
        if runtime.master and init_from != 'resume' and not overwrite:
            held = [name for name in common.CHECKPOINT_NAMES if os.path.exists(os.path.join(out_dir, name))]
            if held:
                raise common.UserError(f"{out_dir} already holds a run ({', '.join(held)}): continue it with "
                                       f"--init_from=resume, replace it with --overwrite=True, or choose another --out_dir")
        train(config, checkpoint, runtime)


def train(config, checkpoint, runtime):
    """The run itself, in the order a reader follows: data, model, optimizer, loop. Reads the config globals."""
    decay_iters = lr_decay_iters if lr_decay_iters is not None else max_iters
    final_lr = min_lr if min_lr is not None else learning_rate / 10
    tokens_per_iter = gradient_accumulation_steps * runtime.world_size * batch_size * block_size
    if runtime.master:
        print(f"device {runtime.device}, dtype {runtime.dtype}, {runtime.world_size} process(es); "
              f"{tokens_per_iter:,} tokens/iter = {gradient_accumulation_steps} accum * {runtime.world_size} proc "
              f"* {batch_size} batch * {block_size} block")

    # data: the default corpus prepares itself on first use, so the README's one command works on a fresh clone
    data_dir = os.path.join(data_root, dataset)
    if not os.path.exists(os.path.join(data_dir, 'meta.json')) and dataset.startswith('bbc_news'):
        if runtime.master:
            prepare.prepare(name=dataset, tokenizer=tokenizer, out_root=data_root)
        if runtime.ddp:
            torch.distributed.barrier()
    meta = prepare.load_meta(data_dir)
    train_data = prepare.open_split(data_dir, 'train')
    val_data = prepare.open_split(data_dir, 'val')
    for split, data in (('train', train_data), ('val', val_data)):
        if len(data) <= block_size:
            raise common.UserError(f"{split} split of {data_dir} has {len(data)} tokens, fewer than one block of "
                                   f"{block_size + 1}: use a larger corpus or a smaller --block_size")

    # special tokens (BERT-style): WordPiece's own, or the ids just above a GPT-2 / char vocabulary
    special = special_tokens(meta) if objective == 'mlm' else None
    n_ids = meta['vocab_size'] if special is None else max(meta['vocab_size'], *(
        special[k] + 1 for k in ('mask', 'cls', 'sep', 'pad')))
    if special is not None:
        meta = {**meta, 'special_tokens': special}  # recorded in every checkpoint

    # model
    heads = dict(mlm_head=objective == 'mlm', type_vocab_size=2 if nsp else 0, pooler=nsp, nsp_head=nsp)
    model_args = dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, bias=bias,
                      dropout=dropout, causal=causal, vocab_size=padded_vocab_size(n_ids),
                      norm_position=norm_position, embedding_norm=embedding_norm, pos_embedding=pos_embedding,
                      norm=norm, mlp=mlp, qk_norm=qk_norm, tie_embeddings=tie_embeddings, **heads)
    iter_num, best_val_loss = 0, float('inf')
    if init_from == 'scratch':
        model = Transformer(ModelConfig(**model_args))
    elif hf.is_hf_name(init_from):
        try:
            model, hf_dir, model_type = hf.load_model(init_from, dropout=dropout, allow_pickle=trust_checkpoint)
        except (OSError, ValueError) as e:  # not found, not readable, not a model model.py can represent
            raise common.UserError(str(e)) from None
        check_hf_compatible(init_from, model, model_type, hf_dir, meta, data_dir)
    else:  # 'resume' or a checkpoint path
        path = checkpoint['path'] if init_from == 'resume' else init_from
        checkpoint = checkpoint or common.load_checkpoint(path, trust=trust_checkpoint)
        check_compatible(checkpoint, model_args, meta, path, strict=init_from == 'resume')
        if 'model' in checkpoint:
            model = common.model_from_checkpoint(checkpoint, dropout=dropout)
        else:  # resuming a sharded run: the weights load into the shards below
            model = Transformer(ModelConfig.from_dict({**checkpoint['model_args'], 'dropout': dropout}))
        if init_from == 'resume':
            iter_num, best_val_loss = checkpoint['iter_num'], checkpoint['best_val_loss']
    if init_from != 'scratch':
        if model.config.causal != causal:
            kind = 'causal (GPT-style)' if model.config.causal else 'bidirectional (BERT-style)'
            raise common.UserError(f"init_from={init_from} is a {kind} model but the config asks for "
                                   f"causal={causal} (objective={objective!r}): use a matching checkpoint")
        model = common.with_heads(model, **heads)  # e.g. a fresh MLM head on a BertModel; existing heads stay
        if block_size < model.config.block_size:
            model.crop_block_size(block_size)
        model_args = config_dict(model.config)
        if n_ids > model.config.vocab_size:
            raise common.UserError(f"init_from={init_from} embeds {model.config.vocab_size} ids but the data's "
                                   f"tokens and special tokens need {n_ids}: start from scratch or a larger vocabulary")
    if block_size > model.config.block_size:  # else the first forward fails deep inside the model
        raise common.UserError(f"init_from={init_from} has block_size {model.config.block_size}, smaller than "
                               f"block_size={block_size}: use --block_size={model.config.block_size} or less")
    model.to(runtime.device)
    if activation_checkpointing:
        for block in model.transformer.h:
            sharding.checkpoint_activations(block)
    if fsdp:
        model = sharding.shard(model, runtime, cpu_offload=cpu_offload)  # before the optimizer: it holds the shards
    scaler = common.grad_scaler(runtime)
    try:
        opt = optim.configure_optimizers(model, optimizer, learning_rate=learning_rate, weight_decay=weight_decay,
                                         betas=(beta1, beta2), device_type=runtime.device_type, muon_lr=muon_lr,
                                         muon_momentum=muon_momentum, fused=None if fused_adam else False)
    except ValueError as e:
        raise common.UserError(str(e)) from None
    if init_from == 'resume' and fsdp:
        sharding.load_sharded(checkpoint['path'], model, opt)
        common.set_rng_states(sharding.tensor_rng(checkpoint['rng_states']))
    elif init_from == 'resume':
        try:
            opt.load_state_dict(checkpoint['optimizer'])
        except (ValueError, KeyError) as e:
            raise common.UserError(f"{out_dir}/last.pt holds the state of another optimizer than optimizer="
                                   f"{optimizer!r} ({e}): resume with the run's own optimizer") from None
        scaler.load_state_dict(checkpoint['scaler'])
        common.set_rng_states(checkpoint['rng_states'])
    checkpoint = None  # free memory
    raw_model = model
    if compile:
        print("compiling the model (takes a minute)...")
        model = torch.compile(model)
    if runtime.ddp and not fsdp:
        model = DDP(model, device_ids=[runtime.local_rank] if runtime.device_type == 'cuda' else None,
                    find_unused_parameters=raw_model.config.pooler and not nsp)  # a BERT checkpoint's idle pooler
    peak = common.peak_flops_for(torch.cuda.get_device_name(runtime.device)) if runtime.device_type == 'cuda' else None

    def save(name):
        """name.pt by rank 0 alone; under FSDP name.dcp, written by every process (each its shards)."""
        plain = {'model_args': model_args, 'config': config, 'iter_num': iter_num, 'best_val_loss': best_val_loss,
                 'data_state': {'seed': seed, 'next_iter': iter_num}, 'meta': meta, 'data_dir': data_dir,
                 'world_size': runtime.world_size}
        if fsdp:
            sharding.save_sharded(os.path.join(out_dir, name.replace('.pt', '.dcp')), raw_model, opt,
                                  {**plain, 'rng_states': sharding.jsonable_rng(common.rng_states())}, runtime)
        elif runtime.master:
            common.save_checkpoint(os.path.join(out_dir, name), {
                **plain, 'model': raw_model.state_dict(), 'optimizer': opt.state_dict(), 'scaler': scaler.state_dict(),
                'rng_states': common.rng_states()})

    if objective == 'mlm':  # BERT-style batches: masked afresh at every step; NSP pairs within documents
        train_docs, val_docs = ((common.document_spans(data, meta['eot_id']) if nsp else None)
                                for data in (train_data, val_data))

        def mlm_batch(data, docs, key):
            return common.get_mlm_batch(data, batch_size, block_size, key, runtime.device, special, mlm_probability, docs)

    # SIGINT / SIGTERM: finish the current iteration, save, exit
    stop = {'signal': None}
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.update(signal=signum))

    if runtime.master and init_from != 'resume' and os.path.exists(os.path.join(out_dir, 'metrics.jsonl')):
        os.replace(os.path.join(out_dir, 'metrics.jsonl'), os.path.join(out_dir, 'metrics.previous.jsonl'))  # kept aside
    log = common.MetricsLog(out_dir, config, tensorboard, wandb_project, wandb_run_name,
                            resume_iter=iter_num if init_from == 'resume' else None) if runtime.master else None
    if runtime.master:
        print(f"{raw_model.num_params() / 1e6:.2f}M parameters; data {data_dir}: {len(train_data):,} train tokens, "
              f"{len(val_data):,} val tokens")
        with open(os.path.join(out_dir, 'config.json'), 'w') as f:
            json.dump(config, f, indent=2)


    t_start = t0 = time.time()
    loss_sum = torch.zeros((), device=runtime.device)  # summed on device; read back only at log time
    loss_count = 0
    while True:
        lr = common.get_lr(iter_num, lr_schedule, learning_rate, warmup_iters, decay_iters, final_lr)
        for group in opt.param_groups:
            group['lr'] = lr

        if iter_num % eval_interval == 0 or iter_num == max_iters or eval_only:
            # val only: the running train loss is logged every log_interval, and eval time is training time lost
            if objective == 'mlm':
                scores = common.estimate_mlm(raw_model, (mlm_batch(val_data, val_docs, [seed, 1, k])
                                                         for k in range(eval_iters)), runtime)
                val_loss = scores['mlm_loss'] + scores.get('nsp_loss', 0.0)
                mlm_bpb = prepare.bits_per_byte(scores['mlm_loss'], meta)  # per masked token's bytes: not a causal bpb
                if mlm_bpb is not None:
                    scores['mlm_bpb'] = mlm_bpb
                summary = (f"masked-token acc {scores['mlm_acc']:.3f} (most frequent token "
                           f"{scores['mlm_baseline_acc']:.3f})" + (f", NSP acc {scores['nsp_acc']:.3f}" if nsp else ''))
            else:
                val_loss = common.estimate_loss(raw_model, val_data, batch_size, block_size, eval_iters, runtime, seed)
                scores = {'val_ppl': math_exp(val_loss)}
                val_bpb = prepare.bits_per_byte(val_loss, meta)  # tokenizer-independent: runs of any vocabulary compare
                if val_bpb is not None:
                    scores['val_bpb'] = val_bpb
                summary = f"val ppl {math_exp(val_loss):.1f}" + (f", {val_bpb:.4f} bits/byte" if val_bpb else '')
            val_loss = common.same_on_all_ranks(val_loss, runtime)  # one decision to save, taken by all processes
            if runtime.master:
                elapsed = time.time() - t_start
                print(f"step {iter_num}: val loss {val_loss:.4f}, {summary}, {elapsed / 60:.1f} min")
                log.log({'iter': iter_num, 'tokens': iter_num * tokens_per_iter, 'elapsed_s': round(elapsed, 1),
                         'val_loss': val_loss, **scores, 'lr': lr})
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

        keys = [[seed, 0, iter_num, micro * runtime.world_size + runtime.rank] for micro in range(gradient_accumulation_steps)]
        if objective == 'mlm':
            batches = [mlm_batch(train_data, train_docs, key) for key in keys]
        else:
            batches = [common.get_batch(train_data, batch_size, block_size, key, runtime.device) for key in keys]
        loss_sum += common.train_step(model, opt, scaler, batches, runtime, grad_clip)
        loss_count += 1
        iter_num += 1

        if iter_num % log_interval == 0:
            if runtime.ddp:  # the logged loss is the mean over processes (gloo has no AVG: sum, then divide)
                torch.distributed.all_reduce(loss_sum)
                loss_sum /= runtime.world_size
            if runtime.master:
                t1 = time.time()
                dt = (t1 - t0) / loss_count
                train_loss = loss_sum.item() / loss_count  # the one host sync per log_interval
                record = {'iter': iter_num, 'tokens': iter_num * tokens_per_iter, 'train_loss': train_loss, 'lr': lr,
                          'ms_per_iter': round(dt * 1000, 1), 'tokens_per_s': round(tokens_per_iter / dt)}
                if peak:
                    record['mfu'] = raw_model.estimate_mfu(tokens_per_iter, dt, peak)
                print(f"iter {iter_num}: loss {train_loss:.4f}, lr {lr:.2e}, {dt * 1000:.0f} ms/iter, "
                      f"{tokens_per_iter / dt:,.0f} tok/s" + (f", mfu {record['mfu'] * 100:.1f}%" if peak else ''))
                log.log(record)
            loss_sum.zero_()
            loss_count, t0 = 0, time.time()
        signum = stop['signal'] or 0
        if fsdp and runtime.ddp:  # a sharded save needs every process: all stop at the same iteration
            flag = torch.tensor([signum], device=runtime.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            signum = int(flag.item())
        if signum:
            save('last.pt')
            if runtime.master:
                print(f"signal {signum}: saved {out_dir}/last.{'dcp' if fsdp else 'pt'} at iter {iter_num}; "
                      f"continue with --init_from=resume")
            common.cleanup_runtime(runtime)
            sys.exit(128 + signum)
    common.cleanup_runtime(runtime)


def resume_checkpoint(out_dir, fsdp_setting, trust):
    """The checkpoint --init_from=resume continues, with its 'path': out_dir/last.pt, or out_dir/last.dcp of an
    FSDP run (then its plain values only: the shards load into the sharded model). fsdp_setting: --fsdp if given."""
    held = [os.path.join(out_dir, name) for name in ('last.pt', 'last.dcp') if os.path.exists(os.path.join(out_dir, name))]
    if not held:
        raise common.UserError(f"{os.path.join(out_dir, 'last.pt')} not found (nor last.dcp): nothing to resume; train "
                               f"there first, or pass the out_dir of the run to continue")
    path = max(held, key=os.path.getmtime)  # both: a run that moved between DDP and FSDP; the newer one
    sharded = path.endswith('.dcp')
    if fsdp_setting is not None and fsdp_setting != sharded:
        raise common.UserError(f"{path} is a {'sharded (FSDP)' if sharded else 'single-file'} checkpoint but "
                               f"--fsdp={fsdp_setting}: drop the flag to resume it as it was saved" +
                               ('' if sharded else ", or start an FSDP run from it with --init_from=" + path))
    checkpoint = common.read_sharded_json(path) if sharded else common.load_checkpoint(path, trust=trust)
    return {**checkpoint, 'path': path}


def keep_tokens_per_iter(config, checkpoint, explicit):
    """A run resumed on another number of processes keeps its tokens per iteration (and so its batches and its
    losses): gradient_accumulation_steps is rescaled, unless given on the command line."""
    saved, world = checkpoint.get('world_size', 1), int(os.environ.get('WORLD_SIZE', 1))
    if saved == world or 'gradient_accumulation_steps' in explicit:
        return config
    micro_batches = config['gradient_accumulation_steps'] * saved  # per iteration, over all processes
    if micro_batches % world:
        raise common.UserError(f"the run was saved by {saved} process(es) x {config['gradient_accumulation_steps']} "
                               f"micro-batches; {world} processes cannot split {micro_batches}: resume on a divisor of "
                               f"{micro_batches} processes, or pass --gradient_accumulation_steps")
    print(f"resuming on {world} process(es) instead of {saved}: gradient_accumulation_steps = {micro_batches // world}")
    return {**config, 'gradient_accumulation_steps': micro_batches // world}


def math_exp(x):
    return math.exp(min(x, 700.0))


def padded_vocab_size(vocab_size):
    """Round the vocabulary up to a multiple of 64: faster matmuls, and spare ids for special tokens."""
    return (vocab_size + 63) // 64 * 64


MODEL_KEYS = ('n_layer', 'n_head', 'n_embd', 'bias', 'vocab_size', 'pos_embedding', 'norm', 'mlp', 'qk_norm',
              'tie_embeddings')


def check_compatible(checkpoint, model_args, meta, path, strict):
    """The checkpoint must fit the data (vocabulary) and, on resume, the model this config asks for."""
    ckpt_args = checkpoint['model_args']
    if ckpt_args['vocab_size'] < meta['vocab_size']:
        raise common.UserError(f"{path} has a vocabulary of {ckpt_args['vocab_size']} but the data needs "
                               f"{meta['vocab_size']} ({meta['tokenizer']}): prepare the data with the checkpoint's tokenizer")
    ckpt_meta = checkpoint.get('meta', {})
    ckpt_tok = ckpt_meta.get('tokenizer')
    if ckpt_tok and ckpt_tok != meta['tokenizer']:
        raise common.UserError(f"{path} was trained on {ckpt_tok!r} tokens but the data uses {meta['tokenizer']!r}: "
                               f"prepare the data with --tokenizer={ckpt_tok}")
    if ckpt_meta.get('vocab_sha256') != meta.get('vocab_sha256'):  # two WordPiece vocabularies, or two trained BPEs
        if meta['tokenizer'] == 'bpe':
            raise common.UserError(f"{path} was trained with another BPE vocabulary than {meta.get('vocab_sha256', '')[:12]} "
                                   f"of the data (its own: {ckpt_meta.get('vocab_sha256', '')[:12]}): prepare the data "
                                   f"with that checkpoint's tokenizer, or train from scratch on this one")
        raise common.UserError(f"{path} was trained with the WordPiece vocabulary {ckpt_meta.get('vocab_path')} but the "
                               f"data uses another ({meta.get('vocab_path')}): prepare the data with "
                               f"--tokenizer=wordpiece:{ckpt_meta.get('vocab_path')}")
    if strict:
        for key in MODEL_KEYS + ('block_size', 'causal'):
            if ckpt_args[key] != model_args[key]:
                raise common.UserError(f"{path} has {key}={ckpt_args[key]} but the config asks for {model_args[key]}: "
                                       f"drop that override to resume, or train into a new out_dir")


def check_hf_compatible(init_from, model, model_type, directory, meta, data_dir):
    """An HF checkpoint must fit the data's tokenizer: GPT-2 BPE for GPT-2, the checkpoint's own vocab.txt for BERT."""
    if model_type not in ('gpt2', 'bert'):
        raise common.UserError(f"init_from={init_from} is a {model_type} checkpoint: its weights load, but scratchlm has "
                               f"no tokenizer for it yet; continue from GPT-2, BERT or a checkpoint of ours")
    if model_type == 'gpt2' and meta['tokenizer'] != 'gpt2':
        raise common.UserError(f"init_from={init_from} needs GPT-2 BPE data but {data_dir} uses {meta['tokenizer']!r}")
    if model_type == 'bert':
        if meta['tokenizer'] != 'wordpiece':
            raise common.UserError(f"init_from={init_from} is a BERT checkpoint but {data_dir} uses {meta['tokenizer']!r} "
                                   f"tokens: prepare the data with --tokenizer=wordpiece:{directory}")
        vocab_path = os.path.join(directory, 'vocab.txt')
        if os.path.exists(vocab_path) and wordpiece_meta(vocab_path)['vocab_sha256'] != meta['vocab_sha256']:
            raise common.UserError(f"{data_dir} was tokenized with {meta['vocab_path']}, not {vocab_path} of "
                                   f"init_from={init_from}: prepare the data with --tokenizer=wordpiece:{directory}")
    if meta['vocab_size'] > model.config.vocab_size or (model_type == 'bert' and meta['vocab_size'] != model.config.vocab_size):
        raise common.UserError(f"the data's vocabulary has {meta['vocab_size']:,} tokens but init_from={init_from} "
                               f"embeds {model.config.vocab_size:,}: its vocab.txt does not belong to these weights")


if __name__ == '__main__':
    common.run_main(main)
