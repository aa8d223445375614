"""
Fine-tune a pretrained model on a task: text classification, named-entity recognition, instruction tuning,
extractive question answering.

    python finetune.py config/finetune_bbc.py                         # BBC News topics from out/pretrain_small
    python finetune.py config/finetune_bbc.py --learning_rate=3e-4    # any global below can be overridden
    python finetune.py config/finetune_ner.py                         # WNUT-16 named entities
    python finetune.py config/finetune_sft.py                         # prompt -> response pairs (causal models)
    python finetune.py config/finetune_qa.py                          # reading comprehension (bbc_qa, SQuAD files)
    python finetune.py --out_dir=out/finetune_qa --predict="Who spoke? ||| Anna Khan said it would rain."
    python finetune.py --data=reviews.csv --init_from=out/pretrain_small --out_dir=out/reviews   # your own CSV
    python finetune.py --out_dir=out/finetune_bbc --predict="Shares in the bank rose 5% on Monday"
    python finetune.py --out_dir=out/finetune_bbc --predict=FILE:texts.txt     # one text a line -> LINE, label, prob
    python finetune.py --out_dir=out/finetune_bbc --predict="Shares rose 5%" --explain=True    # each word's part
    torchrun --standalone --nproc_per_node=2 finetune.py config/finetune_bbc.py
    torchrun --standalone --nproc_per_node=2 finetune.py config/finetune_bbc.py --fsdp=True   # sharded (fsdp.py)

init_from: a train.py checkpoint (a .pt file or its out_dir), an HF GPT-2 name ('gpt2', ...), an HF BERT directory
or 'hf:org/name', or 'scratch'. The tokenizer always comes from the checkpoint. Each epoch ends with an evaluation
on val; the best epoch's weights are kept in out_dir/best.pt (LoRA merged in: a plain model), and the test split is
evaluated once at the end: a table on the console, test_results.json (scores) and test_predictions.jsonl (each
test example with its prediction) in out_dir. What differs between the tasks is each one's unit in tasks.py; the
step is train.py's train_step.
"""

import contextlib
import importlib.util
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn

import checkpoints
import fsdp as sharding
import optim
import tasks
from configurator import UserError, config_defaults, configure, read_text_arg, run_main, settings_of
from files import run_lock, set_aside, write_json, write_jsonl
from metrics import MetricsLog, log_step, progress
from model import IGNORE_INDEX, ModelConfig, Transformer, config_dict
from runtime import cleanup_runtime, eval_mode, grad_scaler, same_on_all_ranks, setup_runtime, wrap
from tokenizer import GPT2_META, get_tokenizer, special_tokens
from train import train_step

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
task = 'classification'  # 'classification' (a label a text), 'ner' (a tag a word), 'sft' (prompt -> response), 'qa'
data = 'bbc_news'  # 'bbc_news', 'rt_reviews', 'wnut16', 'bbc_qa', a CSV / TSV / JSONL / CoNLL / SQuAD file, or a directory of splits
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
stride = 32  # qa: tokens that consecutive windows of a long context share
match_feature = False  # qa, a model without token types: mark the passage's tokens that the question has (a token type)
pooling = 'auto'  # classification: 'auto' (last real token if causal, [CLS] if not) or 'mean' over the tokens
bidirectional = False  # lift a GPT-style model's causal mask for the task head: every token reads the whole text
prompt_template = tasks.PROMPT_TEMPLATE  # sft: what the model sees before the response
tokenizer = 'gpt2'  # init_from='scratch' only: 'gpt2'; a checkpoint brings its own
# model (init_from='scratch' only, except dropout): every field of model.ModelConfig is a setting, as in train.py
n_layer = 4
n_head = 4
n_embd = 256
bias = False
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
probe = False  # a label a text: no epochs; the head alone, a logistic regression on the frozen model's pooled features
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


# -----------------------------------------------------------------------------
# LoRA (Hu et al. 2021): low-rank updates of the frozen attention and MLP weights, merged into them on save

