# The README's main command: a small GPT on BBC News (the default corpus), sized for a 2-core CPU.
#   python train.py config/pretrain_small.py
# The recipe that measured best at equal time on 2 cores (docs/results.md, round 2): a BPE of 4,096 ids trained on
# the train split, Llama's architecture (export.py makes it a LlamaForCausalLM), Muon with large steps.
out_dir = 'out/pretrain_small'
dataset = 'bbc_news_bpe4k'
tokenizer = 'bpe:4096'  # how the dataset is prepared on first use; ~3.7 bytes of text a token
eval_interval = 60
eval_iters = 10  # 10 batches * 4,096 tokens = 41,000 of the ~69,000 val tokens an evaluation
log_interval = 10

# 32 batch * 128 tokens * 1 accum = 4,096 tokens/iter; 540 iters = 2.2M tokens, ~2.2 passes over the ~1.0M train
# tokens. Muon's Newton-Schulz costs the same per step whatever the batch, so it pays with large steps: at 8 x 128 it
# doubled the step time on 2 cores.
batch_size = 32
block_size = 128
gradient_accumulation_steps = 1

# 4 layers x 256: 3.1M parameters in the blocks, 2.1M in the (untied) 4,096 x 256 embedding and LM head
n_layer = 4
n_head = 4
n_embd = 256
dropout = 0.0
bias = False
pos_embedding = 'rope'
norm = 'rms'
mlp = 'swiglu'  # hidden 704 = 8/3 x 256 rounded up to a multiple of 64: the parameters of a 4x GELU MLP
tie_embeddings = False

optimizer = 'muon'  # Muon on the blocks' matrices, AdamW on embeddings, head and norms
# AdamW's rate 6x Muon's: at 180 steps, 1.2e-2 for the embedding, head and norms gave 1.920 bits per byte against
# 1.989 with 2e-3 for all (6e-3: 1.927, 2.4e-2: 1.920; the embedding alone or the head alone at 2e-2: 1.945 each)
# while Muon's own rate mattered little (4e-3: 1.989). docs/results.md, round 5.
learning_rate = 1.2e-2
muon_lr = 2e-3
max_iters = 540
warmup_iters = 25
lr_schedule = 'cosine'
min_lr = 1.2e-3  # a tenth of each rate at the end: Muon's ends at 2e-4
