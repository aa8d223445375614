"""
Benchmark the real code paths, each fast path against the plain one, measured in the same run.

    python bench.py                                   # all sections, CPU, ~4-5 minutes on 2 cores
    python bench.py --sections=train,generate         # some of them
    python bench.py --sections=recipes --out=results.json  # every table also written to a JSON file
    python bench.py --device=cuda --n_layer=12 --n_head=12 --n_embd=768 --block_size=1024 --batch_size=16 --compile=True

Our machines are shared and noisy: absolute numbers mean little, the ratios printed beside them are
the point. Plain and fast runs are interleaved and the median of each is reported.
Sections:
  train     tokens/s and MFU of train.train_step (the real step) with each fast path off and on; peak memory
  recipes   a step of pretrain_small's recipe (trained BPE, modern architecture, AdamW or Muon; with --compile=True
            also compiled) against round 1's
  generate  tokens/s of sample.generate with and without the KV cache; greedy output of the two compared in fp32
            (must be identical) and in the run's dtype (tokens equal before the first divergence)
  prepare   MB/s of prepare.prepare end to end against raw tiktoken encode_ordinary_batch on the same text;
            encode MB/s of a BPE trained on BBC News (bpe:8192) against GPT-2's BPE
  prepare_scale  (only when named) MB/s and peak RSS of prepare.py on synthetic JSONL corpora of scale_sizes MB,
            near-duplicate removal on and off (and 1 thread against all at the smallest, and bpe), each run a child
            process; every planted near-duplicate must be found
  finetune  examples/s of classification fine-tuning steps, batches padded dynamically vs to a fixed block_size
  memory    RSS / max-allocated over a long run of train steps, to show it does not grow
  sharding  per-process bytes of parameters, gradients and optimizer state, and ms per step, under DDP and under
            FSDP at 2 processes (torchrun, started by this script) on the same model; gloo on CPU, NCCL on GPUs
MFU is computed against a peak this script measures on the machine (a large matmul in the dtype used), in the
training sections right after each round's steps, so that a slow minute on a shared host slows both alike.
"""

import collections
import contextlib
import copy
import itertools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

import checkpoints
import corpus
import files
import fsdp
import optim
import prepare
import sample
import tasks
import tokenizer
from configurator import UserError, config_defaults, configure, run_main
from model import ModelConfig, Transformer, config_dict as model_config_dict
from runtime import Runtime, cleanup_runtime, grad_scaler, setup_runtime, wrap
from tokenizer import GPT2_META, get_tokenizer, special_tokens
from train import get_batch, train_step

# -----------------------------------------------------------------------------
sections = 'train,recipes,generate,prepare,finetune,memory,sharding'
device = 'auto'
dtype = 'auto'  # 'auto': bf16 where the hardware has it; 'float32' times an fp32-only machine's path on any CPU
# model and batch of the training benchmark: config/pretrain_small.py's
n_layer = 4
n_head = 4
n_embd = 256
block_size = 128
vocab_size = 50304
batch_size = 32
steps = 4  # timed steps per repeat (after 2 warm-up steps)
repeats = 3  # plain and fast runs alternate this many times
compile = False  # also measure torch.compile (its compile time is reported separately)
out = ''  # also write every table to this JSON file
# generation
checkpoint = 'out/pretrain_small'  # a run directory (checkpoints.checkpoint_path) or .pt; else a random model of the sizes above
trust_checkpoint = False  # unpickle a checkpoint that holds more than tensors (old or foreign files): it can run code
prompt_tokens = 64
new_tokens = 256
generate_batch = 4  # besides batch 1; sample.py draws num_samples=3 at once by default
# fine-tuning: classification batches padded dynamically vs to a fixed block (GPT-2's 1,024 context)
finetune_block_size = 1024
finetune_batch_size = 8
finetune_examples = 128
finetune_repeats = 2
# prepare at scale (not among the default sections: it writes corpora of GBs to scale_dir and takes ~10 minutes)
scale_sizes = '200,1000'  # MB of synthetic JSON lines, each prepared alone in a child process
scale_planted = 100  # near-copies of held-out documents planted in train, each of which removal must find
scale_bpe_vocab_size = 8192  # also prepared with --tokenizer=bpe:N (0: not)
scale_dir = ''  # where the corpora are written and prepared ('' = the system's temporary folder), deleted after
# memory
memory_steps = 60
# sharding
sharding_processes = 2
seed = 1337
# -----------------------------------------------------------------------------


