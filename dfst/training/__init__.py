"""DFST model, parallel-scan and fused training, and the training loop."""