class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update (Hu et al. 2021, "LoRA"): y = W x + (alpha / r) B A x.
    B starts at zero, so training starts from the base model exactly."""

    def __init__(self, base, rank, alpha, dropout=0.0):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))  # (r, in)
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))  # (out, r)
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear initialises its weight
        self.scale = alpha / rank
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.base(x) + (self.dropout(x) @ self.lora_a.t() @ self.lora_b.t()) * self.scale


def add_lora(model, rank=8, alpha=16, dropout=0.0, targets=('c_attn', 'c_proj', 'c_fc', 'c_gate')):
    """Freeze every weight of model and wrap its attention and MLP Linears (the names in targets) in LoRALinear.
    Unfreeze what must train in full (the task head) afterwards."""
    model.requires_grad_(False)
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if name in targets and isinstance(child, nn.Linear):
                setattr(module, name, LoRALinear(child, rank, alpha, dropout))


def merged_state_dict(model, state=None):
    """model's state dict (or state, the same names' full tensors, e.g. gathered from shards) with every LoRA update
    folded into its base weight, under the names of the plain model: what a checkpoint holds, loadable without LoRA."""
    state = dict(model.state_dict() if state is None else state)
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            prefix = f'{name}.' if name else ''
            lora_a, lora_b = state.pop(prefix + 'lora_a'), state.pop(prefix + 'lora_b')
            state[prefix + 'weight'] = (state.pop(prefix + 'base.weight') + (lora_b @ lora_a) * module.scale).detach()
            if prefix + 'base.bias' in state:
                state[prefix + 'bias'] = state.pop(prefix + 'base.bias').detach()
    return state


def set_trainable(model, freeze_layers, lora_rank, lora_alpha, lora_dropout, freeze_embeddings=False):
    """Freeze what the config asks; returns the number of trainable parameters. The task head always trains."""
    if lora_rank > 0:
        add_lora(model, lora_rank, lora_alpha, lora_dropout)
    if freeze_layers > model.config.n_layer:
        raise UserError(f"freeze_layers={freeze_layers} but the model has {model.config.n_layer} layers")
    frozen = []
    if freeze_layers < 0:  # the whole trunk (embeddings, blocks, final norm), and BERT's pooler
        frozen = [model.transformer, *([model.pooler] if hasattr(model, 'pooler') else [])]
    elif freeze_embeddings or freeze_layers:  # the embeddings, and the first freeze_layers blocks
        frozen = [model.transformer[k] for k in ('wte', 'wpe', 'wtype', 'ln_emb') if k in model.transformer]
        frozen += model.transformer.h[:freeze_layers]
    for module in frozen:
        module.requires_grad_(False)
    if hasattr(model, 'classifier'):
        model.classifier.requires_grad_(True)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if trainable == 0:
        raise UserError("nothing left to train: freeze fewer layers, or use a task with a head")
    return trainable


# -----------------------------------------------------------------------------
# batches

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


def collate(examples, pad_id, device, per_token, pad_to=None):
    """Forward's keyword arguments for a list of encoded examples, padded on the right to the longest (or pad_to):
    idx and attn_mask (B, T), targets (B, T) for per-token tasks (IGNORE_INDEX on padding), else (B,); token_type_ids
    (B, T) when the examples have token types."""
    lengths = np.array([len(ex['ids']) for ex in examples])
    T = pad_to or lengths.max()

    def padded(key, fill):  # (B, T): each example's list under key, then fill
        rows = np.full((len(examples), T), fill, dtype=np.int64)
        for row, ex in enumerate(examples):
            rows[row, :len(ex[key])] = ex[key]
        return rows

    batch = {'idx': padded('ids', pad_id), 'attn_mask': np.arange(T) < lengths[:, None],
             'targets': padded('labels', IGNORE_INDEX) if per_token else np.array([ex['labels'] for ex in examples])}
    if 'token_types' in examples[0]:
        batch['token_type_ids'] = padded('token_types', 0)
    return {k: torch.as_tensor(v, dtype=torch.long, device=device) for k, v in batch.items()}


def augmented(examples, p, rng, n_random):
    """Classification examples with random token edits (Wei & Zou 2019, "EDA", on tokens instead of words): each
    token of the text, with chance p, is deleted, swapped with the next one, or replaced by a random token. The
    first and last token (cls / sep / eot) stay."""
    out = []
    for ex in examples:
        ids, body, i = ex['ids'], list(ex['ids'][1:-1]), 0
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
        out.append({**ex, 'ids': np.array([ids[0], *body, ids[-1]], dtype=np.int64) if len(ids) > 2 else ids})
    return out


# -----------------------------------------------------------------------------
# evaluation and prediction

@torch.no_grad()
def forward_batches(model, unit, examples, runtime, pad_id, batch_size, show_progress=False):
    """(logits of each batch as float32 numpy arrays, or [] for the LM head; mean loss over the targets)."""
    logits_list, loss_sum, count = [], 0.0, 0
    update = progress(len(examples), 'evaluating', unit='examples') if show_progress else (lambda n: None)
    with eval_mode(model):
        for start in range(0, len(examples), batch_size):
            chunk = examples[start:start + batch_size]
            batch = collate(chunk, pad_id, runtime.device, unit.per_token)
            with runtime.autocast():
                logits, loss = model(**batch)
            n = int((batch['targets'] != IGNORE_INDEX).sum())
            loss_sum, count = loss_sum + float(loss) * n, count + n
            if unit.head:
                logits_list.append(logits.float().cpu().numpy())
            update(len(chunk))
    update(None)
    return logits_list, loss_sum / max(count, 1)


def answerer(model, tok, eot_id, max_new_tokens, runtime):
    """answer(prompt_ids) -> the greedy response to an encoded prompt, up to eot: what tasks.SFT scores and prints."""
    def answer(prompt_ids):
        room = model.config.block_size - len(prompt_ids)
        with runtime.autocast():
            out = model.generate(torch.tensor([prompt_ids], device=runtime.device), min(max_new_tokens, max(room, 1)),
                                 temperature=0, stop_token=eot_id, vocab_limit=tok.vocab_size)
        ids = out[0, len(prompt_ids):].tolist()
        return tok.decode(ids[:ids.index(eot_id)] if eot_id in ids else ids)
    return answer


@torch.no_grad()
def evaluate(model, unit, examples, names, runtime, pad_id, batch_size, answer=None, n_generate=0, tuned=None):
    """Scores of model on encoded examples: loss, and the task's own (its unit's score), with 'predictions':
    labels, tag lists or answers. tuned: the checkpoint's val scores (what the unit tuned on val)."""
    logits, loss = forward_batches(model, unit, examples, runtime, pad_id, batch_size, show_progress=runtime.master)
    with eval_mode(model):  # the unit's score may generate (answer)
        context = tasks.Context(names=names, answer=answer, n_generate=n_generate, tuned=tuned)
        return {'loss': loss, **unit.score(examples, logits, context)}


