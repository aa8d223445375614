# A BERT-style encoder on BBC News (the default corpus), masked-LM pretraining sized for a 2-core CPU: GPT-2 BPE,
# GPT-2's blocks (pre-norm), AdamW. At equal time it beat pretrain_small's recipe made bidirectional
# (pretrain_bert_small_bpe4k.py) in bits per masked byte, 2.17 against 2.26 (docs/results.md, round 3).
#   python train.py config/pretrain_bert_small.py                 # masked LM
#   python train.py config/pretrain_bert_small.py --nsp=True      # + next-sentence prediction (at chance at this
#     size so far: docs/results.md)
#   python sample.py --out_dir=out/pretrain_bert_small --fill_mask="The [MASK] of England"
out_dir = 'out/pretrain_bert_small'
dataset = 'bbc_news'
eval_interval = 240
eval_iters = 20  # 20 batches * 16 rows * 126 tokens * 40% = ~16,000 masked val tokens an evaluation
log_interval = 10

objective = 'mlm'
causal = False
# 40% instead of BERT's 15% (Wettig et al. 2022, "Should You Mask 15% in Masked Language Modeling?"): more targets
# a step, and a shorter stay on the unigram plateau (docs/results.md).
mlm_probability = 0.4

# 16 batch * 128 tokens * 1 accum = 2,048 tokens/iter, ~800 of them predicted; 1,200 iters = 2.5M tokens, ~2.8 passes
batch_size = 16
block_size = 128
gradient_accumulation_steps = 1

# pre-LayerNorm blocks (the default) train stably at this learning rate; --norm_position=post --embedding_norm=True
# gives BERT's own layout
n_layer = 4
n_head = 4
n_embd = 256
dropout = 0.0

learning_rate = 1e-3
max_iters = 1200  # ~0.6 s/iter on 2 cores with bf16 (1.6 s in float32), most of it the 50k-way head on ~800 rows
warmup_iters = 100
lr_schedule = 'cosine'
min_lr = 1e-4
