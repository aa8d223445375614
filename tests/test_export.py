"""
Tests for export.py: every kind of checkpoint goes out as a directory that transformers loads offline with its Auto*
classes, computing our logits (fp32, atol 1e-4, on a padded batch of real sentences), generating our greedy tokens,
tokenizing to our ids, running in transformers' pipelines, and reading back into our Transformer. Tiny random models
(perturbed so that a mis-mapped weight shows) saved as train.py / finetune.py save them, and one real train.py run.

    python -m pytest -q tests/test_export.py
"""
import importlib
import json
import math
import os
import sys

import pytest
import torch

import checkpoints
import export
import hf
import metrics
import prepare
import sample
from model import Transformer, config_dict
from tokenizer import GPT2_META, get_tokenizer, special_tokens, tokenizer_of, wordpiece_meta

from conftest import make_english_text, tiny_model_config
from test_train import TINY, assert_one_line_error, data_args, run

transformers = pytest.importorskip('transformers')

SENTENCES = [
    "The government said on Monday that it would cut taxes by 2%.",
    "Shares in Vodafone rose 4.5p to 152.25p after the £2.4bn deal.",
    "Café owners in Zürich don't expect the naïve plan to work.",
    "Scientists in Leeds found 1,200 new species — most of them beetles!",
    "She asked: \"Is it really 3:45 already?\"",
    "北京和上海的天气很好。",
    "東京タワーは333メートルです",
    "Emoji 😀 and symbols like © ® ™ § ¶ appear in web text.",
    "The match ended 0–0 after 120 minutes; penalties decided it 5-4.",
    "Dr Smith (aged 42) said: 'The NHS needs £8bn more by 2020/21.'",
    "Ελληνικά, русский and עברית are written in other scripts.",
    "Wall-to-wall, state-of-the-art, well-known: hyphenated compounds abound.",
    "   Leading spaces, and trailing ones too   ",
    "Tabs\tand\nnewlines\n\nbetween words.",
    "It's, they're, we've, I'll, he'd: English contractions.",
    "URLs like https://example.com/a?b=c&d=e#f are common.",
    "Prices: $19.99, €25, ¥1000, ₹500 and 0.5% interest.",
    "Ünïcödé àccénts everywhere: résumé, façade, jalapeño.",
    "UPPER CASE and lower case and MiXeD cAsE words.",
    "Numbers 1234567890 and 3.14159 and 1e-5 and -42.",
    "🚀🔥👍🏽 family: 👨‍👩‍👧‍👦",
    "Mr. O'Neill's dog—a 3-year-old—barked at 7:30 a.m.",
]
LABELS = ['business', 'sport', 'tech']
TEMPLATE = "### Instruction:\n{prompt}\n\n### Response:\n"
# our ModelConfig fields of each architecture, on the suite's tiny model (2 layers, 2 heads, 32 wide) with block 64
LLAMA = dict(pos_embedding='rope', norm='rms', mlp='swiglu', bias=False, tie_embeddings=False, n_kv_head=1)
QWEN3 = dict(LLAMA, qk_norm=True, head_dim=8, tie_embeddings=True, n_kv_head=None, rope_theta=1e6)
BERT = dict(causal=False, norm_position='post', embedding_norm=True, activation='gelu', mlm_head=True)
KINDS = {  # name: (ModelConfig overrides, tokenizer, fine-tuning task or None, the Auto class transformers loads)
    'gpt2': (dict(), 'gpt2', None, 'AutoModelForCausalLM'),
    'llama': (LLAMA, 'bpe', None, 'AutoModelForCausalLM'),
    'qwen3': (QWEN3, 'char', None, 'AutoModelForCausalLM'),
    'bert_mlm': (BERT, 'wordpiece', None, 'AutoModelForMaskedLM'),
    'bert_nsp': (dict(BERT, type_vocab_size=2, pooler=True, nsp_head=True, layer_norm_eps=1e-12), 'gpt2', None,
                 'AutoModelForPreTraining'),
    'classify_gpt2': (dict(), 'gpt2', 'classification', 'AutoModelForSequenceClassification'),
    'classify_bert': (dict(BERT, pooler=True, type_vocab_size=2), 'wordpiece', 'classification',
                      'AutoModelForSequenceClassification'),
    'ner_bert': (BERT, 'wordpiece', 'ner', 'AutoModelForTokenClassification'),
    'ner_llama': (LLAMA, 'bpe', 'ner', 'AutoModelForTokenClassification'),
    'sft': (dict(bias=False), 'gpt2', 'sft', 'AutoModelForCausalLM'),  # bias=False: exported as zero biases
}
HEAD_OF_TASK = {'classification': 'sequence', 'ner': 'token', 'sft': None}
CAUSAL_LMS = [k for k, (args, _, task, _) in KINDS.items() if task in (None, 'sft') and not args.get('mlm_head')]