def run_predict(text, out_dir, device, explain=False, explain_method='both', ig_steps=32, explain_output=None,
                overwrite=False, trust=False):
    """Classify / tag / answer the texts (text, or FILE:path, one a line) with out_dir's fine-tuned checkpoint; one
    line of output per text (a FILE:'s numbered, see numbered). The texts are cut as the training run cut them.
    explain (classifiers): each text's label and every word's scores (features.explain_text), one text printed as
    a table, a FILE:'s label and probability a line each; the records (with their line for a FILE:) go to
    explain_output as JSON lines, atomically (for a FILE:path, by default beside it: path's stem + .explain.jsonl),
    and an existing output is kept unless overwrite; never one of the checkpoint's files nor the FILE: read."""
    path = os.path.join(out_dir, 'best.pt')
    runtime = setup_runtime(device, 'auto')
    model, meta, checkpoint = checkpoints.load(path, runtime.device, trust)
    if 'task' not in meta:
        raise UserError(f"{path} is not a fine-tuned checkpoint (no task recorded): run finetune.py first, "
                        f"or use sample.py for a pretrained model")
    model.eval()
    tok, unit = get_tokenizer(meta['tokenizer'], meta), tasks.get(meta['task'])
    special, names = meta['special_tokens'], meta['label_names']
    from_file = text.startswith('FILE:')
    lines = read_text_arg(text, 'predict').splitlines() if from_file else None
    numbers = [n for n, line in enumerate(lines, 1) if line.strip()] if from_file else None
    texts = [lines[n - 1] for n in numbers] if from_file else [text]
    trained = checkpoint.get('config', {})  # the run's own truncation policy and answer length
    truncation, max_windows = trained.get('truncation', 'head'), trained.get('max_windows', 4)
    if explain:
        import features
        if not unit.explainable:
            raise UserError(f"--explain explains a text classifier's label, and this checkpoint is fine-tuned for "
                            f"task={meta['task']!r}: use one fine-tuned for classification")
        output = explain_output or (os.path.splitext(text[5:])[0] + '.explain.jsonl' if from_file else None)
        if output:
            checkpoints.check_output(output, [*checkpoints.files_read(path), *([text[5:]] if from_file else [])],
                                     overwrite, 'explain_output')
        methods = features.EXPLAIN_METHODS if explain_method == 'both' else (explain_method,)
        records = [features.explain_text(model, tok, special, names, t, truncation, max_windows, methods, ig_steps)
                   for t in texts]
        if from_file:
            records = [{'line': n, **r} for n, r in zip(numbers, records)]
        print('\n'.join(numbered([f"{r['label']}\t{r['probabilities'][r['label']]:.3f}" for r in records], numbers,
                                  lines) if from_file else features.explanation_table(records[0])))
        if output:
            write_jsonl(output, records)
            print(f"wrote {output} ({len(records)} text(s): words and their scores)", file=sys.stderr)
        return
    encoded, n_truncated = tasks.encode(unit.name, [unit.from_text(t) for t in texts], tok, special, names,
                                        model.config.block_size, model.config.causal, truncation,
                                        meta.get('prompt_template') or '', max_windows, trained.get('stride', 32),
                                        meta.get('token_types', ''))
    if n_truncated:
        print(f"warning: {n_truncated} text(s) longer than the model's {model.config.block_size} tokens were cut "
              f"(truncation={truncation!r})", file=sys.stderr)
    logits, _ = forward_batches(model, unit, encoded, runtime, special['pad'], 16) if unit.head else ([], 0)
    answer = answerer(model, tok, special['eot'], trained.get('max_new_tokens', 64), runtime)
    predictions = unit.predict(encoded, logits, tasks.Context(names=names, answer=answer, tuned=checkpoint.get('val')))
    print('\n'.join(numbered(predictions, numbers, lines)))