def measure_peak_flops(device, dtype):
    """FLOP/s of an n^3 matmul in dtype (n 2,048; 8,192 on a GPU), the best of 5: the ceiling MFU is measured against
    on this machine."""
    n = 8192 if device.startswith('cuda') else 2048
    a, b = torch.randn(2, n, n, device=device, dtype=dtype)
    for _ in range(2):  # warm-up
        a @ b
    return 2 * n ** 3 / min(timed(device, torch.matmul, a, b)[0] for _ in range(5))


RESULTS = []  # every table printed, for --out


def table(title, header, rows, notes=()):
    """Print a markdown table under '## title' (rows printed as they come), then the notes; kept for --out."""
    print(f"\n## {title}\n| " + " | ".join(header) + " |\n|" + "---|" * len(header), flush=True)
    kept = []
    for row in rows:
        kept.append([str(cell) for cell in row])
        print("| " + " | ".join(kept[-1]) + " |", flush=True)
    for note in notes:
        print(note)
    RESULTS.append({'title': title, 'header': list(header), 'rows': kept, 'notes': list(notes)})


def interleaved(names, measure, rounds=None, summary=statistics.median):
    """{name: summary (by default the median) of measure(name)'s results over `rounds` rounds (None: --repeats)};
    each round runs every name, so that load on the machine hits them alike."""
    results = {name: [] for name in names}
    for _ in range(rounds or repeats):
        for name in names:
            results[name].append(measure(name))
    return {name: summary(r) for name, r in results.items()}


def timed(device, fn, /, *args, **kwargs):
    """(Seconds fn(*args, **kwargs) takes, the device synchronised before and after; what it returned)."""
    sync = torch.cuda.synchronize if device.startswith('cuda') else lambda: None
    sync()
    t = time.perf_counter()
    result = fn(*args, **kwargs)
    sync()
    return time.perf_counter() - t, result


def bench_model(runtime, **fields):
    """A fresh model (seeded) of the benchmark's sizes; fields: ModelConfig fields over them."""
    torch.manual_seed(seed)
    sizes = dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, vocab_size=vocab_size)
    return Transformer(ModelConfig(**{**sizes, 'bias': False, **fields})).to(runtime.device)


def train_setup(runtime, dtype=None, fused_adam=True, fused_loss=True, use_compile=False, arch=None,
                optimizer_name='adamw', shard=None):
    """(The model to step, the plain model, optimizer, scaler, the step's runtime) exactly as train.py builds them, by
    default with its fast paths (the run's dtype, fused AdamW, fused loss; no compile); arch: ModelConfig fields over
    the benchmark's sizes (another vocabulary, the modern options); shard: DDP's wrap or fsdp.shard, applied before
    the optimizer is built, instead of torch.compile."""
    model = bench_model(runtime, fused_loss=fused_loss, **(arch or {}))
    wrapped = shard(model, runtime) if shard else wrap(model, runtime, use_compile, ddp=False)
    optimizer = optim.configure_optimizers(model, optimizer_name, learning_rate=1e-3, weight_decay=0.1,
                                           betas=(0.9, 0.95), device_type=runtime.device_type,
                                           fused=None if fused_adam else False)
    step_runtime = Runtime(**{**runtime.__dict__, 'dtype': dtype or runtime.dtype})
    return wrapped, model, optimizer, grad_scaler(step_runtime), step_runtime


def time_train(runtime, variants):
    """Each variant {name: (data, train_setup arguments)} trained 2 + `steps` steps, the variants interleaved:
    {name: (median seconds of the last `steps` steps, MFU, the losses of all, the seconds of the first 2 (torch.compile's
    compilation among them), the model)}, medians over the rounds, the rest from the last round. Each round's MFU is
    against the matmul peak measured right after its steps: the host's speed swings ~2x from minute to minute."""
    last = {}

    def measure(name):
        data, setup = variants[name]
        compiled, model, optimizer, scaler, step_runtime = train_setup(runtime, **setup)
        times, losses = [], []
        for it in range(2 + steps):  # 2 warm-up steps first
            batch = [get_batch(data, batch_size, block_size, [seed, 0, it, 0], runtime.device)]
            seconds, record = timed(runtime.device, train_step, compiled, optimizer, scaler, batch, step_runtime, 1.0)
            times.append(seconds)
            losses.append(record['loss'].item())
        last[name] = losses, sum(times[:2]), model
        seconds = statistics.median(times[2:])
        peak = measure_peak_flops(runtime.device, getattr(torch, step_runtime.dtype))
        return seconds, model.estimate_mfu(batch_size * block_size, seconds, peak, T=block_size)
    runs = interleaved(variants, measure, summary=lambda rounds: [statistics.median(r) for r in zip(*rounds)])
    return {name: (*runs[name], *last[name]) for name in variants}


