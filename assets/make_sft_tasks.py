"""
Write assets/sft_tasks.jsonl, the small SFT dataset of config/finetune_sft.py:

    python assets/make_sft_tasks.py              # rewrites assets/sft_tasks.jsonl (byte-identical: fixed seed)
    python assets/make_sft_tasks.py out.jsonl    # somewhere else

SYNTHETIC DATA: every line is made up here from a fixed word list by exact rules, not collected from people.
Four instruction families, 500 prompts each, each with one right answer, simple enough that a small GPT
pretrained on BBC News learns them in minutes on a CPU:
    {"prompt": "Reverse the words: bank rates rise", "response": "rise rates bank"}
    {"prompt": "Capitalise: bank rates rise", "response": "BANK RATES RISE"}
    {"prompt": "Repeat twice: bank rates", "response": "bank rates bank rates"}
    {"prompt": "Last word: bank rates rise", "response": "rise"}
Standard library only.
"""
import json
import os
import random
import sys

SEED = 1337
PER_FAMILY = 500
# common words of news English, each one GPT-2 token after a space
WORDS = """
government minister market company game film music player team bank price year week people country world police
court school party election vote phone computer software mobile network internet record album band star show
award club match cup league season goal win sale profit share growth tax budget plan deal firm chief report news
time day city house car road water money job work home family power oil gas energy food health life book story
rates rise fall jobs talks trade street town river farm ship train boss fans title final test army war peace
law rules union staff pay cost costs sales stock shares firms banks games films songs stars shows awards clubs
cash debt fund loan rate plans deals bill act crime case trial judge jury prison drug drugs doctor hospital
nurse patient care service services system data site web email video radio tv channel station press paper
"""
WORDS = sorted(set(WORDS.split()))


def families():
    """(prompt, response) makers, each from a list of words."""
    return [
        lambda words: ('Reverse the words: ' + ' '.join(words), ' '.join(reversed(words))),
        lambda words: ('Capitalise: ' + ' '.join(words), ' '.join(words).upper()),
        lambda words: ('Repeat twice: ' + ' '.join(words[:2]), ' '.join(words[:2] * 2)),
        lambda words: ('Last word: ' + ' '.join(words), words[-1]),
    ]


def make_examples(seed=SEED, per_family=PER_FAMILY):
    rng = random.Random(seed)
    examples, seen = [], set()
    for make in families():
        n = 0
        while n < per_family:
            prompt, response = make(rng.sample(WORDS, rng.randint(3, 5)))
            if prompt not in seen:  # no prompt twice, so no val/test prompt is also in train
                seen.add(prompt)
                examples.append({'prompt': prompt, 'response': response})
                n += 1
    rng.shuffle(examples)
    return examples


def main(path=None):
    path = path or os.path.join(os.path.dirname(os.path.abspath(__file__)), 'sft_tasks.jsonl')
    with open(path, 'w', encoding='utf-8', newline='\n') as f:
        for example in make_examples():
            f.write(json.dumps(example) + '\n')
    print(f"wrote {path}")


if __name__ == '__main__':
    main(*sys.argv[1:2])
