"""
Fine-tune a pretrained model on a task: text classification, named-entity recognition, instruction tuning.

    python finetune.py config/finetune_bbc.py                         # BBC News topics from out/pretrain_small
    python finetune.py config/finetune_bbc.py --learning_rate=3e-4    # any global below can be overridden
    python finetune.py config/finetune_ner.py                         # WNUT-16 named entities
    python finetune.py config/finetune_sft.py                         # prompt -> response pairs (causal models)
    python finetune.py --data=reviews.csv --init_from=out/pretrain_small --out_dir=out/reviews   # your own CSV
    python finetune.py --out_dir=out/finetune_bbc --predict="Shares in the bank rose 5% on Monday"
    python finetune.py --out_dir=out/finetune_bbc --predict=FILE:texts.txt                      # one text a line
    python finetune.py --out_dir=out/finetune_bbc --predict="Shares rose 5%" --explain=True    # each word's part
    torchrun --standalone --nproc_per_node=2 finetune.py config/finetune_bbc.py
    torchrun --standalone --nproc_per_node=2 finetune.py config/finetune_bbc.py --fsdp=True   # sharded (fsdp.py)

init_from: a train.py checkpoint (a .pt file or its out_dir), an HF GPT-2 name ('gpt2', ...), an HF BERT directory
or 'hf:org/name', or 'scratch'. The tokenizer always comes from the checkpoint. Each epoch ends with an evaluation
on val; the best epoch's weights are kept in out_dir/best.pt (LoRA merged in: a plain model), and the test split is
evaluated once at the end: a table on the console, test_results.json (scores) and test_predictions.jsonl (each
test example with its prediction) in out_dir.
"""

import contextlib
import importlib.util
import os
import sys
import time
from collections import namedtuple

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

import common
import features
import fsdp as sharding
import plot
from configurator import configure, config_defaults
from model import IGNORE_INDEX, ModelConfig, Transformer, add_lora, config_dict, merged_state_dict
import optim
from tokenizer import GPT2_META, get_tokenizer, special_tokens
import tasks

_PROMPT_TEMPLATE = "### Instruction:\n{prompt}\n\n### Response:\n"  # sft's default (private: not a config key)

# -----------------------------------------------------------------------------
# I/O
out_dir = 'out/finetune'
init_from = 'out/pretrain_small'  # a checkpoint or its out_dir, 'gpt2', an HF dir, 'hf:org/name', 'scratch' or 'scratch:PATH'
predict = None  # text, or FILE:path (one text a line): predict with out_dir/best.pt instead of training
explain = False  # with predict (classification): each word's contribution to the predicted label (features.py)
explain_method = 'both'  # 'occlusion' (drop without the word), 'integrated_gradients', or 'both'
ig_steps = 32  # integrated gradients: intervals of the path to begin with (split further where the rule needs it)
explain_output = None  # --explain: where the records go as JSON lines; None: for FILE:path, its stem + .explain.jsonl
overwrite = False  # replace the fine-tuned model an earlier run left in out_dir (--explain: an explain_output file)
trust_checkpoint = False  # unpickle a checkpoint that holds more than tensors (old or foreign files): it can run code
tensorboard = False
wandb_project = None
wandb_run_name = None
# task and data
task = 'classification'  # 'classification' (a label a text), 'ner' (a tag a word), 'sft' (prompt -> response)
data = 'bbc_news'  # 'bbc_news', 'wnut16', a CSV / TSV / JSONL / CoNLL file, or a directory with train.* and val.*
text_column = 'text'
label_column = 'label'
prompt_column = 'prompt'
response_column = 'response'
val_fraction = 0.1  # a single file is split into train / val / test
test_fraction = 0.1
split_seed = None  # the seed of that split; None: seed (label-efficiency curves keep it fixed while seed varies)
train_examples = None  # fine-tune on a stratified sample of this many training examples (seeded by seed); None: all
block_size = None  # longest example in tokens; None: the model's block_size
truncation = 'head'  # longer texts: keep the first tokens ('head'), the last ('tail'), or 'windows' (see README)
max_windows = 4  # truncation='windows': a text is cut into up to this many block-long windows, their votes averaged
pooling = 'auto'  # classification: 'auto' (last real token if causal, [CLS] if not) or 'mean' over the tokens
prompt_template = _PROMPT_TEMPLATE  # sft: what the model sees before the response
tokenizer = 'gpt2'  # init_from='scratch' only: 'gpt2'; a checkpoint brings its own
# model (init_from='scratch' only, except dropout)
n_layer = 4
n_head = 4
n_embd = 256
causal = True
dropout = 0.1
# training
epochs = 5
batch_size = 16
bucket = True  # batches of similar lengths (less padding); the batches themselves are shuffled
learning_rate = 1e-4
weight_decay = 0.01
beta1 = 0.9
beta2 = 0.999
grad_clip = 1.0
warmup = 0.1  # share of all steps spent warming up
lr_schedule = 'linear'  # 'linear', 'cosine', 'constant' or 'exponential'
min_lr = 0.0
class_weights = False  # classification: weigh the loss by inverse class frequency (imbalanced labels)
freeze_embeddings = False  # keep the token / position embeddings as pretrained (most of a small model's weights)
freeze_layers = 0  # freeze the embeddings and the first N blocks; -1: the whole trunk (train the head only)
probe = False  # classification: no epochs; the head alone, a logistic regression on the frozen model's pooled features
lora_rank = 0  # > 0: LoRA adapters of this rank on attention and MLP weights, the rest frozen (Hu et al. 2021)
lora_alpha = 16
lora_dropout = 0.0
augment = 0.0  # classification: chance per token of a random edit (delete, swap with the next, replace)
metric = None  # early-stopping metric: None = accuracy (classification), entity_f1 (ner), loss (sft)
patience = 3  # stop after this many evaluations without improvement; 0: never stop early
eval_generate = 50  # sft: val examples answered greedily for the exact-match score
max_new_tokens = 64  # sft: longest answer generated in evaluation and prediction
# system
device = 'auto'
dtype = 'auto'
compile = False
seed = 1337
fsdp = False  # torchrun: shard weights, gradients and optimizer state over the processes (fsdp.py) instead of DDP
activation_checkpointing = False  # recompute each block's activations in backward: less memory, more compute
cpu_offload = False  # fsdp on GPUs: keep the sharded weights and optimizer state in CPU memory
# -----------------------------------------------------------------------------