def bench_train(runtime, data):
    plain = dict(dtype='float32', fused_adam=False, fused_loss=False, use_compile=False)
    default = dict(dtype=runtime.dtype, fused_adam=True, fused_loss=True, use_compile=False)
    variants = {'plain: fp32, eager, unfused AdamW, full logits': plain,
                f'+ {runtime.dtype} autocast': {**plain, 'dtype': runtime.dtype}, '+ fused AdamW': {**plain, 'fused_adam': True},
                '+ fused chunked LM loss': {**plain, 'fused_loss': True},
                f'default: {runtime.dtype} + fused AdamW + fused loss': default}
    if compile:
        variants['default + torch.compile'] = {**default, 'use_compile': True}
    runs = time_train(runtime, {name: (data, setup) for name, setup in variants.items()})
    tokens, base = batch_size * block_size, runs[next(iter(runs))][0]

    def row(name):
        seconds, mfu, losses, warmup_s, model = runs[name]
        extra = f" (compile {warmup_s:.0f} s)" if variants[name]['use_compile'] else ''
        return (f"{name}{extra}", f"{seconds * 1000:.0f}", f"{tokens / seconds:,.0f}", f"{mfu * 100:.1f}%",
                f"{base / seconds:.2f}x", f"{losses[-1]:.4f}")
    memory = f"peak GPU memory allocated: {torch.cuda.max_memory_allocated() / 2**20:,.0f} MiB" \
        if runtime.device_type == 'cuda' else f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB"
    table(f"training: {n_layer} layers x {n_embd}, vocab {vocab_size}, {batch_size} x {block_size} tokens/step, "
          f"median of {repeats} x {steps} steps", ('path', 'ms/step', 'tokens/s', 'MFU', 'speed-up',
                                                  f'loss after {2 + steps} steps'), map(row, variants), [memory])


# pretrain_small's recipe against round 1's (docs/results.md): what a step costs; the bits per byte each reaches in
# the same time are in the README. Text per token differs (BBC News val: 4.67 bytes a GPT-2 token, 3.66 a bpe:4096
# one), so the last column compares text read per second.
PRETRAIN_SMALL = dict(vocab_size=4096, pos_embedding='rope', norm='rms', mlp='swiglu', tie_embeddings=False)
RECIPES = [('round 1: GPT-2 BPE (50,304 ids), GPT-2 architecture, AdamW', dict(vocab_size=50304), 'adamw', 4.67),
           ('pretrain_small: bpe:4096, rope + RMSNorm + SwiGLU + untied head, AdamW', PRETRAIN_SMALL, 'adamw', 3.66),
           ('the same with Muon', PRETRAIN_SMALL, 'muon', 3.66)]


def bench_recipes(runtime, data):
    # each recipe with its fast paths; ids folded inside each vocabulary: the cost is the same
    recipes = RECIPES + [('the same with Muon + torch.compile', PRETRAIN_SMALL, 'muon', 3.66)] * compile
    runs = time_train(runtime, {name: ((data % arch['vocab_size']).astype('int64'),
                                       dict(arch=arch, optimizer_name=optimizer_name, use_compile='compile' in name))
                                for name, arch, optimizer_name, _ in recipes})
    tokens = batch_size * block_size
    base, adamw, muon = (runs[name][0] for name, _, _, _ in RECIPES[:3])  # round 1; pretrain_small, AdamW; Muon
    table(f"recipes: {n_layer} layers x {n_embd}, {batch_size} x {block_size} tokens/step, {runtime.dtype}, median of "
          f"{repeats} x {steps} steps", ('recipe', 'ms/step', 'tokens/s', 'MFU', 'text KB/s', 'speed-up'),
          [(name, f"{seconds * 1000:.0f}", f"{tokens / seconds:,.0f}", f"{mfu * 100:.1f}%",
            f"{tokens * bytes_per_token / seconds / 1e3:,.1f}", f"{base / seconds:.2f}x")
           for (name, _, _, bytes_per_token), (seconds, mfu, *_) in zip(recipes, runs.values())],
          [f"Muon / AdamW step: {muon / adamw:.2f}x; the main recipe (config/pretrain_small.py, Muon) at "
           f"{tokens / muon:,.0f} tokens/s"])


