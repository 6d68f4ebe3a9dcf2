"""Training: the objective (all loss terms of a configured method) and the one training loop."""
