# Sentiment (or any label) classification of your own CSV with HF GPT-2 (124M) on a GPU.
# reviews.csv has a header row with `text` and `label` columns; it is split 80/10/10 (or pass a directory holding
# train.csv, val.csv and test.csv). GPT-2's weights download once (or come from the HF cache / a local directory).
#   python finetune.py config/finetune_gpt2_sentiment.py --data=reviews.csv
out_dir = 'out/finetune_gpt2_sentiment'
init_from = 'gpt2'
task = 'classification'
data = 'reviews.csv'
text_column = 'text'
label_column = 'label'

block_size = 256  # longer reviews keep their first 255 tokens; try truncation='tail' for reviews that end with the verdict
truncation = 'head'
class_weights = False  # True when one label is much rarer than the others

batch_size = 32
epochs = 3
learning_rate = 2e-5  # a pretrained 124M model: small steps
warmup = 0.1
lr_schedule = 'linear'
weight_decay = 0.01
dropout = 0.1
patience = 2

device = 'cuda'
dtype = 'auto'  # bf16 autocast on Ampere and newer
compile = True
# lora_rank = 8  # LoRA instead of full fine-tuning: far fewer trainable parameters, merged into best.pt at the end