def load_generation_model(runtime):
    """The trained checkpoint when its block holds prompt + new tokens; otherwise a random model of the same shape
    with a long enough block (the cost of a token does not depend on the weights)."""
    needed = prompt_tokens + new_tokens
    try:
        path = checkpoints.checkpoint_path(checkpoint)
    except UserError:  # no checkpoint there
        return bench_model(runtime, block_size=max(block_size, needed)).eval(), 'random weights (no checkpoint found)'
    model = checkpoints.load(path, trust=trust_checkpoint)[0]
    if model.config.block_size >= needed:
        return model.to(runtime.device).eval(), path
    source = f"random weights, shaped like {path} but with block_size {needed} (the checkpoint's is " \
             f"{model.config.block_size})"
    return bench_model(runtime, **{**model_config_dict(model.config), 'block_size': needed}).eval(), source


def first_divergence(a, b):
    """Tokens equal (in every row) before the first position where a and b differ; all of them if none does."""
    differ = (a != b).any(0).nonzero()
    return int(differ[0]) if len(differ) else a.size(1)


def bench_generate(runtime, data):
    """Greedy generation as sample.py runs it (weights cast to the run's dtype), batch 1 and a small batch; the
    cached and full outputs compared in fp32 (exact: they must agree) and in the run's dtype (near-tied logits of
    random weights may flip a token, after which the two continue differently)."""
    model, source = load_generation_model(runtime)
    models = {'float32': model.float(), runtime.dtype: copy.deepcopy(model).to(getattr(torch, runtime.dtype))}

    def rows():
        for batch in (1, generate_batch):
            ids = data[:batch * prompt_tokens].astype('int64') % model.config.vocab_size  # any vocabulary's ids
            prompt = torch.from_numpy(ids).view(batch, prompt_tokens).to(runtime.device)
            outputs = {}

            def run(key):  # key: (dtype, use_cache); keeps the output, returns the seconds
                seconds, outputs[key] = timed(runtime.device, sample.generate, models[key[0]], prompt, new_tokens,
                                              temperature=0, use_cache=key[1])
                return seconds
            times = interleaved([(runtime.dtype, False), (runtime.dtype, True)], run)
            interleaved([('float32', False), ('float32', True)], run, rounds=1)  # the outputs to compare
            plain, cached = times[runtime.dtype, False], times[runtime.dtype, True]
            same = torch.equal(outputs['float32', True], outputs['float32', False])
            agree = first_divergence(outputs[runtime.dtype, True][:, prompt_tokens:],
                                     outputs[runtime.dtype, False][:, prompt_tokens:])
            yield (batch, f"{batch * new_tokens / plain:,.0f}", f"{batch * new_tokens / cached:,.0f}",
                   f"{plain / cached:.2f}x", 'yes' if same else 'NO', f"{agree} / {new_tokens}")
    table(f"generation: {prompt_tokens}-token prompt + {new_tokens} new tokens, greedy, {runtime.dtype} weights, {source}",
          ('batch', 'full recomputation tokens/s', 'KV cache tokens/s', 'speed-up', 'fp32 output identical',
           f'{runtime.dtype}: tokens equal before the first divergence'), rows())


def bench_prepare():
    articles = corpus.bbc_news_articles()
    texts = [text for _, _, text in articles]
    megabytes = sum(len(t.encode('utf-8')) for t in texts) / 1e6
    threads = os.cpu_count()
    encoding = get_tokenizer('gpt2')
    names = itertools.count()
    with tempfile.TemporaryDirectory() as tmp:
        corpus_path = os.path.join(tmp, 'bbc.jsonl')
        files.write_jsonl(corpus_path, ({'text': t} for t in texts))
        runs = {'raw tiktoken encode_ordinary_batch (tokenize only)': lambda: encoding.encode_batch(texts, num_threads=threads),
                'prepare.prepare end to end (read, tokenize, split, write)': lambda: prepare.prepare(
                    corpus_path, name=f'bench{next(names)}', out_root=tmp, num_threads=threads)}
        with open(os.devnull, 'w') as devnull, contextlib.redirect_stderr(devnull), contextlib.redirect_stdout(devnull):
            times = interleaved(runs, lambda name: timed('cpu', runs[name])[0])
    raw_s = times[next(iter(runs))]
    table(f"prepare: BBC News as JSON lines, {megabytes:.1f} MB, GPT-2 BPE, {threads} threads", ('path', 'MB/s', 'ratio'),
          [(name, f"{megabytes / t:.1f}", f"{raw_s / t:.2f}x") for name, t in times.items()])
    bench_tokenizers(articles, texts, megabytes, threads)