def perturbed(model, seed=8):
    """model in eval mode with non-zero biases and non-unit norm weights, so that a mis-mapped one shows."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('bias') or 'ln_' in name or 'norm' in name.lower():
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def save_run_checkpoint(path, model, meta, **extra):
    """A checkpoint as train.py (or, with extra, finetune.py) writes it, read back as every script reads one."""
    checkpoints.save_checkpoint(str(path), {'model': model.state_dict(), 'model_args': config_dict(model.config),
                                       'config': {'batch_size': 8, 'block_size': 64, 'gradient_accumulation_steps': 1},
                                       'meta': meta, 'iter_num': 20, 'best_val_loss': 5.5, **extra})
    return checkpoints.read(str(path))


def char_sentences(n=22):
    """Real sentences in the char dataset's alphabet (it has no accents, emoji or CJK)."""
    lines = make_english_text(200, seed=1).splitlines()
    return [line[:60] for line in lines[:n]]


@pytest.fixture(scope='module')
def metas(char_dataset, tmp_path_factory):
    """The meta.json of a dataset of each tokenizer: GPT-2 BPE, a BPE trained by prepare.py (bpe:300), chars, and
    WordPiece with all-MiniLM-L6-v2's vocabulary (a tiny one when that package is absent)."""
    root = tmp_path_factory.mktemp('data')
    (root / 'english.txt').write_text(make_english_text(), encoding='utf-8')
    bpe = prepare.load_meta(prepare.prepare(str(root / 'english.txt'), name='bpe', tokenizer='bpe:300', out_root=str(root)))
    try:
        from test_wordpiece import minilm_dir
        vocab_path = minilm_dir()
    except pytest.skip.Exception:
        vocab_path = str(root / 'vocab.txt')
        (root / 'vocab.txt').write_text('\n'.join(['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'the', 'government',
                                                   'said', '.', ',', 'a', '##s']) + '\n')
    wordpiece = wordpiece_meta(vocab_path)
    wordpiece.update(tokenizer='wordpiece', vocab_size=len(wordpiece['vocab']), eot_id=wordpiece['special_ids']['sep'])
    gpt2 = {**GPT2_META, 'source': 'test text', 'splits': {'train': {'tokens': 9000, 'bytes': 40000},
                                                            'val': {'tokens': 1000, 'bytes': 4400}}}
    return {'gpt2': gpt2, 'bpe': bpe, 'char': char_dataset[2], 'wordpiece': wordpiece}


def vocab_rows(meta):
    """The embedding rows train.py gives a dataset: its ids and the special ones, up to a multiple of 64."""
    special = special_tokens(meta)
    n = max(meta['vocab_size'], *(special[k] + 1 for k in ('mask', 'cls', 'sep', 'pad')))
    return (n + 63) // 64 * 64