def main():
    predicting = any(arg.startswith('--predict=') for arg in sys.argv[1:])  # then stdout holds predictions alone
    config = configure(config_defaults(globals()), sys.argv[1:], quiet=predicting)
    globals().update(config)
    if explain and predict is None:
        raise common.UserError("--explain=True explains predictions: add --predict='a text' or --predict=FILE:path")
    if predict is not None:
        return run_predict(predict, out_dir, device, explain, explain_method, ig_steps, explain_output, overwrite)
    if task not in TASKS:
        raise common.UserError(f"task {task!r} unknown: use one of {', '.join(TASKS)}")
    metric_name = metric or TASKS[task].metrics[0]
    if metric_name not in TASKS[task].metrics:
        raise common.UserError(f"metric {metric_name!r} does not exist for task {task!r}: use one of "
                               f"{', '.join(TASKS[task].metrics)}")
    if truncation not in ('head', 'tail', 'windows') or (truncation == 'windows' and task != 'classification'):
        raise common.UserError(f"truncation {truncation!r} unknown for task {task!r}: use 'head' or 'tail' "
                               f"('windows' is for classification)")
    if cpu_offload and not fsdp:
        raise common.UserError("cpu_offload=True offloads the shards of an FSDP run: use it with --fsdp=True")
    runtime = common.setup_runtime(device, dtype, seed)
    if fsdp:
        sharding.check_settings(runtime, cpu_offload)
    with common.run_lock(out_dir) if runtime.master else contextlib.nullcontext():
        if runtime.master and os.path.exists(os.path.join(out_dir, 'best.pt')) and not overwrite:
            raise common.UserError(f"{out_dir} already holds a fine-tuned model (best.pt): pass --overwrite=True to "
                                   f"replace it, or choose another --out_dir")
        finetune(config, runtime, metric_name)


