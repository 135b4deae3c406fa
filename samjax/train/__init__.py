"""Training: losses and the fine-tuning loop."""