def bench_tokenizers(articles, texts, megabytes, threads, bpe_vocab_size=8192):
    """Encode speed of a BPE trained on BBC News's train split (prepare --tokenizer=bpe:8192) against GPT-2's BPE,
    on the same text (all the articles), and bytes per token of each (the val split's, eot excluded)."""
    split_of, _ = corpus.bbc_news_split_of(articles)
    train_s, bpe_meta = timed('cpu', lambda: tokenizer.bpe_meta(tokenizer.train_bpe(
        (text for path, _, text in articles if split_of[path] == 'train'), bpe_vocab_size)))
    val = [text for path, _, text in articles if split_of[path] == 'val']

    def rows():
        for name, meta in (('gpt2', None), (f'bpe:{bpe_vocab_size}', bpe_meta)):
            tok = get_tokenizer(meta['tokenizer'], meta) if meta else get_tokenizer('gpt2')
            speeds = interleaved((1, threads), lambda num_threads: megabytes / timed('cpu', tok.encode_arrays, texts,
                                                                                     num_threads)[0])
            bytes_per_token = sum(len(t.encode('utf-8')) for t in val) / sum(len(ids) for ids in tok.encode_arrays(val))
            yield name, f"{speeds[1]:.1f}", f"{speeds[threads]:.1f}", f"{bytes_per_token:.2f}"
    table(f"tokenizers: encode MB/s on BBC News ({megabytes:.1f} MB); bpe:{bpe_vocab_size} trained on its train split "
          f"in {train_s:.1f} s", ('tokenizer', 'MB/s, 1 thread', f'MB/s, {threads} threads', 'val bytes/token'), rows())


def write_scale_corpus(path, megabytes, n_planted, val_fraction=0.05, draw_seed=1337):
    """A JSON-lines corpus of about megabytes MB: documents of BBC News words drawn at random (each word as often as
    in BBC News, each document shaped like a random BBC article: its lines, their numbers of words), so that no two
    share an 8-word shingle by chance; and n_planted near-copies of documents that prepare's default draws put in
    val: each copied, lightly edited (every 25th word changed, the last 6 dropped), over a later train document.
    Returns the number of documents and of near-copies planted."""
    articles = corpus.bbc_news_articles()
    lines_of = [[len(line.split()) for line in text.split('\n')] for _, _, text in articles]
    counts = collections.Counter(word for _, _, text in articles for word in text.split())  # in order of first use
    vocab = list(counts)
    cumulative = np.cumsum([counts[word] for word in vocab]) / sum(counts.values())
    rng = np.random.default_rng(seed)
    dummy = itertools.cycle([(None, 'x', 0), (None, None, 0)])  # prepare's draws, one per document
    splits = (split for split, text, _ in prepare._assign_splits(dummy, val_fraction, 0.0, draw_seed) if text is None)
    every = max(1, round(megabytes * 1e6 / 2400 * val_fraction / n_planted))  # of the val documents, plant these
    written, n_documents, n_val, copies, planted = 0, 0, 0, [], 0
    with open(path, 'w') as f:
        while written < megabytes * 1e6 or copies:
            lines = lines_of[rng.integers(len(lines_of))]
            words = [vocab[i] for i in np.searchsorted(cumulative, rng.random(sum(lines)), side='right').tolist()]
            split = next(splits)
            if split == 'train' and copies:
                words = copies.pop(0)
                words = [vocab[rng.integers(len(vocab))] if i % 25 == 24 else word for i, word in enumerate(words)][:-6]
                lines = [len(words)]
            text = '\n'.join(' '.join(words[end - n:end]) for n, end in zip(lines, itertools.accumulate(lines)))
            if split == 'val':
                if n_val % every == 0 and planted < n_planted:
                    copies.append(words)
                    planted += 1
                n_val += 1
            written += f.write(json.dumps({'text': text}) + '\n')  # JSON is ASCII: characters are bytes
            n_documents += 1
    return n_documents, planted