@pytest.fixture(scope='module')
def exports(metas, tmp_path_factory):
    """name -> (export directory, our model, meta) for every kind in KINDS, exported from a checkpoint file."""
    root = tmp_path_factory.mktemp('exports')
    (root / 'test_results.json').write_text(json.dumps({'task': 'classification', 'n_examples': 40, 'accuracy': 0.75}))
    made = {}
    for seed, (name, (args, tokenizer_name, task, _)) in enumerate(KINDS.items()):
        meta = metas[tokenizer_name]
        torch.manual_seed(seed)
        model = Transformer(tiny_model_config(block_size=64, vocab_size=vocab_rows(meta), **args))
        extra = {}
        if args.get('mlm_head'):  # train.py records the special ids of a masked-LM run
            meta = {**meta, 'special_tokens': special_tokens(meta)}
        if task:
            if HEAD_OF_TASK[task]:
                model = checkpoints.for_task(model, HEAD_OF_TASK[task], len(LABELS))
            meta = {**meta, 'task': task, 'label_names': LABELS if HEAD_OF_TASK[task] else [],
                    'special_tokens': special_tokens(meta), 'prompt_template': TEMPLATE if task == 'sft' else None}
            extra = {'epoch': 2, 'val': {'loss': 0.9, 'accuracy': 0.6}}
        model = perturbed(model, seed)
        save_run_checkpoint(root / f'{name}.pt', model, meta, **extra)
        os.makedirs(root / name)
        export.export(*checkpoints.load(str(root / f'{name}.pt')), str(root / name), source=str(root / f'{name}.pt'))
        made[name] = str(root / name), model, meta
    return made


def our_ids(model, meta, text, cut=True):
    """The ids our scripts feed the model for a text: as is for causal models, `text <eot>` for the causal classifier
    (finetune.py), `[CLS] text [SEP]` for bidirectional ones; with cut, the text's head that fits the model's block."""
    special = meta.get('special_tokens') or special_tokens(meta)
    ids = get_tokenizer(meta['tokenizer'], meta).encode(text)
    room = model.config.block_size - (0 if model.config.causal and model.config.task_head != 'sequence' else
                                      1 if model.config.causal else 2) if cut else len(ids)
    if not model.config.causal:
        return [special['cls'], *ids[:room], special['sep']]
    return ids[:room] + ([special['eot']] if model.config.task_head == 'sequence' else [])


def texts_of(meta):
    return char_sentences() if meta['tokenizer'] == 'char' else SENTENCES


def padded_batch(rows, pad_id):
    T = max(map(len, rows))
    idx = torch.tensor([row + [pad_id] * (T - len(row)) for row in rows])
    mask = (torch.arange(T)[None, :] < torch.tensor([len(row) for row in rows])[:, None]).long()
    return idx, mask


def load_theirs(name, directory):
    """The export loaded by its Auto class, which found every weight it has and nothing else in the file."""
    theirs, info = getattr(transformers, KINDS[name][3]).from_pretrained(directory, output_loading_info=True)
    assert not info['unexpected_keys'] and not info['mismatched_keys'] and not info['error_msgs'], info
    assert set(info['missing_keys']) <= {'lm_head.weight', 'cls.predictions.decoder.weight'}, info  # tied to wte
    return theirs.eval()


# -----------------------------------------------------------------------------
# every kind: files, logits, generation, tokenizer, reading back

