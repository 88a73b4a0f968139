"""Training: the config, the sparsity objective, the estimators, example sampling and the loop (`prune`)."""

from .config import PruneConfig, ScoreSettings
from .loop import PruneResult, prune

__all__ = ["PruneConfig", "PruneResult", "ScoreSettings", "prune"]
