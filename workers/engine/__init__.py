"""Model work: registry and loading, tokenization and forward passes, per-task heads."""