def test_files_of_every_kind(exports):
    """Each export holds the weights, configs, tokenizer and model card; the transformers class is the expected one."""
    classes = {'gpt2': 'GPT2LMHeadModel', 'llama': 'LlamaForCausalLM', 'qwen3': 'Qwen3ForCausalLM',
               'bert_mlm': 'BertForMaskedLM', 'bert_nsp': 'BertForPreTraining',
               'classify_gpt2': 'GPT2ForSequenceClassification', 'classify_bert': 'BertForSequenceClassification',
               'ner_bert': 'BertForTokenClassification', 'ner_llama': 'LlamaForTokenClassification', 'sft': 'GPT2LMHeadModel'}
    vocabulary = {'gpt2': {'vocab.json', 'merges.txt'}, 'wordpiece': {'vocab.txt'}, 'bpe': set(), 'char': set()}
    for name, (directory, model, meta) in exports.items():
        assert set(os.listdir(directory)) == {'config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json',
                                              'README.md', 'scratchlm_meta.json'} | vocabulary[meta['tokenizer']], name
        config = json.loads(open(os.path.join(directory, 'config.json')).read())
        assert config['architectures'] == [classes[name]] and config['dtype'] == 'float32'
        if model.config.task_head:
            assert config['id2label'] == {str(i): label for i, label in enumerate(LABELS)}
            assert config['label2id'] == {label: i for i, label in enumerate(LABELS)}
    sft_card = open(os.path.join(exports['sft'][0], 'README.md')).read()
    assert TEMPLATE in sft_card and 'pipeline_tag: text-generation' in sft_card
    card = open(os.path.join(exports['gpt2'][0], 'README.md')).read()
    assert f"| val loss | 5.5000 nats/token, {5.5 * 1000 / 4400 / math.log(2):.4f} bits/byte |" in card
    assert '20 iterations x 512 tokens/iter = 10,240 tokens' in card and '| data | test text, 9,000 train tokens |' in card
    card = open(os.path.join(exports['classify_bert'][0], 'README.md')).read()  # finetune.py's test_results.json beside
    assert '| labels | business, sport, tech |' in card and '| test accuracy (40 examples) | 0.7500 |' in card
    assert '| val accuracy | 0.6000 |' in card and 'pipeline_tag: text-classification' in card


@pytest.mark.parametrize('name', KINDS)
def test_logits_equal_ours(exports, name):
    """transformers' Auto class on the export gives our logits on a padded batch of real sentences (attention_mask,
    right padding; fp32, atol 1e-4): per position where there is one per token, per text for classifiers, and the
    next-sentence logits of BertForPreTraining."""
    directory, model, meta = exports[name]
    theirs = load_theirs(name, directory)
    special = meta.get('special_tokens') or special_tokens(meta)
    idx, mask = padded_batch([our_ids(model, meta, text) for text in texts_of(meta)[:8]], special['pad'])
    with torch.no_grad():
        out = theirs(input_ids=idx, attention_mask=mask)
        x = model.hidden_states(idx, attn_mask=mask)
        if model.config.task_head:
            ours, expected = model(idx, attn_mask=mask)[0], out.logits
        elif model.config.mlm_head:
            ours, expected = model.mlm_head(x), out.logits if name == 'bert_mlm' else out.prediction_logits
        else:
            ours, expected = model.lm_head(x), out.logits
    if ours.dim() == 3:  # one output per position: compare the real ones
        ours, expected = ours[mask.bool()], expected[mask.bool()]
    torch.testing.assert_close(expected, ours, atol=1e-4, rtol=0)
    if model.config.nsp_head:
        torch.testing.assert_close(out.seq_relationship_logits, model.nsp_head(model.pooler(x)), atol=1e-4, rtol=0)


@pytest.mark.parametrize('name', CAUSAL_LMS)
def test_greedy_generation_equals_ours(exports, name):
    """20 greedy tokens by transformers' generate equal our cached generate (transformers stops at eos, its
    eos_token_id being our eot: up to there)."""
    directory, model, meta = exports[name]
    theirs = load_theirs(name, directory)
    for text in texts_of(meta)[:3]:
        prompt = torch.tensor([our_ids(model, meta, text)[:8]])
        with torch.no_grad():
            expected = theirs.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20, do_sample=False)
        ours = model.generate(prompt, 20, temperature=0)
        assert torch.equal(expected, ours[:, :expected.size(1)])
        assert expected.size(1) == ours.size(1) or expected[0, -1] == meta['eot_id']


