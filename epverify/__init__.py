"""epverify: Edge Pruning circuit discovery, verified against Tracr programs whose circuits are known exactly.

The flow: task data -> model adapter (`wrap`) -> masked engine -> trainer (`prune`) -> `Circuit` -> report.
"""

from . import tracr
from .adapters import wrap, wrap_pretrained
from .errors import EpverifyError
from .eval.evaluate import evaluate
from .io.circuit import Circuit
from .tracr.recover import RecoveryReport, recover
from .train.loop import PruneConfig, PruneData, PruneResult, prune

__all__ = [
    "Circuit",
    "EpverifyError",
    "PruneConfig",
    "PruneData",
    "PruneResult",
    "RecoveryReport",
    "evaluate",
    "prune",
    "recover",
    "tracr",
    "wrap",
    "wrap_pretrained",
]
__version__ = "0.1.0"
