"""epverify: Edge Pruning circuit discovery, verified against models whose circuits are known exactly.

The flow (docs/design.md, "Layout"): task data (`PruneData`) -> model adapter (`wrap`) -> masked engine -> training
(`prune`) -> `Circuit` -> evaluation (`Evaluator`, `evaluate`) -> report (`recover`).
"""

from . import tracr
from .adapters import wrap, wrap_pretrained
from .core.dataset import PruneData
from .errors import EpverifyError
from .eval.evaluator import Evaluator, evaluate
from .io.circuit import Circuit
from .tracr.recover import RecoveryReport, recover
from .train import PruneConfig, PruneResult, ScoreSettings, prune

__all__ = [
    "Circuit",
    "EpverifyError",
    "Evaluator",
    "PruneConfig",
    "PruneData",
    "PruneResult",
    "RecoveryReport",
    "ScoreSettings",
    "evaluate",
    "prune",
    "recover",
    "tracr",
    "wrap",
    "wrap_pretrained",
]
__version__ = "0.1.0"