@pytest.mark.parametrize('name', ['gpt2', 'llama', 'qwen3', 'bert_mlm', 'bert_nsp', 'classify_gpt2', 'classify_bert'])
def test_tokenizer_gives_our_ids(exports, name):
    """AutoTokenizer on the export encodes real sentences (punctuation, accents, numbers, emoji, CJK; for the char
    model sentences in its alphabet) to exactly our ids, with what our scripts add around a text ([CLS] / [SEP],
    a causal classifier's eot); padding uses our pad id. A character the char vocabulary lacks fails in both."""
    directory, model, meta = exports[name]
    tok = transformers.AutoTokenizer.from_pretrained(directory)
    texts = texts_of(meta)
    assert len(texts) >= 20
    for text in texts:
        assert tok(text)['input_ids'] == our_ids(model, meta, text, cut=False), text
    special = meta.get('special_tokens') or special_tokens(meta)
    assert tok.pad_token_id == special['pad'] and tok.eos_token_id == special['eot']
    if not model.config.causal:
        assert (tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == (special['cls'], special['sep'], special['mask'])
    if meta['tokenizer'] == 'char':
        with pytest.raises(Exception):
            tok('café')
        with pytest.raises(ValueError, match='not in this char vocabulary'):
            get_tokenizer('char', meta).encode('café')


def test_reimport_equals_the_original(exports):
    """An export reads back (hf.load_model, as --init_from=<export dir> does) into our model, weight for weight; the
    weights ours lacks are zeros (a bias=False model's biases, BERT's one token-type row). checkpoints.load
    returns our tokenizer meta with it, Llama and Qwen3 too; a classifier's trunk reads back by hf.from_hf
    and its head is ours (GPT-2's bias folded into ln_f: W d = b)."""
    for name, (directory, model, meta) in exports.items():
        ours = model.state_dict()
        if not model.config.task_head:
            back, _, _ = hf.load_model(directory)
            loaded, loaded_meta, _ = checkpoints.load(directory)
            assert loaded_meta == meta and torch.equal(loaded.transformer.wte.weight, model.transformer.wte.weight)
            state = back.state_dict()
            for key, value in ours.items():
                assert torch.equal(state[key], value), (name, key)
            assert all(not state[key].any() for key in set(state) - set(ours)), name
            continue
        config = json.loads(open(os.path.join(directory, 'config.json')).read())
        state = hf.load_state_dict_file(directory)
        head = {k: state.pop(k) for k in list(state) if k.startswith(('score.', 'classifier.'))}
        torch.testing.assert_close(next(v for k, v in head.items() if k.endswith('.weight')), ours['classifier.weight'],
                                   atol=0, rtol=0)
        trunk = hf.from_hf({**config, 'tie_word_embeddings': True}, state).state_dict()  # no LM head to read
        for key, value in ours.items():
            if not key.startswith(('classifier.', 'lm_head.')) and key != 'transformer.ln_f.bias':  # no LM head: unused
                assert torch.equal(trunk[key], value), (name, key)
        if name == 'classify_gpt2':
            d = (trunk['transformer.ln_f.bias'] - ours['transformer.ln_f.bias']).double()
            torch.testing.assert_close(ours['classifier.weight'].double() @ d, ours['classifier.bias'].double(), atol=1e-6, rtol=0)


def test_sample_and_finetune_read_an_export(exports):
    """checkpoints.load (sample.py's and finetune.py's loader) reads a Llama export with its trained BPE and
    generates; an sft export brings its prompt template, so sample.py asks in it; a Qwen3 export loads to fine-tune
    further."""
    directory, model, meta = exports['llama']
    loaded, loaded_meta, _ = checkpoints.load(directory)
    tok, special = tokenizer_of(loaded_meta)
    assert tok.name == 'bpe' and loaded.config.pos_embedding == 'rope'
    prompt = torch.tensor([tok.encode("The council said")])
    assert torch.equal(loaded.generate(prompt, 5, temperature=0), model.generate(prompt, 5, temperature=0))
    assert checkpoints.load(exports['sft'][0])[1]['prompt_template'] == TEMPLATE
    base, base_meta, _ = checkpoints.load(exports['qwen3'][0], dropout=0.0)
    assert base_meta['tokenizer'] == 'char' and base.config.qk_norm


# -----------------------------------------------------------------------------
# pipelines

@pytest.mark.parametrize('name', ['classify_gpt2', 'classify_bert'])
def test_text_classification_pipeline(exports, name):
    """pipeline('text-classification') on the export gives our label and its probability for each text."""
    directory, model, meta = exports[name]
    classify = transformers.pipeline('text-classification', model=directory, device='cpu')
    for text in SENTENCES[:5]:
        with torch.no_grad():
            probs = model(torch.tensor([our_ids(model, meta, text)]))[0].softmax(-1)[0]
        result = classify(text)[0]
        assert result['label'] == LABELS[int(probs.argmax())]
        assert result['score'] == pytest.approx(float(probs.max()), abs=1e-5)


@pytest.mark.parametrize('name', ['bert_mlm', 'bert_nsp'])
def test_fill_mask_pipeline(exports, name):
    """pipeline('fill-mask') on a BERT-style export (WordPiece; GPT-2 BPE with [MASK] above GPT-2's ids) gives the
    probabilities of sample.py's fill_mask for the top 5."""
    directory, model, meta = exports[name]
    fill = transformers.pipeline('fill-mask', model=directory, device='cpu', top_k=5)
    tok, special = tokenizer_of(meta)
    for text in ("The government [MASK] the plan.", "Shares in the bank [MASK] 5% on Monday"):
        ours = sample.fill_masks(model, tok, special, text, top_k=5)[0]
        theirs = fill(text)
        assert [r['score'] for r in theirs] == pytest.approx([p for _, p in ours], abs=1e-5)


# -----------------------------------------------------------------------------
# the script: a real train.py run, dtype, overwrite, refusals

@pytest.fixture(scope='module')
def train_run(char_dataset, tmp_path_factory):
    """A 4-iteration train.py run of the tiny GPT (bias=False, as train.py's default) on the char dataset."""
    out_dir = tmp_path_factory.mktemp('run') / 'run'
    run('train.py', *TINY, *data_args(char_dataset), f'--out_dir={out_dir}', '--max_iters=4', '--eval_interval=2',
        '--block_size=64')
    return str(out_dir)


def test_export_a_train_run(train_run, tmp_path):
    """`python export.py --out_dir=RUN --to=DIR` on a real run: transformers gives our logits, greedy tokens and ids;
    the model card has the run's training tokens and val loss in nats and bits per byte."""
    target = tmp_path / 'hf_small'
    proc = run('export.py', f'--out_dir={train_run}', f'--to={target}')
    assert f'wrote {target}: GPT2LMHeadModel' in proc.stdout
    model, meta, checkpoint = checkpoints.load(train_run)
    model.eval()
    assert not model.config.bias  # exported as GPT-2 with zero biases
    theirs = transformers.AutoModelForCausalLM.from_pretrained(str(target)).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(target))
    ours_tok = get_tokenizer('char', meta)
    texts = char_sentences()
    assert all(tok(text)['input_ids'] == ours_tok.encode(text) for text in texts)
    batch = tok(texts[:6], padding=True, return_tensors='pt')
    with torch.no_grad():
        expected = theirs(**batch).logits
        ours = model.lm_head(model.hidden_states(batch['input_ids'], attn_mask=batch['attention_mask']))
    real = batch['attention_mask'].bool()
    torch.testing.assert_close(expected[real], ours[real], atol=1e-4, rtol=0)
    prompt = torch.tensor([ours_tok.encode(texts[0][:10])])
    with torch.no_grad():
        generated = theirs.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20, do_sample=False)
    assert torch.equal(generated, model.generate(prompt, 20, temperature=0)[:, :generated.size(1)])
    card = (target / 'README.md').read_text()
    tokens = checkpoint['iter_num'] * 8 * 64
    assert f"= {tokens:,} tokens" in card
    bpb = metrics.bits_per_byte(checkpoint['best_val_loss'], meta)
    assert f"| val loss | {checkpoint['best_val_loss']:.4f} nats/token, {bpb:.4f} bits/byte |" in card


