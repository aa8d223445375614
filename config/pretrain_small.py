# The README's main command: a small GPT on BBC News (the default corpus), sized for a 2-core CPU.
#   python train.py config/pretrain_small.py
out_dir = 'out/pretrain_small'
dataset = 'bbc_news'
eval_interval = 100
eval_iters = 20  # 20 batches * 2,048 tokens = 40,960 val tokens an evaluation
log_interval = 10

# 16 batch * 128 tokens * 1 accum = 2,048 tokens/iter; 600 iters = 1.2M tokens, ~1.4 passes over the 0.88M train tokens
batch_size = 16
block_size = 128
gradient_accumulation_steps = 1

n_layer = 4
n_head = 4
n_embd = 256
dropout = 0.0

learning_rate = 2e-3
max_iters = 600
warmup_iters = 30
lr_schedule = 'cosine'
min_lr = 1e-4