# `python -c PEAK_RSS_RUNNER PEAK_FILE SCRIPT ARGS...` runs SCRIPT as __main__ and, as it exits, writes its peak
# resident set in kB to PEAK_FILE: Linux's VmHWM, the high-water mark of this process's own address space since its
# exec. A child's ru_maxrss cannot serve: at exec the kernel keeps the address space it leaves behind as the
# child's peak, and that is a copy of the parent's (this benchmark's ~400 MB, torch loaded).
PEAK_RSS_RUNNER = """
import atexit, os, re, runpy, sys
def write_peak(path):
    with open('/proc/self/status') as status, open(path, 'w') as out:
        out.write(re.search(r'VmHWM:\\s+(\\d+) kB', status.read()).group(1))
atexit.register(write_peak, sys.argv[1])
sys.argv = sys.argv[2:]
sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))  # as `python SCRIPT` would have it
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def run_prepare(args, log_path):
    """python prepare.py *args in a child process: (wall seconds, its CPU seconds, its peak RSS in bytes). The peak
    is the child's own on Linux (PEAK_RSS_RUNNER); elsewhere its ru_maxrss, which may include this process's."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'prepare.py')
    peak_path = log_path + '.peak'
    own_peak = os.path.exists('/proc/self/status')
    runner = ['-c', PEAK_RSS_RUNNER, peak_path] if own_peak else []
    with open(log_path, 'w') as log:
        t = time.perf_counter()
        proc = subprocess.Popen([sys.executable, *runner, script, *args], stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own CPU time
        wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        with open(log_path) as log:
            raise RuntimeError(f"prepare.py {' '.join(args)} failed:\n{log.read()[-2000:]}")
    if own_peak:
        with open(peak_path) as f:
            peak_kb = int(f.read())
        os.remove(peak_path)
    return wall, usage.ru_utime + usage.ru_stime, (peak_kb if own_peak else usage.ru_maxrss) * 1024


def bench_prepare_scale():
    """prepare.py on synthetic corpora of each size in scale_sizes, removal off and on interleaved (repeats times),
    each run alone in a child process: MB/s end to end and peak RSS, so the growth per GB shows; at the smallest size
    also 1 thread against all; with scale_bpe_vocab_size, a trained BPE too (its trainer's seconds from the log)."""
    sizes = [float(size) for size in str(scale_sizes).split(',')]
    threads = os.cpu_count()
    print(f"\n## prepare at scale: synthetic JSON lines (BBC News words drawn at random, {scale_planted} planted "
          f"near-duplicates a corpus), GPT-2 BPE unless named, {threads} threads unless named, each run a child process")
    print("| corpus | run | wall s | MB/s | CPU s | peak RSS MB | near-duplicates moved / planted |")
    print("|---|---|---:|---:|---:|---:|---|")
    rss_on = {}
    with tempfile.TemporaryDirectory(dir=scale_dir or None) as tmp:
        corpus, log = os.path.join(tmp, 'corpus.jsonl'), os.path.join(tmp, 'log.txt')
        out_root = os.path.join(tmp, 'data')  # prepare.py's output, removed after each run

        def measure(args):  # one run of prepare.py: (wall s, CPU s, peak RSS bytes, its meta, its 'trained bpe' lines)
            measured = run_prepare([corpus, '--name=scale', f'--out_root={out_root}', '--overwrite', *args], log)
            with open(log) as f:
                trained = [line for line in f if line.startswith('trained bpe')]
            meta = prepare.load_meta(os.path.join(out_root, 'scale'))
            shutil.rmtree(out_root)
            return (*measured, meta, trained)
        for megabytes in sizes:
            n_documents, planted = write_scale_corpus(corpus, megabytes, scale_planted)
            real_mb = os.path.getsize(corpus) / 1e6
            runs = {'removal off': ['--dedup_threshold=0'], 'removal on': []}
            if megabytes == sizes[0]:
                runs.update({'removal off, 1 thread': ['--dedup_threshold=0', '--num_threads=1'],
                             'removal on, 1 thread': ['--num_threads=1']})
            if scale_bpe_vocab_size:
                runs[f'removal on, bpe:{scale_bpe_vocab_size}'] = [f'--tokenizer=bpe:{scale_bpe_vocab_size}']
            for name, results in interleaved(runs, lambda name: measure(runs[name]), summary=list).items():
                walls, cpus, rsses, metas, trainer_lines = zip(*results)
                wall, cpu, rss = statistics.median(walls), statistics.median(cpus), max(rsses)
                dedup, trained = metas[-1]['dedup'], trainer_lines[-1]
                moved = sum(dedup['moved_to_train'].values()) if 'moved_to_train' in dedup else '-'
                found = f"{moved} / {planted}" + ('' if moved in ('-', planted) else ' (NOT ALL FOUND)')
                extra = f" (trainer: {trained[-1].split(' in ')[-1].strip()})" if trained else ''
                print(f"| {real_mb:,.0f} MB, {n_documents:,} documents | {name}{extra} | {wall:.1f} | "
                      f"{real_mb / wall:.1f} | {cpu:.1f} | {rss / 1e6:,.0f} | {found} |", flush=True)
                if name == 'removal on':
                    rss_on[real_mb] = rss
            os.remove(corpus)
    if len(rss_on) > 1:
        (small, small_rss), (large, large_rss) = min(rss_on.items()), max(rss_on.items())
        print(f"peak RSS with removal on grows {(large_rss - small_rss) / 1e6:,.0f} MB from {small:,.0f} MB to "
              f"{large:,.0f} MB of corpus ({(large_rss - small_rss) / (large - small) * 1e3 / 1e6:,.0f} MB per GB)")


def bench_finetune(runtime):
    """Classification fine-tuning steps (finetune.py's encode / batch_order / collate, train_step) on the same
    BBC News articles, padded to finetune_block_size against padded to the longest in a length-bucketed batch."""
    import finetune
    train = tasks.load_task_data('classification', 'bbc_news')['train']
    names = tasks.label_names(train, 'classification')
    examples = [train[i] for i in torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:finetune_examples]]
    special = special_tokens(GPT2_META)
    encoded, n_truncated = tasks.encode('classification', examples, get_tokenizer('gpt2'), special, names,
                                        finetune_block_size, True)
    arch = dict(block_size=finetune_block_size, task_head='sequence', num_labels=len(names))
    model, _, optimizer, scaler, _ = train_setup(runtime, arch=arch)  # AdamW's settings do not change a step's cost
    variants = {'padded to block_size': (False, finetune_block_size), 'dynamic padding + length bucketing': (True, None)}
    batches = {name: [finetune.collate([encoded[i] for i in b], special['pad'], runtime.device, False, pad_to)
                      for b in finetune.batch_order(encoded, finetune_batch_size, 1, seed, bucket)]
               for name, (bucket, pad_to) in variants.items()}

    def epoch(name):  # a train_step on each of the variant's batches
        for batch in batches[name]:
            train_step(model, optimizer, scaler, [batch], runtime, 1.0)
    interleaved(variants, epoch, rounds=1)  # a round to warm up
    times = interleaved(variants, lambda name: timed(runtime.device, epoch, name)[0], rounds=finetune_repeats)
    base = times['padded to block_size']
    table(f"fine-tuning: BBC News classification, {len(encoded)} train articles ({n_truncated} longer than "
          f"{finetune_block_size} tokens, cut), batches of {finetune_batch_size}, {n_layer} layers x {n_embd}, "
          f"{runtime.dtype}, median of {finetune_repeats}", ('batches', 'tokens incl. padding', 'examples/s', 'speed-up'),
          [(name, f"{sum(b['idx'].numel() for b in batches[name]):,}", f"{len(encoded) / t:.1f}", f"{base / t:.2f}x")
           for name, t in times.items()])


