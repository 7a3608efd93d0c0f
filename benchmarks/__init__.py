"""sema-bench: per-task runners driven by one training engine (see README)."""
