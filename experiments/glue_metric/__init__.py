"""The GLUE metrics as an `evaluate` module: evaluate.load("experiments/glue_metric", "<task>")."""
