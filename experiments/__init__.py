"""Experiment side: task data, metrics, training loop and result records (import submodules directly)."""
