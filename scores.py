"""
The scores of the fine-tuning tasks, in plain Python on lists of label ids and tag strings: accuracy, macro-F1,
per class and the confusion matrix of a classifier, entity precision / recall / F1 with conlleval's semantics for
NER, SQuAD's exact match and F1 for extractive QA, and the printable table of the first two.

    report = classification_report(y_true, y_pred, names)  # accuracy, macro-F1, per class, confusion
    report = entity_report(true_tags, predicted_tags)       # conlleval's entity precision / recall / F1
    report = squad_report(gold_answers, predicted_answers)  # SQuAD exact match, F1 (v2.0: HasAns / NoAns too)
    print(format_report(report))
"""
import re
import string
from collections import Counter


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
    pairs = Counter(zip(y_true, y_pred))
    confusion = [[pairs[true, pred] for pred in range(n_classes)] for true in range(n_classes)]
    n_predicted = [sum(column) for column in zip(*confusion)]
    per_class = {name: _precision_recall_f1(confusion[c][c], n_predicted[c], sum(confusion[c]))
                 for c, name in enumerate(names)}
    present_f1 = [per_class[name]['f1'] for c, name in enumerate(names) if n_predicted[c] or sum(confusion[c])]
    accuracy = sum(true == pred for true, pred in zip(y_true, y_pred)) / len(y_true) if y_true else 0.0
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
        starts = _chunk_starts(prev_prefix, prefix, prev_type, entity_type)
        if start is not None and (starts or _chunk_ends(prev_prefix, prefix, prev_type, entity_type)):
            spans.add((prev_type, start, i))
            start = None
        if starts:
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
    # entities (sentence, type, start, end) counted by type
    n_correct, n_predicted, n_true = (Counter(e[1] for e in group) for group in (correct, pred_entities, true_entities))
    report['per_type'] = {kind: _precision_recall_f1(n_correct[kind], n_predicted[kind], n_true[kind])
                          for kind in sorted(n_predicted | n_true)}
    return report


def format_report(report):
    """A printable table of a classification_report (per class, accuracy, macro-F1, confusion matrix) or an
    entity_report (per type, overall), rows in the report's order."""
    per_name = report['per_class'] if 'per_class' in report else report['per_type']
    first = max([len('entity type'), *(len(str(name)) for name in per_name), len('macro-F1')])
    line = lambda name, p, r, f1, support: f"{name:<{first}}  {p:>9}  {r:>6}  {f1:>6}  {support:>7}"
    rows = [line('class' if 'per_class' in report else 'entity type', 'precision', 'recall', 'f1', 'support')]
    for name, s in per_name.items():
        rows.append(line(name, f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['f1']:.3f}", f"{s['support']:,}"))
    if 'per_class' not in report:
        rows.append(line('overall', f"{report['precision']:.3f}", f"{report['recall']:.3f}", f"{report['f1']:.3f}",
                         f"{report.get('support', sum(s['support'] for s in per_name.values())):,}"))
        return '\n'.join(rows)
    n_examples = sum(map(sum, report['confusion']))
    rows.append(line('accuracy', '', '', f"{report['accuracy']:.3f}", f"{n_examples:,}"))
    rows.append(line('macro-F1', '', '', f"{report['macro_f1']:.3f}", f"{n_examples:,}"))
    width = max(len(f'{n_examples:,}'), min(8, max(len(str(name)) for name in per_name)))
    rows += ['', 'confusion matrix (rows: true, columns: predicted)',
             ' ' * first + ''.join(f"  {str(name)[:width]:>{width}}" for name in per_name)]
    for name, counts in zip(per_name, report['confusion']):
        rows.append(f"{name:<{first}}" + ''.join(f"  {count:>{width},}" for count in counts))
    return '\n'.join(rows)


def normalize_answer(text):
    """SQuAD's normalisation (the official evaluate-v1.1 / v2.0 scripts): lower case, punctuation out, the articles
    a / an / the out, white space collapsed."""
    text = ''.join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return ' '.join(re.sub(r'\b(a|an|the)\b', ' ', text, flags=re.UNICODE).split())


def answer_f1(gold, predicted):
    """The official token F1 of two answers after normalisation; an empty one scores 1 only against an empty one."""
    gold_tokens, predicted_tokens = normalize_answer(gold).split(), normalize_answer(predicted).split()
    if not gold_tokens or not predicted_tokens:
        return float(gold_tokens == predicted_tokens)
    common = sum((Counter(gold_tokens) & Counter(predicted_tokens)).values())
    return _precision_recall_f1(common, len(predicted_tokens), len(gold_tokens))['f1']


def squad_report(gold_answers, predictions):
    """SQuAD's exact match and F1 (fractions, the official scripts' / 100), each question's max over its gold
    answers, then averaged. gold_answers: a list of answer-text lists, [] for an unanswerable question (SQuAD 2.0,
    where the right prediction is ''); golds that normalise to nothing are dropped, as evaluate-v2.0 does. With any
    unanswerable question: HasAns_* and NoAns_* over each kind as well."""
    if len(gold_answers) != len(predictions):
        raise ValueError(f"{len(gold_answers)} questions but {len(predictions)} predictions")
    golds = [[g for g in answers if normalize_answer(g)] or [''] for answers in gold_answers]
    exact = [max(float(normalize_answer(g) == normalize_answer(p)) for g in gs) for gs, p in zip(golds, predictions)]
    f1 = [max(answer_f1(g, p) for g in gs) for gs, p in zip(golds, predictions)]
    report = {'exact_match': sum(exact) / max(len(exact), 1), 'f1': sum(f1) / max(len(f1), 1), 'total': len(exact)}
    if any(gs == [''] for gs in golds):
        for kind, keep in (('HasAns', True), ('NoAns', False)):
            chosen = [i for i, gs in enumerate(golds) if (gs != ['']) == keep]
            report.update({f'{kind}_exact': sum(exact[i] for i in chosen) / max(len(chosen), 1),
                           f'{kind}_f1': sum(f1[i] for i in chosen) / max(len(chosen), 1), f'{kind}_total': len(chosen)})
    return report