def numbered(predictions, numbers, lines):
    """--predict=FILE:'s output, one line per input line: LINE<TAB>prediction (a newline in it written as \\n),
    LINE<TAB>(blank) for a blank line, so that the output lines up with the file; a single text's prediction as is."""
    if lines is None:
        return predictions
    by_line = dict(zip(numbers, predictions))
    return [f"{n}\t{by_line[n]}".replace('\n', '\\n') if n in by_line else f"{n}\t(blank)"
            for n in range(1, len(lines) + 1)]


def scratch_twin(path, dropout=0.0, trust=False):
    """(model, meta) for init_from='scratch:PATH': PATH's model (any checkpoint init_from takes) with fresh weights,
    its tokenizer and special tokens kept, so that pretrained and random initialisation differ in the weights alone."""
    model, meta, _ = checkpoints.load(path, dropout=dropout, trust=trust)
    return Transformer(model.config), meta


def task_special_tokens(meta, model):
    """pad / cls / sep / eot ids: a checkpoint's recorded ones (BERT-style runs, WordPiece), else those of
    special_tokens, which a causal model uses only for padding (never attended to, never a target)."""
    special = meta.get('special_tokens') or special_tokens(meta)
    if max(special['cls'], special['sep'], special['pad']) >= model.config.vocab_size:
        raise UserError(f"the model embeds {model.config.vocab_size:,} ids, too few for its tokenizer's special "
                        f"tokens: it does not belong to this tokenizer")
    return special


# -----------------------------------------------------------------------------
# the run