def finetune(config, runtime, metric_name):
    """The run itself: data, model, optimizer, epochs, the test split. Reads the config globals."""

    # data: examples as dicts of strings, then token ids for this checkpoint's tokenizer
    splits = tasks.load_task_data(task, data, text_column=text_column, label_column=label_column,
                                    prompt_column=prompt_column, response_column=response_column,
                                    val_fraction=val_fraction, test_fraction=test_fraction,
                                    seed=seed if split_seed is None else split_seed)
    if train_examples is not None:  # fewer labels: val and test stay whole
        if task != 'classification':
            raise common.UserError(f"train_examples draws a stratified sample of labelled texts: use it with "
                                   f"task='classification', not {task!r}")
        splits['train'] = [splits['train'][i] for i in tasks.subsample(splits['train'], train_examples, seed)]
    names = tasks.label_names(splits['train'], task)
    if init_from == 'scratch' and tokenizer != 'gpt2':
        raise common.UserError("init_from='scratch' fine-tunes with GPT-2 BPE only: --tokenizer=gpt2")
    scratch_args = dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size or 256, causal=causal)
    model, meta = load_base_model(init_from, dropout, scratch_args, trust_checkpoint)
    tok = get_tokenizer(meta['tokenizer'], meta)
    check_model_for_task(model, task, init_from)
    max_len = block_size or model.config.block_size
    if max_len > model.config.block_size:
        raise common.UserError(f"block_size={max_len} is longer than the model's {model.config.block_size} positions: "
                               f"use --block_size={model.config.block_size} or less")
    special = task_special_tokens(meta, model)
    encoded = {split: encode(task, examples, tok, special, names, max_len, model.config.causal, truncation, prompt_template,
                             max_windows)
               for split, examples in splits.items()}
    if runtime.master:
        for split, (examples, n_truncated) in encoded.items():
            n_texts = len(splits[split])
            print(f"{split}: {n_texts:,} examples" + (f" in {len(examples):,} windows" if len(examples) != n_texts else '')
                  + (f", {n_truncated:,} cut (truncation={truncation!r}, {max_len} tokens)" if n_truncated else ''))
    encoded = {split: examples for split, (examples, _) in encoded.items()}

    # model: the task head on the pretrained trunk, optional freezing / LoRA
    if TASKS[task].head:
        model = common.for_task(model, TASKS[task].head, len(names), pooling)
    label_weights = None  # per-class loss weights (class imbalance), a forward argument of every training batch
    if class_weights and task == 'classification':
        counts = np.bincount([ex['label'] for ex in encoded['train']], minlength=len(names))
        label_weights = torch.tensor(len(encoded['train']) / (len(names) * np.maximum(counts, 1)), dtype=torch.float32)
    trainable = set_trainable(model, freeze_layers, lora_rank, lora_alpha, lora_dropout, freeze_embeddings)
    model.to(runtime.device)
    if activation_checkpointing:
        for block in model.transformer.h:
            sharding.checkpoint_activations(block)
    if fsdp:
        model = sharding.shard(model, runtime, cpu_offload=cpu_offload)  # before the optimizer: it holds the shards
    optimizer = optim.configure_optimizers(model, 'adamw', learning_rate=learning_rate, weight_decay=weight_decay,
                                           betas=(beta1, beta2), device_type=runtime.device_type)
    scaler = common.grad_scaler(runtime)
    raw_model = model
    if compile:
        model = torch.compile(model, dynamic=True)  # every batch has its own length
    if runtime.ddp and not fsdp:
        model = DDP(model, device_ids=[runtime.local_rank] if runtime.device_type == 'cuda' else None)

    steps_per_epoch = len(batch_order(encoded['train'], batch_size, 0, seed, bucket)) // runtime.world_size  # rest dropped
    if steps_per_epoch == 0:
        raise common.UserError(f"{len(encoded['train'])} training examples make less than one batch per process: "
                               f"use a smaller --batch_size")
    total_steps = epochs * steps_per_epoch
    warmup_steps = int(warmup * total_steps)
    meta = {**meta, 'task': task, 'label_names': names, 'special_tokens': special,
            'prompt_template': prompt_template if task == 'sft' else None}
    if runtime.master:
        total = raw_model.num_params(non_embedding=False)
        print(f"device {runtime.device}, dtype {runtime.dtype}; {trainable / 1e6:.2f}M of {total / 1e6:.2f}M parameters "
              f"train; {epochs} epochs x {steps_per_epoch} steps of {batch_size * runtime.world_size} examples")
    if runtime.master and os.path.exists(os.path.join(out_dir, 'metrics.jsonl')):  # an earlier run's: kept aside
        os.replace(os.path.join(out_dir, 'metrics.jsonl'), os.path.join(out_dir, 'metrics.previous.jsonl'))
    log = common.MetricsLog(out_dir, config, tensorboard, wandb_project, wandb_run_name) if runtime.master else None

    def save(name, scores):
        """A plain .pt (LoRA merged) by rank 0; under FSDP the shards are gathered into it first, by every process."""
        state = sharding.full_state_dict(raw_model) if fsdp else raw_model.state_dict()
        if runtime.master:
            common.save_checkpoint(os.path.join(out_dir, name), {
                'model': merged_state_dict(raw_model, state), 'model_args': config_dict(raw_model.config),
                'config': config, 'meta': meta, 'iter_num': step, 'epoch': epoch, 'val': scores})

    pad_id = special['pad']
    better = (lambda a, b: a < b) if metric_name == 'loss' else (lambda a, b: a > b)
    best, best_epoch, step, tokens_seen = None, 0, 0, 0
    t_start = time.time()
    epoch = 0
    if probe:  # the feature-based approach (Devlin et al. 2019, sec. 5.3): what wins the label-efficiency curves
        if TASKS[task].head != 'sequence' or runtime.world_size > 1:
            raise common.UserError("probe=True fits a text classifier's head in one process: use it with "
                                   "task='classification', without torchrun")
        c, _ = features.fit_head(raw_model, features.head_inputs(raw_model, encoded['train'], runtime, batch_size),
                                 encoded['train'], features.head_inputs(raw_model, encoded['val'], runtime, batch_size),
                                 encoded['val'], seed=seed)
        scores = evaluate(raw_model, task, encoded['val'], names, runtime, pad_id, batch_size, tok, 0, 0, special)
        print(f"probe: logistic regression on the frozen features, C={c:g}: val " + ', '.join(
            f"{k} {v:.4f}" for k, v in scores.items() if isinstance(v, float)))
        best = scores[metric_name]
        save('best.pt', {k: v for k, v in scores.items() if isinstance(v, float)})
    for epoch in range(1, 0 if probe else epochs + 1):
        order = batch_order(encoded['train'], batch_size, epoch, seed, bucket)
        for i in range(runtime.rank, steps_per_epoch * runtime.world_size, runtime.world_size):  # DDP: a batch a rank
            lr = common.get_lr(step, lr_schedule, learning_rate, warmup_steps, total_steps, min_lr)
            for group in optimizer.param_groups:
                group['lr'] = lr
            examples = [encoded['train'][j] for j in order[i]]
            if augment and task == 'classification':
                examples = augmented(examples, augment, np.random.default_rng([seed, epoch, i]), special['n_random'])
            batch = {**collate(task, examples, pad_id, runtime.device), 'label_weights': label_weights}
            loss = common.train_step(model, optimizer, scaler, [batch], runtime, grad_clip)
            tokens_seen += sum(len(ex['ids']) for ex in examples) * runtime.world_size
            step += 1
            if runtime.master and (step % 10 == 0 or step == total_steps):
                elapsed = time.time() - t_start
                print(f"epoch {epoch} step {step}/{total_steps}: loss {loss.item():.4f}, lr {lr:.2e}, {elapsed / 60:.1f} min")
                log.log({'iter': step, 'epoch': epoch, 'tokens': tokens_seen, 'train_loss': loss.item(), 'lr': lr,
                         'elapsed_s': round(elapsed, 1)})

        scores = evaluate(raw_model, task, encoded['val'], names, runtime, pad_id, batch_size, tok, eval_generate,
                          max_new_tokens, special)
        if runtime.master:
            elapsed = time.time() - t_start
            print(f"epoch {epoch}: val " + ', '.join(f"{k} {v:.4f}" for k, v in scores.items() if isinstance(v, float))
                  + f", {elapsed / 60:.1f} min")
            log.log({'iter': step, 'epoch': epoch, 'tokens': tokens_seen, 'elapsed_s': round(elapsed, 1), 'lr': lr,
                     **{f'val_{k}': v for k, v in scores.items() if isinstance(v, float)}})
            plot.try_plot_curves(out_dir)  # out_dir/curves.png, when matplotlib is installed
        value = common.same_on_all_ranks(scores[metric_name], runtime)  # every process takes the same decision
        if best is None or better(value, best):
            best, best_epoch = value, epoch
            save('best.pt', {k: v for k, v in scores.items() if isinstance(v, float)})
        elif patience and epoch - best_epoch >= patience:
            if runtime.master:
                print(f"early stop: val {metric_name} has not improved for {patience} epochs (best {best:.4f}, epoch {best_epoch})")
            break

    # the test split, once, with the best epoch's weights
    if runtime.master:
        print(f"best val {metric_name} {best:.4f} at epoch {best_epoch}; training took {(time.time() - t_start) / 60:.1f} min")
        if encoded['test']:
            checkpoint = common.load_checkpoint(os.path.join(out_dir, 'best.pt'))
            best_model = common.model_from_checkpoint(checkpoint).to(runtime.device)
            scores = evaluate(best_model, task, encoded['test'], names, runtime, pad_id, batch_size, tok,
                              len(encoded['test']), max_new_tokens, special)
            print(f"test ({len(splits['test']):,} examples, best epoch {best_epoch}):")
            print(TASKS[task].table(scores, names))
            common.write_json(os.path.join(out_dir, 'test_results.json'), {
                'task': task, 'data': data, 'init_from': init_from, 'best_epoch': best_epoch, 'n_examples': len(splits['test']),
                'train_examples': len(splits['train']), 'train_sample': tasks.sample_fingerprint(splits['train']), 'seed': seed,
                **{k: v for k, v in scores.items() if k != 'predictions'}})
            common.write_jsonl(os.path.join(out_dir, 'test_predictions.jsonl'),
                        [{**ex, 'predicted': p} for ex, p in zip(splits['test'], scores['predictions'])])
            print(f"wrote {out_dir}/test_results.json and test_predictions.jsonl (each test example, its prediction)")
            draw_test_pictures(task, scores, names, out_dir)
    common.cleanup_runtime(runtime)


