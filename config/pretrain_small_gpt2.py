# Round 1's recipe (docs/results.md): pretrain_small's model size on GPT-2 BPE with GPT-2's architecture, kept for
# comparison and as the config for init_from='gpt2' (GPT-2 BPE data):
#   python train.py config/pretrain_small_gpt2.py
#   python train.py config/pretrain_small_gpt2.py --init_from=gpt2 --learning_rate=1e-4 --out_dir=out/gpt2_bbc
out_dir = 'out/pretrain_small_gpt2'
dataset = 'bbc_news'  # GPT-2 BPE, prepared on first use
eval_interval = 100
eval_iters = 20  # 20 batches * 1,024 tokens = 20,480 val tokens an evaluation
log_interval = 20

# 8 batch * 128 tokens * 1 accum = 1,024 tokens/iter; 1,200 iters = 1.2M tokens, ~1.4 passes over the 0.88M train
# tokens; 12.9M of the 16.1M parameters are the tied 50,304 x 256 embedding / LM head.
batch_size = 8
block_size = 128
gradient_accumulation_steps = 1

n_layer = 4
n_head = 4
n_embd = 256
dropout = 0.0

learning_rate = 1e-3
max_iters = 1200
warmup_iters = 50
lr_schedule = 'cosine'
min_lr = 1e-4