def main():
    predicting = any(arg.startswith('--predict=') for arg in sys.argv[1:])  # then stdout holds predictions alone
    config = configure(config_defaults(globals()), sys.argv[1:], quiet=predicting, fields_of=ModelConfig,
                       choices=optim.CHOICES)
    globals().update(config)
    if explain and predict is None:
        raise UserError("--explain=True explains predictions: add --predict='a text' or --predict=FILE:path")
    if predict is not None:
        return run_predict(predict, out_dir, device, explain, explain_method, ig_steps, explain_output, overwrite,
                           trust_checkpoint)
    unit = tasks.get(task)
    metric_name = metric or unit.metrics[0]
    if metric_name not in unit.metrics:
        raise UserError(f"metric {metric_name!r} does not exist for task {task!r}: use one of {', '.join(unit.metrics)}")
    if truncation not in ('head', 'tail', 'windows') or (truncation == 'windows' and not unit.text_label):
        raise UserError(f"truncation {truncation!r} unknown for task {task!r}: use 'head' or 'tail' ('windows' is "
                        f"for a label a text)")
    runtime = setup_runtime(device, dtype, seed)
    sharding.check_settings(runtime, fsdp, cpu_offload)
    master = runtime.master
    with run_lock(out_dir) if master else contextlib.nullcontext():
        if master and os.path.exists(os.path.join(out_dir, 'best.pt')) and not overwrite:
            raise UserError(f"{out_dir} already holds a fine-tuned model (best.pt): pass --overwrite=True to "
                            f"replace it, or choose another --out_dir")

        # data: examples as dicts of strings, then token ids for this checkpoint's tokenizer
        splits = tasks.load_task_data(task, data, text_column=text_column, label_column=label_column,
                                      prompt_column=prompt_column, response_column=response_column,
                                      val_fraction=val_fraction, test_fraction=test_fraction,
                                      seed=seed if split_seed is None else split_seed)
        if train_examples is not None:  # fewer labels: val and test stay whole
            if not unit.text_label:
                raise UserError(f"train_examples draws a stratified sample of labelled texts: use it with a task of "
                                f"a label a text, not task={task!r}")
            splits['train'] = [splits['train'][i] for i in tasks.subsample(splits['train'], train_examples, seed)]
        names = unit.label_names(splits['train'])
        if init_from == 'scratch':  # a fresh GPT-2 BPE model of the settings that are ModelConfig fields
            if tokenizer != 'gpt2':
                raise UserError("init_from='scratch' fine-tunes with GPT-2 BPE only: --tokenizer=gpt2")
            model, meta = Transformer(ModelConfig(**{**settings_of(config, ModelConfig), 'vocab_size': 50304,
                                                     'block_size': block_size or 256})), dict(GPT2_META)
        elif init_from.startswith('scratch:'):
            model, meta = scratch_twin(init_from.removeprefix('scratch:'), dropout, trust_checkpoint)
        else:
            model, meta, _ = checkpoints.load(init_from, dropout=dropout, trust=trust_checkpoint)
        tok = get_tokenizer(meta['tokenizer'], meta)
        if bidirectional:  # the same weights; attention reads both ways from here on (and in the saved model)
            if unit.generates:
                raise UserError(f"task={task!r} generates text, which needs the causal mask: leave bidirectional=False")
            model.config.causal = False
        unit.check_model(model.config, init_from)
        token_types = unit.token_types(model.config, match_feature)
        if token_types == 'match':  # carried by a fresh two-row token-type embedding
            model = checkpoints.with_heads(model, type_vocab_size=2)
        if model.config.task_head:
            raise UserError(f"init_from={init_from} is already fine-tuned (it has a {model.config.task_head} "
                            f"head): start from the pretrained checkpoint")
        max_len = block_size or model.config.block_size
        if max_len > model.config.block_size:
            raise UserError(f"block_size={max_len} is longer than the model's {model.config.block_size} positions: "
                            f"use --block_size={model.config.block_size} or less")
        special = task_special_tokens(meta, model)
        encoded = {}
        for split, examples in splits.items():
            encoded[split], n_cut = tasks.encode(task, examples, tok, special, names, max_len, model.config.causal,
                                                 truncation, prompt_template, max_windows, stride, token_types)
            if master:
                print(f"{split}: {len(examples):,} examples" + (f" in {len(encoded[split]):,} windows" if len(
                    encoded[split]) != len(examples) else '') + (f", {n_cut:,} cut (truncation={truncation!r}, "
                                                                 f"{max_len} tokens)" if n_cut else ''))

        # model: the task head on the pretrained trunk, optional freezing / LoRA
        if unit.head:
            model = checkpoints.for_task(model, unit.head, len(names), pooling)
        label_weights = None  # per-class loss weights (class imbalance), a forward argument of every training batch
        if class_weights and unit.text_label:
            counts = np.bincount([ex['labels'] for ex in encoded['train']], minlength=len(names))
            label_weights = torch.tensor(counts.sum() / (len(names) * np.maximum(counts, 1)), dtype=torch.float32)
        trainable = set_trainable(model, freeze_layers, lora_rank, lora_alpha, lora_dropout, freeze_embeddings)
        model = sharding.place(model, runtime, fsdp, activation_checkpointing, cpu_offload)  # device, recompute, shards
        optimizer = optim.configure_optimizers(model, 'adamw', learning_rate=learning_rate, weight_decay=weight_decay,
                                               betas=(beta1, beta2), device_type=runtime.device_type)
        scaler = grad_scaler(runtime)
        raw_model = model
        model = wrap(model, runtime, compile, dynamic=True, ddp=not fsdp)  # dynamic: every batch has its own length

        steps_per_epoch = len(batch_order(encoded['train'], batch_size, 0, seed, bucket)) // runtime.world_size
        if steps_per_epoch == 0:  # the last, incomplete round of batches is dropped
            raise UserError(f"{len(encoded['train'])} training examples make less than one batch per process: "
                            f"use a smaller --batch_size")
        total_steps = epochs * steps_per_epoch
        warmup_steps = int(warmup * total_steps)
        meta = {**meta, 'task': task, 'label_names': names, 'special_tokens': special, 'token_types': token_types,
                'prompt_template': prompt_template if unit.generates else None}
        if master:
            total = raw_model.num_params(non_embedding=False)
            print(f"device {runtime.device}, dtype {runtime.dtype}; " + (
                f"probe: the {raw_model.classifier.weight.numel():,} weights of the head, fitted on the frozen features"
                if probe else f"{trainable / 1e6:.2f}M of {total / 1e6:.2f}M parameters train; {epochs} epochs x "
                              f"{steps_per_epoch} steps of {batch_size * runtime.world_size} examples"))
            set_aside(out_dir, ['metrics.jsonl'])  # an earlier run's log: kept aside as metrics.previous.jsonl
        log = MetricsLog(out_dir, config, tensorboard, wandb_project, wandb_run_name) if master else None

        def save(name, scores):
            """A plain .pt (LoRA merged) by rank 0; under FSDP the shards are gathered into it first, by every process."""
            state = sharding.full_state_dict(raw_model) if fsdp else raw_model.state_dict()
            if master:
                checkpoints.save_checkpoint(os.path.join(out_dir, name), {
                    'model': merged_state_dict(raw_model, state), 'model_args': config_dict(raw_model.config),
                    'config': config, 'meta': meta, 'iter_num': step, 'epoch': epoch, 'val': scores})

        pad_id = special['pad']
        answer = answerer(raw_model, tok, special['eot'], max_new_tokens, runtime)
        better = (lambda a, b: a < b) if metric_name == 'loss' else (lambda a, b: a > b)
        best, best_epoch, step, tokens_seen, epoch = None, 0, 0, 0, 0
        t_start = time.time()
        if probe:  # the feature-based approach (Devlin et al. 2019, sec. 5.3): what wins the label-efficiency curves
            import features  # here, not at the top: it needs scikit-learn, and importing finetune.py stays light
            if unit.head != 'sequence' or runtime.world_size > 1:
                raise UserError("probe=True fits a text classifier's head in one process: use it with a task of a "
                                "label a text, without torchrun")
            train_x, val_x = [features.head_inputs(raw_model, encoded[split], runtime, batch_size)
                              for split in ('train', 'val')]  # the frozen model's pooled features
            c, _ = features.fit_head(raw_model, train_x, encoded['train'], val_x, encoded['val'], seed=seed)
            val = {k: v for k, v in evaluate(raw_model, unit, encoded['val'], names, runtime, pad_id, batch_size,
                                             answer, 0).items() if isinstance(v, float)}
            print(f"probe: the head is a logistic regression on the frozen features, C={c:g}: val " +
                  ', '.join(f"{k} {v:.4f}" for k, v in val.items()))
            best = val[metric_name]
            save('best.pt', val)
        for epoch in range(1, 0 if probe else epochs + 1):
            order = batch_order(encoded['train'], batch_size, epoch, seed, bucket)
            for i in range(runtime.rank, steps_per_epoch * runtime.world_size, runtime.world_size):  # DDP: one a rank
                lr = optim.get_lr(step, lr_schedule, learning_rate, warmup_steps, total_steps, min_lr)
                for group in optimizer.param_groups:
                    group['lr'] = lr
                examples = [encoded['train'][j] for j in order[i]]
                if augment and unit.text_label:
                    examples = augmented(examples, augment, np.random.default_rng([seed, epoch, i]), special['n_random'])
                batch = {**collate(examples, pad_id, runtime.device, unit.per_token), 'label_weights': label_weights}
                record = train_step(model, optimizer, scaler, [batch], runtime, grad_clip)
                tokens_seen += sum(len(ex['ids']) for ex in examples) * runtime.world_size
                step += 1
                if master and (step % 10 == 0 or step == total_steps):
                    log_step(log, {'iter': step, 'epoch': epoch, 'tokens': tokens_seen,
                                   'train_loss': record['loss'].item(), 'grad_norm': record['grad_norm'].item(),
                                   'lr': lr, 'elapsed_s': round(time.time() - t_start, 1)},
                             f"epoch {epoch} step {step}/{total_steps}")

            scores = evaluate(raw_model, unit, encoded['val'], names, runtime, pad_id, batch_size, answer, eval_generate)
            val = {k: v for k, v in scores.items() if isinstance(v, float)}
            if master:
                elapsed = time.time() - t_start
                print(f"epoch {epoch}: val " + ', '.join(f"{k} {v:.4f}" for k, v in val.items()) +
                      f", {elapsed / 60:.1f} min")
                log.log({'iter': step, 'epoch': epoch, 'tokens': tokens_seen, 'elapsed_s': round(elapsed, 1), 'lr': lr,
                         **{f'val_{k}': v for k, v in val.items()}})
                import plot  # here, not at the top: importing finetune.py stays light
                plot.try_plot_curves(out_dir)  # out_dir/curves.png, when matplotlib is installed
            value = same_on_all_ranks(scores[metric_name], runtime)  # every process takes the same decision
            if best is None or better(value, best):
                best, best_epoch = value, epoch
                save('best.pt', val)
            elif patience and epoch - best_epoch >= patience:
                if master:
                    print(f"early stop: val {metric_name} has not improved for {patience} epochs (best {best:.4f}, "
                          f"epoch {best_epoch})")
                break

        # the test split, once, with the best epoch's weights
        if master:
            print(f"best val {metric_name} {best:.4f} at epoch {best_epoch}; training took "
                  f"{(time.time() - t_start) / 60:.1f} min")
        if master and encoded['test']:
            best_model, _, best_checkpoint = checkpoints.load(os.path.join(out_dir, 'best.pt'), runtime.device)
            answer = answerer(best_model, tok, special['eot'], max_new_tokens, runtime)
            scores = evaluate(best_model, unit, encoded['test'], names, runtime, pad_id, batch_size, answer,
                              len(encoded['test']), best_checkpoint.get('val'))
            print(f"test ({len(splits['test']):,} examples, best epoch {best_epoch}):")
            print(unit.table(scores, names))
            write_json(os.path.join(out_dir, 'test_results.json'), {
                'task': task, 'data': data, 'init_from': init_from, 'best_epoch': best_epoch,
                'n_examples': len(splits['test']), 'train_examples': len(splits['train']),
                'train_sample': tasks.sample_fingerprint(splits['train']), 'seed': seed, **{k: v for k, v in scores.items() if k != 'predictions'}})
            write_jsonl(os.path.join(out_dir, 'test_predictions.jsonl'),
                        [{**ex, 'predicted': p} for ex, p in zip(splits['test'], scores['predictions'])])
            for name, obj in unit.files(splits['test'], scores).items():  # qa: predictions.json, SQuAD's {id: answer}
                write_json(os.path.join(out_dir, name), obj)
            print(f"wrote {out_dir}/test_results.json and test_predictions.jsonl (each test example, its prediction)")
            if importlib.util.find_spec('matplotlib') is None:
                print("(pip install matplotlib to get the test scores drawn as well)")
            else:
                import plot
                path = unit.picture(plot, scores, names, out_dir)
                if path:
                    print(f"wrote {path}")
        cleanup_runtime(runtime)


if __name__ == '__main__':
    run_main(main)
