# GPT-2 124M on a large web corpus, for a GPU node (8 GPUs as written; scale gradient_accumulation_steps).
#   python prepare.py hf:Skylion007/openwebtext --name=openwebtext     # needs `pip install datasets` and the network
#   torchrun --standalone --nproc_per_node=8 train.py config/pretrain_gpt2.py
# On one GPU: python train.py config/pretrain_gpt2.py --gradient_accumulation_steps=40
out_dir = 'out/pretrain_gpt2'
dataset = 'openwebtext'
eval_interval = 1000
eval_iters = 200
log_interval = 10

# 12 batch * 1,024 tokens * 5 accum * 8 processes = 491,520 tokens/iter; 600,000 iters = ~295B tokens
batch_size = 12
block_size = 1024
gradient_accumulation_steps = 5  # per process

n_layer = 12
n_head = 12
n_embd = 768
dropout = 0.0
bias = False

learning_rate = 6e-4
max_iters = 600000
lr_decay_iters = 600000
warmup_iters = 2000
min_lr = 6e-5
weight_decay = 0.1
beta2 = 0.95

dtype = 'auto'  # bf16 on A100/H100-class GPUs
compile = True