# -----------------------------------------------------------------------------
# the model to start from

def load_base_model(init_from, dropout, scratch_args=None, trust=False):
    """(model, meta): meta names the tokenizer (and holds its vocabulary where it has one). init_from='scratch'
    builds a fresh GPT-2 BPE model of scratch_args (ModelConfig fields: sizes, block_size, causal); 'scratch:PATH'
    builds PATH's model (any checkpoint init_from takes) with fresh weights, keeping its tokenizer and special
    tokens, so that pretrained and random initialisation differ in the weights alone."""
    if init_from == 'scratch':
        return Transformer(ModelConfig(**scratch_args, vocab_size=50304, dropout=dropout, bias=False)), dict(GPT2_META)
    if init_from.startswith('scratch:'):  # the fair control: PATH's architecture, tokenizer and special tokens, fresh weights
        model, meta = common.load_pretrained(init_from.removeprefix('scratch:'), dropout=dropout, trust=trust)
        return Transformer(model.config), meta
    return common.load_pretrained(init_from, dropout=dropout, trust=trust)


def check_model_for_task(model, task, init_from):
    if task == 'sft' and not model.config.causal:
        raise common.UserError(f"task='sft' generates responses, which needs a causal (GPT-style) model; "
                               f"init_from={init_from} is bidirectional: use a GPT checkpoint")
    if model.config.task_head:
        raise common.UserError(f"init_from={init_from} is already fine-tuned (it has a {model.config.task_head} "
                               f"head): start from the pretrained checkpoint")