def export_main(monkeypatch, *args):
    """export.py's main in this process, with fresh globals (an error would raise)."""
    monkeypatch.setattr(sys, 'argv', ['export.py', *map(str, args)])
    importlib.reload(export).main()


def test_bfloat16_and_overwrite(train_run, tmp_path, script_main, monkeypatch):
    """--dtype=bfloat16 writes bf16 weights (read back: our weights rounded to bf16); an existing export is kept
    unless --overwrite=True, which replaces it whole and leaves no temp directory behind."""
    target = tmp_path / 'hf_small'
    export_main(monkeypatch, f'--out_dir={train_run}', f'--to={target}', '--dtype=bfloat16')
    from safetensors import safe_open
    with safe_open(str(target / 'model.safetensors'), 'pt') as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    model = checkpoints.load(train_run)[0]
    back = hf.load_model(str(target))[0].state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(back[key], value.bfloat16().float()), key
    (target / 'mine.txt').write_text('keep me')
    code, err = script_main('export', f'--out_dir={train_run}', f'--to={target}')
    assert_one_line_error(code, err, 'already exists', '--overwrite=True')
    assert (target / 'mine.txt').read_text() == 'keep me'
    export_main(monkeypatch, f'--out_dir={train_run}', f'--to={target}', '--overwrite=True')
    assert not (target / 'mine.txt').exists() and (target / 'model.safetensors').exists()
    assert os.listdir(tmp_path) == ['hf_small']  # no .tmp-<pid>-... left beside it
    with safe_open(str(target / 'model.safetensors'), 'pt') as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}


