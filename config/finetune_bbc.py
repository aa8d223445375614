# BBC News topic classification (5 classes) from the pretrain_small GPT, on the articles pretraining split off:
# the 203 test articles were never seen in pretraining, nor near-copies of them.
#   python train.py config/pretrain_small.py && python finetune.py config/finetune_bbc.py
#   python baseline.py     # TF-IDF + logistic regression on the same split, for comparison
out_dir = 'out/finetune_bbc'
init_from = 'out/pretrain_small'
task = 'classification'
data = 'bbc_news'  # 1,821 train / 103 val / 203 test articles, the split of data/bbc_news_bpe4k/splits.json

block_size = 128  # the model's context
# an article is cut into up to 8 windows of 127 tokens + eot (its first 1,016 tokens), each a training example; an
# article's prediction averages its windows' log-probabilities.
truncation = 'windows'
max_windows = 8

# the head alone: a logistic regression on the frozen model's pooled features (each window's last token), C chosen
# by val loss, the recipe the label-efficiency curves chose (python curves.py; docs/results.md)
probe = True

# --probe=False trains every weight instead, with these settings:

# 16 windows a step; 1,821 articles = 9,170 windows = 573 steps an epoch
batch_size = 16
epochs = 2
learning_rate = 1e-4
warmup = 0.1
lr_schedule = 'linear'
weight_decay = 0.01
dropout = 0.0  # dropout takes attention off its fused CPU kernel: a third more time a step (docs/results.md)
patience = 3
