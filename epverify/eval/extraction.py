"""From trained masks to a circuit, in one place for `epverify prune`, `recover` and the Edge Pruning method.

The rule (docs/method.md, "Extraction"): keep an edge when its log-alpha is positive (with node masks, when its
writer's is too), drop dangling edges, then the redundancy pass (`eval.redundancy.drop_redundant`) with the
config's tolerance, for circuits of at most `redundancy_max_edges` edges (its last round runs the model once per
kept edge).
"""

from __future__ import annotations

from ..io.circuit import Circuit
from .evaluator import Evaluator
from .redundancy import drop_redundant


def extract(evaluator: Evaluator, result, config, **info) -> Circuit:
    """The circuit of a training run's masks (`PruneResult`), measured on the evaluator's data and ablation."""
    graph = evaluator.graph
    circuit = Circuit.from_masks(graph, result.edge_log_alpha, result.node_log_alpha, ablation=evaluator.ablation,
                                 **info)
    if config.redundancy_tolerance > 0 and 0 < len(circuit.edges) <= config.redundancy_max_edges:
        circuit = drop_redundant(evaluator, circuit, result.edge_log_alpha, config.redundancy_tolerance)
    return circuit
