# Instruction tuning of the pretrain_small GPT on assets/sft_tasks.jsonl: small, clearly synthetic instruction
# families (made by assets/make_sft_tasks.py). The loss is on the response tokens only.
#   python train.py config/pretrain_small.py && python finetune.py config/finetune_sft.py
#   python sample.py --out_dir=out/finetune_sft --start="Capitalise: cash prison phone" --temperature=0 --num_samples=1
out_dir = 'out/finetune_sft'
init_from = 'out/pretrain_small'
task = 'sft'
data = 'sft_tasks'  # assets/sft_tasks.jsonl, split 80/10/10
prompt_template = "### Instruction:\n{prompt}\n\n### Response:\n"

block_size = 128
batch_size = 16  # 1,600 train pairs = 100 steps an epoch
epochs = 15
learning_rate = 1e-3
warmup = 0.05
lr_schedule = 'cosine'
weight_decay = 0.01
dropout = 0.0
metric = 'loss'  # val loss on the response tokens picks the best epoch; exact match of greedy answers is reported
eval_generate = 50  # val prompts answered greedily each epoch for the exact-match score
max_new_tokens = 48
patience = 3
