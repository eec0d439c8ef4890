"""`alignment finetune`: BERT, T5 and GPT classifiers on downstream tasks, with the transfer-learning controls."""