def refusal_checkpoints(metas):
    """name -> (model, meta) of checkpoints no transformers class expresses."""
    gpt2 = metas['gpt2']
    made = {}
    torch.manual_seed(0)
    made['relu2'] = Transformer(tiny_model_config(mlp='relu2', vocab_size=50304)), gpt2
    made['pre-norm bert'] = Transformer(tiny_model_config(causal=False, mlm_head=True, vocab_size=50304)), gpt2
    for name, args, pooling in (('mean pooling', {}, 'mean'), ('llama classifier', LLAMA, 'auto'),
                                ('bert classifier without pooler', BERT, 'auto')):
        model = checkpoints.for_task(Transformer(tiny_model_config(vocab_size=50304, **args)), 'sequence', 3, pooling)
        made[name] = perturbed(model), {**gpt2, 'task': 'classification', 'label_names': LABELS}
    return made


def test_refusals(metas, tmp_path, script_main):
    """One line and exit status 2, nothing written: no --to; a configuration no transformers class has (the field
    named); mean pooling; a Llama classifier's non-zero bias (no bias in LlamaForSequenceClassification); a BERT
    classifier without BERT's pooler."""
    code, err = script_main('export', f'--out_dir={tmp_path}')
    assert_one_line_error(code, err, '--to=DIR is required')
    expected = {'relu2': "mlp='gelu'", 'pre-norm bert': "norm_position='post'", 'mean pooling': "pooling='mean'",
                'llama classifier': 'LlamaForSequenceClassification', 'bert classifier without pooler': "BERT's pooler"}
    for i, (name, (model, meta)) in enumerate(refusal_checkpoints(metas).items()):
        path = tmp_path / f'{i}.pt'
        save_run_checkpoint(path, model, meta)
        code, err = script_main('export', f'--init_from={path}', f'--to={tmp_path / "out"}')
        assert_one_line_error(code, err, 'cannot be exported', expected[name])
        assert not (tmp_path / 'out').exists() and not any(p.name.startswith('.tmp-') for p in tmp_path.iterdir())
