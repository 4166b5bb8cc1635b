"""Tasks: what a batch means, the loss, and the metrics. The engine calls these and nothing else."""
