# BBC News topic classification (5 classes) from the pretrain_bert_small encoder: [CLS] article [SEP], the first
# position pooled. Same article split as pretraining (test articles never seen).
#   python train.py config/pretrain_bert_small.py && python finetune.py config/finetune_bbc_bert.py
out_dir = 'out/finetune_bbc_bert'
init_from = 'out/pretrain_bert_small'
task = 'classification'
data = 'bbc_news'

block_size = 128  # [CLS] + the article's first 126 tokens + [SEP]
truncation = 'head'

batch_size = 16  # 113 steps an epoch
epochs = 6
learning_rate = 3e-4
warmup = 0.1
lr_schedule = 'linear'
weight_decay = 0.01
dropout = 0.1
patience = 3
