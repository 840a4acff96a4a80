"""DFST model, parallel-scan and fused training, and the training loop."""

from dfst.training.loop import TrainConfig, TrainingError, TrainResult, train
from dfst.training.model import DFST

__all__ = ["DFST", "TrainConfig", "TrainResult", "TrainingError", "train"]
