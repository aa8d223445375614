# A BERT-style encoder on BBC News (the default corpus), masked-LM pretraining sized for a 2-core CPU.
#   python train.py config/pretrain_bert_small.py                 # masked LM
#   python train.py config/pretrain_bert_small.py --nsp=True      # + next-sentence prediction
#   python sample.py --out_dir=out/pretrain_bert_small --fill_mask="The [MASK] of England"
out_dir = 'out/pretrain_bert_small'
dataset = 'bbc_news'
eval_interval = 100
eval_iters = 20  # 20 batches * 16 rows * 128 tokens * 15% = ~6,100 masked val tokens an evaluation
log_interval = 10

objective = 'mlm'
causal = False
mlm_probability = 0.15

# 16 batch * 128 tokens * 1 accum = 2,048 tokens/iter, ~300 of them predicted
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