def task_special_tokens(meta, model):
    """pad / cls / sep / eot ids: a checkpoint's recorded ones (BERT-style runs, WordPiece), else those of
    special_tokens, which a causal model uses only for padding (never attended to, never a target)."""
    special = meta.get('special_tokens') or special_tokens(meta)
    if max(special['cls'], special['sep'], special['pad']) >= model.config.vocab_size:
        raise common.UserError(f"the model embeds {model.config.vocab_size:,} ids, too few for its tokenizer's special "
                               f"tokens: it does not belong to this tokenizer")
    return special


def set_trainable(model, freeze_layers, lora_rank, lora_alpha, lora_dropout, freeze_embeddings=False):
    """Freeze what the config asks; returns the number of trainable parameters. The task head always trains."""
    if lora_rank > 0:
        add_lora(model, lora_rank, lora_alpha, lora_dropout)
    frozen = []
    if freeze_embeddings or freeze_layers:
        frozen = [model.transformer[k] for k in ('wte', 'wpe', 'wtype', 'ln_emb') if k in model.transformer]
    if freeze_layers:
        n = model.config.n_layer if freeze_layers < 0 else freeze_layers
        if n > model.config.n_layer:
            raise common.UserError(f"freeze_layers={freeze_layers} but the model has {model.config.n_layer} layers")
        frozen += list(model.transformer.h[:n])
        if freeze_layers < 0:
            frozen += [model.transformer[k] for k in ('ln_f',) if k in model.transformer]
            frozen += [getattr(model, k) for k in ('pooler',) if hasattr(model, k)]
    for module in frozen:
        module.requires_grad_(False)
    if hasattr(model, 'classifier'):
        model.classifier.requires_grad_(True)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if trainable == 0:
        raise common.UserError("nothing left to train: freeze fewer layers, or use a task with a head")
    return trainable


# -----------------------------------------------------------------------------
# the tasks, one section each: how an example becomes token ids and targets, and how predictions are scored,
# printed and drawn. TASKS at the end of the sections is the table the rest of the script goes through.

Task = namedtuple('Task', [
    'head',         # the task head for_task adds: 'sequence', 'token', or None (the LM head itself)
    'metrics',      # val scores that can pick the best epoch, the default first
    'encode',       # (example, text_id, ctx) -> ([encoded examples], whether it was cut)
    'per_token',    # targets (B, T) (True) or one label a text (B,) (False)
    'score',        # (examples, logits of each batch, ctx) -> {score: value, 'predictions': [...]}
    'table',        # (scores, names) -> printable text
    'from_text',    # a text given to --predict -> an example to encode
    'predict',      # (examples, probabilities / logits, ctx) -> one output line per text
    'picture',      # (scores, names, out_dir) -> path of the PNG drawn, or None
])
# ctx: what encoding and scoring need besides the examples, one namedtuple for every task
Context = namedtuple('Context', 'tok special names max_len causal truncation template max_windows model runtime '
                                'n_generate max_new_tokens', defaults=(None,) * 12)


# --- classification: a label a text ------------------------------------------------------------------------------

def encode_classification(ex, text_id, ctx):
    """Bidirectional `[CLS] text [SEP]`, causal `text <eot>` (the last token is the one pooled); a long text keeps
    its head or tail, or with truncation='windows' becomes up to max_windows consecutive windows, each an example,
    'text_id' naming the text they came from (evaluation averages their votes)."""
    body = ctx.tok.encode(ex['text'])
    room = ctx.max_len - (1 if ctx.causal else 2)
    spans, cut = common.text_windows(len(body), room, ctx.truncation, ctx.max_windows)
    windows = [body[start:end] for start, end in spans]
    label = ctx.names.index(ex['label']) if 'label' in ex else IGNORE_INDEX  # a text to predict has none
    special = ctx.special
    return [{'ids': np.array(window + [special['eot']] if ctx.causal else [special['cls'], *window, special['sep']],
                             dtype=np.int64), 'labels': label, 'text_id': text_id} for window in windows], cut


def text_logprobs(examples, window_logprobs):
    """(texts, classes) log-probabilities of each text: the mean over its windows' (one window: its own)."""
    text_ids = torch.tensor([ex['text_id'] for ex in examples])
    n_texts = int(text_ids.max()) + 1 if len(examples) else 0
    total = torch.zeros(n_texts, window_logprobs.size(1)).index_add_(0, text_ids, window_logprobs)
    return total / torch.bincount(text_ids, minlength=n_texts)[:, None]


def score_classification(examples, logits, ctx):
    """Accuracy, macro-F1, per-class scores and the confusion matrix of the texts (windows' votes averaged)."""
    predictions = text_logprobs(examples, torch.log_softmax(torch.cat(logits), -1)).argmax(-1).tolist()
    gold = list({ex['text_id']: ex['labels'] for ex in examples}.values())
    return {**tasks.classification_report(gold, predictions, ctx.names),
            'predictions': [ctx.names[p] for p in predictions]}


