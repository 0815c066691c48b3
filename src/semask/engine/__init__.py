"""Training, evaluation and inference engines (plain loops, no hooks or runner)."""