def rss_mib():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def bench_memory(runtime, data_dir):
    """Train steps with batches read from the memmap as train.py does; memory sampled along the way."""
    model, _, optimizer, scaler, step_runtime = train_setup(runtime)
    samples = []
    for it in range(memory_steps):
        data = prepare.open_split(data_dir, 'train')  # reopened each step, like a long run touching the file
        batch = [get_batch(data, batch_size, block_size, [seed, 0, it, 0], runtime.device)]
        train_step(model, optimizer, scaler, batch, step_runtime, 1.0)['loss'].item()
        if it % 10 == 9:
            used = torch.cuda.memory_allocated() / 2**20 if runtime.device_type == 'cuda' else rss_mib()
            samples.append((it + 1, used))
    what = 'allocated GPU memory' if runtime.device_type == 'cuda' else 'RSS'
    table(f"memory over {memory_steps} train steps ({what}, MiB)", ('step', *(str(step) for step, _ in samples)),
          [('MiB', *(f"{m:,.0f}" for _, m in samples))],
          [f"growth over the second half: {samples[-1][1] - samples[len(samples) // 2][1]:+.0f} MiB"])


def launch_sharding():
    """This script again, under torchrun, for the sharding section alone; its table is printed by rank 0."""
    overrides = [a for a in sys.argv[1:] if not a.startswith('--sections=')]
    print(f"\n## sharding: DDP vs FSDP at {sharding_processes} processes (torchrun)", flush=True)
    subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone',
                    f'--nproc_per_node={sharding_processes}', __file__, '--sections=sharding', *overrides],
                   check=True, env={**os.environ, 'OMP_NUM_THREADS': str(max(1, (os.cpu_count() or 1) // sharding_processes))})


def bench_sharding(runtime, data):
    """Under torchrun: the benchmark's model trained a few steps wrapped in DDP, then sharded by FSDP (AdamW,
    the run's dtype); what each process holds (fsdp.state_bytes, after a backward) and the median step time."""
    rows = []
    for name, shard in (('DDP', wrap), ('FSDP', fsdp.shard)):
        wrapped, model, optimizer, scaler, _ = train_setup(runtime, shard=shard)
        times = []
        for it in range(2 + steps):
            batch = [get_batch(data, batch_size, block_size, [seed, 0, it, runtime.rank], runtime.device)]
            times.append(timed(runtime.device, train_step, wrapped, optimizer, scaler, batch, runtime, 1.0)[0])
        with runtime.autocast():
            loss = wrapped(*batch[0])[1]
        loss.backward()  # gradients present for the count
        rows.append((name, fsdp.state_bytes(model, optimizer), statistics.median(times[2:])))
        del wrapped, model, optimizer
    if runtime.master:
        (_, ddp, ddp_dt), (_, sharded, fsdp_dt) = rows
        table(f"model {n_layer}x{n_embd}, vocab {vocab_size:,}, batch {batch_size}x{block_size} a process, "
              f"{runtime.dtype}, {runtime.world_size} processes; MiB held by each process",
              ('', 'params', 'grads', 'optimizer', 'total', 'ms/step'),
              [(name, *(f"{held[k] / 2**20:,.1f}" for k in ('params', 'grads', 'optimizer')),
                f"{sum(held.values()) / 2**20:,.1f}", f"{dt * 1000:,.0f}") for name, held, dt in rows],
              [f"FSDP / DDP: {sum(sharded.values()) / sum(ddp.values()):.2f}x the bytes, {fsdp_dt / ddp_dt:.2f}x the time"])


def main():
    globals().update(configure(config_defaults(globals()), sys.argv[1:], fields_of=ModelConfig))
    runtime = setup_runtime(device, dtype, seed)
    data_dir = os.path.join('data', 'bbc_news')
    if 'RANK' in os.environ:  # started by launch_sharding
        bench_sharding(runtime, prepare.open_split(data_dir, 'train'))
        return cleanup_runtime(runtime)
    dtypes = dict.fromkeys(('float32', runtime.dtype))  # each peak under the dtype it was measured in
    peaks = {dtype: measure_peak_flops(runtime.device, getattr(torch, dtype)) for dtype in dtypes}
    print(f"# bench.py on {runtime.device} ({torch.get_num_threads()} threads), torch {torch.__version__}")
    print("measured matmul peak: " + ", ".join(f"{k} {v / 1e9:,.0f} GFLOP/s" for k, v in peaks.items()))
    wanted = set(sections.split(','))
    prepared = os.path.exists(os.path.join(data_dir, 'meta.json'))
    if not prepared and wanted & {'train', 'recipes', 'generate', 'memory', 'sharding'}:  # these read BBC News
        prepare.prepare()
    ids = prepare.load_meta(data_dir)['vocab_size'] if wanted & {'train', 'memory', 'sharding'} else 0
    if vocab_size < ids:
        raise UserError(f"--vocab_size={vocab_size} is below the {ids:,} ids of {data_dir} (GPT-2's BPE): leave it at 50304")
    benches = {  # each section, in the order they run
        'train': lambda: bench_train(runtime, prepare.open_split(data_dir, 'train')),
        'recipes': lambda: bench_recipes(runtime, prepare.open_split(data_dir, 'train')),
        'generate': lambda: bench_generate(runtime, prepare.open_split(data_dir, 'val')),
        'prepare': bench_prepare, 'prepare_scale': bench_prepare_scale, 'finetune': lambda: bench_finetune(runtime),
        'memory': lambda: bench_memory(runtime, data_dir), 'sharding': launch_sharding}
    for name, bench in benches.items():
        if name in wanted:
            bench()
    if out:  # every table above, with the machine it ran on
        files.write_json(out, {'device': runtime.device, 'threads': torch.get_num_threads(),
                               'torch': torch.__version__, 'peak_flops': peaks, 'tables': RESULTS})
        print(f"wrote {out}")


if __name__ == '__main__':
    run_main(main)