def predict_classification(examples, logits, ctx):
    probs = text_logprobs(examples, torch.log_softmax(torch.cat(logits), -1)).softmax(-1)
    return [f"{ctx.names[int(row.argmax())]}\t{row.max():.3f}" for row in probs]


def picture_classification(scores, names, out_dir):
    return plot.plot_confusion(scores['confusion'], names, os.path.join(out_dir, 'confusion.png'),
                               title=f"test confusion matrix: accuracy {scores['accuracy']:.3f}, "
                                     f"macro-F1 {scores['macro_f1']:.3f}")


# --- ner: a tag a word -------------------------------------------------------------------------------------------

def encode_ner(ex, text_id, ctx):
    """Each word's tokens (words after the first with their leading space); the first token of a word carries its
    tag, the others IGNORE_INDEX; 'word_starts' maps words to positions (-1: cut off by truncation)."""
    ids = [] if ctx.causal else [ctx.special['cls']]
    labels = [] if ctx.causal else [IGNORE_INDEX]
    word_starts = []
    room = ctx.max_len - (0 if ctx.causal else 1)
    for i, (word, tag) in enumerate(zip(ex['words'], ex['tags'])):
        pieces = ctx.tok.encode(word if i == 0 else ' ' + word)
        if not pieces or len(ids) + len(pieces) > room:  # a word of no tokens (a control character), no room
            room = len(ids) if pieces else room  # once a word is cut off, so are all after it
            word_starts.append(-1)
            continue
        word_starts.append(len(ids))
        ids += pieces
        labels += [ctx.names.index(tag)] + [IGNORE_INDEX] * (len(pieces) - 1)
    if not ctx.causal:
        ids.append(ctx.special['sep'])
        labels.append(IGNORE_INDEX)
    return [{'ids': np.array(ids, dtype=np.int64), 'labels': np.array(labels, dtype=np.int64),
             'word_starts': word_starts, 'words': ex['words'], 'tags': ex['tags']}], any(s < 0 for s in word_starts)


def word_tags(examples, logits, names):
    """The predicted tag of every word: its first token's ('O' for a word cut off)."""
    rows = [row for batch in logits for row in batch.argmax(-1).tolist()]
    return [[names[row[s]] if s >= 0 else 'O' for s in ex['word_starts']] for ex, row in zip(examples, rows)]


def score_ner(examples, logits, ctx):
    """Entity precision / recall / F1 with conlleval's semantics, overall and per type."""
    predictions = word_tags(examples, logits, ctx.names)
    report = tasks.entity_report([ex['tags'] for ex in examples], predictions)
    return {'entity_precision': report['precision'], 'entity_recall': report['recall'], 'entity_f1': report['f1'],
            'per_type': report['per_type'], 'predictions': predictions}


def table_ner(scores, names):
    return tasks.format_report({'precision': scores['entity_precision'], 'recall': scores['entity_recall'],
                                'f1': scores['entity_f1'], 'per_type': scores['per_type']})


def predict_ner(examples, logits, ctx):
    return [' '.join(f"{w}/{t}" for w, t in zip(ex['words'], tags))
            for ex, tags in zip(examples, word_tags(examples, logits, ctx.names))]


def picture_ner(scores, names, out_dir):
    return plot.plot_entity_f1(scores['per_type'], os.path.join(out_dir, 'entity_f1.png'),
                               title=f"test entity-level F1 per type (overall {scores['entity_f1']:.3f})")


# --- sft: prompt -> response (instruction tuning) ----------------------------------------------------------------

def encode_sft(ex, text_id, ctx):
    """template + response + eot; x = all but the last token, labels = the next token on the response only."""
    prompt = ctx.tok.encode(ctx.template.format(prompt=ex['prompt']))
    response = ctx.tok.encode(ex['response']) + [ctx.special['eot']]
    cut = len(prompt) + len(response) > ctx.max_len + 1
    if cut:
        prompt = prompt[-(ctx.max_len // 2):] if len(prompt) > ctx.max_len // 2 else prompt  # keep the Response: line
        response = response[:ctx.max_len + 1 - len(prompt)]
    ids = np.array(prompt + response, dtype=np.int64)
    labels = ids[1:].copy()
    labels[:len(prompt) - 1] = IGNORE_INDEX  # no loss on the prompt
    return [{'ids': ids[:-1], 'labels': labels, 'prompt_ids': prompt, 'response': ex['response']}], cut


def answer(model, tok, prompt_ids, eot_id, max_new_tokens, runtime):
    """The greedy response to an encoded prompt, up to eot."""
    room = model.config.block_size - len(prompt_ids)
    idx = torch.tensor([prompt_ids], device=runtime.device)
    with runtime.autocast():
        out = model.generate(idx, min(max_new_tokens, max(room, 1)), temperature=0, stop_token=eot_id)
    ids = out[0, len(prompt_ids):].tolist()
    return tok.decode(ids[:ids.index(eot_id)] if eot_id in ids else ids)


def predict_sft(examples, logits, ctx):
    return [answer(ctx.model, ctx.tok, ex['prompt_ids'], ctx.special['eot'], ctx.max_new_tokens, ctx.runtime)
            for ex in examples]


def score_sft(examples, logits, ctx):
    """Exact match of the greedy answers to the first n_generate examples."""
    answers = predict_sft(examples[:ctx.n_generate], logits, ctx)
    return {'exact_match': sum(a.strip() == ex['response'].strip() for a, ex in zip(answers, examples))
            / max(len(answers), 1), 'predictions': answers}


TASKS = {
    'classification': Task('sequence', ('accuracy', 'macro_f1', 'loss'), encode_classification, False,
                           score_classification, tasks.format_report, lambda text: {'text': text},
                           predict_classification, picture_classification),
    'ner': Task('token', ('entity_f1', 'loss'), encode_ner, True, score_ner, table_ner,
                lambda text: {'words': text.split(), 'tags': ['O'] * len(text.split())}, predict_ner, picture_ner),
    'sft': Task(None, ('loss', 'exact_match'), encode_sft, True, score_sft,
                lambda scores, names: f"loss {scores['loss']:.4f}, exact match {scores['exact_match']:.3f}",
                lambda text: {'prompt': text, 'response': ''}, predict_sft, lambda scores, names, out_dir: None),
}


# -----------------------------------------------------------------------------
# examples -> token ids -> padded batches, for every task

def encode(task, examples, tok, special, names, max_len, causal, truncation='head',
           template=_PROMPT_TEMPLATE, max_windows=4):
    """([{'ids': int64 array, 'labels': int or int64 array, ...}], number of examples cut): each example through
    its task's encode (see the task sections above)."""
    ctx = Context(tok, special, names, max_len, causal, truncation, template, max_windows)
    encoded, n_truncated = [], 0
    for text_id, ex in enumerate(examples):
        pieces, cut = TASKS[task].encode(ex, text_id, ctx)
        encoded += pieces
        n_truncated += cut
    return encoded, n_truncated


def batch_order(examples, batch_size, epoch, seed, bucket):
    """The batches of an epoch as lists of example indices, fixed by (seed, epoch). With bucket, examples are
    shuffled, sorted by length within runs of 50 batches, cut into batches, and the batches shuffled: little
    padding, and no fixed order of lengths."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(examples))
    if bucket:
        run = 50 * batch_size
        order = np.concatenate([sorted(order[i:i + run], key=lambda j: len(examples[j]['ids']))
                                for i in range(0, len(order), run)]) if len(order) else order
    batches = [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    if bucket:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def collate(task, examples, pad_id, device, pad_to=None):
    """Forward's keyword arguments for a list of encoded examples, padded on the right to the longest (or pad_to):
    idx and attn_mask (B, T), targets (B, T) for per-token tasks (IGNORE_INDEX on padding), else (B,)."""
    T = pad_to or max(len(ex['ids']) for ex in examples)
    idx = np.full((len(examples), T), pad_id, dtype=np.int64)
    mask = np.zeros((len(examples), T), dtype=np.int64)
    targets = np.full((len(examples), T), IGNORE_INDEX, dtype=np.int64)
    for row, ex in enumerate(examples):
        n = len(ex['ids'])
        idx[row, :n] = ex['ids']
        mask[row, :n] = 1
        if TASKS[task].per_token:
            targets[row, :n] = ex['labels']
    if not TASKS[task].per_token:
        targets = np.array([ex['labels'] for ex in examples], dtype=np.int64)
    batch = {'idx': idx, 'targets': targets, 'attn_mask': mask}
    return {k: torch.from_numpy(v).to(device) for k, v in batch.items()}


def augmented(examples, p, rng, n_random):
    """Classification examples with random token edits (Wei & Zou 2019, "EDA", on tokens instead of words): each
    token of the text, with chance p, is deleted, swapped with the next one, or replaced by a random token. The
    first and last token (cls / sep / eot) stay."""
    out = []
    for ex in examples:
        ids = ex['ids'].copy()
        body = list(ids[1:-1]) if len(ids) > 2 else []
        i = 0
        while i < len(body):
            if rng.random() < p:
                kind = rng.integers(3)
                if kind == 0 and len(body) > 1:
                    del body[i]
                    continue
                if kind == 1 and i + 1 < len(body):
                    body[i], body[i + 1] = body[i + 1], body[i]
                elif kind == 2:
                    body[i] = rng.integers(n_random)
            i += 1
        out.append({**ex, 'ids': np.array([ids[0], *body, ids[-1]] if len(ids) > 2 else ids, dtype=np.int64)})
    return out


# -----------------------------------------------------------------------------
# evaluation and prediction

@torch.no_grad()
def forward_batches(model, task, examples, runtime, pad_id, batch_size, progress=False):
    """(logits of each batch as float32 on the CPU, or None for the LM head; mean loss over the targets)."""
    was_training = model.training
    model.eval()
    logits_list, loss_sum, count = [], 0.0, 0
    update = common.progress(len(examples), 'evaluating', unit='examples') if progress else (lambda n: None)
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        batch = collate(task, chunk, pad_id, runtime.device)
        with runtime.autocast():
            logits, loss = model(**batch)
        n = int((batch['targets'] != IGNORE_INDEX).sum())
        loss_sum, count = loss_sum + float(loss) * n, count + n
        if TASKS[task].head:
            logits_list.append(logits.float().cpu())
        update(len(chunk))
    update(None)
    model.train(was_training)
    return logits_list, loss_sum / max(count, 1)


@torch.no_grad()
def evaluate(model, task, examples, names, runtime, pad_id, batch_size, tok=None, n_generate=0, max_new_tokens=64,
             special=None):
    """Scores of model on encoded examples: loss, and the task's own (see its score function), with
    'predictions': labels, tag lists or answers."""
    logits, loss = forward_batches(model, task, examples, runtime, pad_id, batch_size, progress=runtime.master)
    was_training = model.training
    model.eval()
    ctx = Context(tok=tok, special=special, names=names, model=model, runtime=runtime, n_generate=n_generate,
                  max_new_tokens=max_new_tokens)
    scores = {'loss': loss, **TASKS[task].score(examples, logits, ctx)}
    model.train(was_training)
    return scores


def run_predict(text, out_dir, device, explain=False, explain_method='both', ig_steps=32, explain_output=None,
                overwrite=False):
    """Classify / tag / answer the texts with out_dir's fine-tuned checkpoint; one line of output per text. With
    explain (classifiers), each word's score as well: see explain_predictions."""
    path = os.path.join(out_dir, 'best.pt')
    checkpoint = common.load_checkpoint(path, trust=trust_checkpoint)
    meta = checkpoint.get('meta') or {}
    if 'task' not in meta:
        raise common.UserError(f"{path} is not a fine-tuned checkpoint (no task recorded): run finetune.py first, "
                               f"or use sample.py for a pretrained model")
    runtime = common.setup_runtime(device, 'auto')
    model = common.model_from_checkpoint(checkpoint).to(runtime.device).eval()
    tok = get_tokenizer(meta['tokenizer'], meta)
    special, names, task = meta['special_tokens'], meta['label_names'], meta['task']
    texts = [line for line in common.read_text_arg(text, 'predict').splitlines() if line.strip()] if text.startswith(
        'FILE:') else [text]
    trained = checkpoint.get('config', {})  # the run's own truncation policy and answer length
    max_len = model.config.block_size
    truncation = trained.get('truncation', 'head')
    if explain:
        return explain_predictions(model, tok, meta, texts, text, truncation, trained.get('max_windows', 4),
                                   explain_method, ig_steps, explain_output, overwrite)
    encoded, n_truncated = encode(task, [TASKS[task].from_text(t) for t in texts], tok, special, names, max_len,
                                  model.config.causal, truncation, meta.get('prompt_template') or '',
                                  trained.get('max_windows', 4))
    if n_truncated:
        print(f"warning: {n_truncated} text(s) longer than the model's {max_len} tokens were cut "
              f"(truncation={truncation!r})", file=sys.stderr)
    logits, _ = forward_batches(model, task, encoded, runtime, special['pad'], 16) if TASKS[task].head else (None, 0)
    ctx = Context(tok=tok, special=special, names=names, model=model, runtime=runtime,
                  max_new_tokens=trained.get('max_new_tokens', 64))
    for line in TASKS[task].predict(encoded, logits, ctx):
        print(line)


def explain_predictions(model, tok, meta, texts, source, truncation, max_windows, explain_method, ig_steps, output,
                        overwrite=False):
    """--explain: each text's label and every word's scores (features.explain_text), the texts cut as the training
    run cut them. One text is printed as a table, a FILE:'s predictions a line each; the records go to output as
    JSON lines, atomically (for a FILE:path, by default beside it: path's stem + .explain.jsonl), and an existing
    output is kept unless overwrite."""
    if meta['task'] != 'classification':
        raise common.UserError(f"--explain explains a classifier's label, and this checkpoint is fine-tuned for "
                               f"task={meta['task']!r}: use one fine-tuned with task='classification'")
    from_file = source.startswith('FILE:')
    output = output or (os.path.splitext(source[5:])[0] + '.explain.jsonl' if from_file else None)
    if output and os.path.exists(output) and not overwrite:
        raise common.UserError(f"{output} exists: pass --overwrite=True to replace it, or --explain_output=PATH")
    methods = features.EXPLAIN_METHODS if explain_method == 'both' else (explain_method,)
    records = [features.explain_text(model, tok, meta['special_tokens'], meta['label_names'], text, truncation,
                                     max_windows, methods, ig_steps) for text in texts]
    lines = [f"{r['label']}\t{r['probabilities'][r['label']]:.3f}" for r in records] if from_file else \
        features.explanation_table(records[0])
    print('\n'.join(lines))
    if output:
        common.write_jsonl(output, records)
        print(f"wrote {output} ({len(records)} text(s): words and their scores)", file=sys.stderr)


def draw_test_pictures(task, scores, names, out_dir):
    """The task's picture of the test scores (confusion matrix, entity F1 per type), with matplotlib."""
    if importlib.util.find_spec('matplotlib') is None:
        print("(pip install matplotlib to get the test scores drawn as well)")
        return
    path = TASKS[task].picture(scores, names, out_dir)
    if path:
        print(f"wrote {path}")


if __name__ == '__main__':
    common.run_main(main)
