"""Circuit-finding methods over one engine and one edge set, for comparison with Edge Pruning.

Every method takes a model (adapter, MaskedModel, Tracr CompiledModel or Hugging Face model), a `PruneData`
and an ablation (interchange, zero, mean or resample) and returns a `MethodResult`: edge scores (num_edges,)
in edge order, higher = more important, and the method's own `Circuit` when it decides one.

| method | module | scores | circuit | cost |
| --- | --- | --- | --- | --- |
| EAP | `eap` | abs(dM/dz) at z = 1 | top-k | 1 forward + backward |
| EAP-IG | `eap_ig` | IG over input embeddings | top-k | m forward + backward (m = 5) |
| ACDC | `acdc` | loss increase when tried | threshold | <= 1 forward per edge |
| Edge Pruning | `edge_pruning` | log-alpha | log-alpha > 0 | `PruneConfig.steps` steps |

    from epverify.methods import run_method
    result = run_method("eap-ig", model, data, ablation="interchange")
    result.scores, result.top(20), result.circuit
"""

from __future__ import annotations

from ..errors import EpverifyError
from .acdc import acdc
from .base import MethodResult, circuit_from_mask
from .eap import eap
from .eap_ig import eap_ig
from .edge_pruning import edge_pruning

METHODS = {"eap": eap, "eap-ig": eap_ig, "acdc": acdc, "edge-pruning": edge_pruning}


def run_method(name: str, model, data, ablation: str = "interchange", **options) -> MethodResult:
    """Run a method by name (see METHODS) with its own options (e.g. `threshold` for ACDC)."""
    try:
        fn = METHODS[name]
    except KeyError:
        raise EpverifyError(f"unknown method {name!r}: choose one of {', '.join(METHODS)}") from None
    return fn(model, data, ablation, **options)


__all__ = ["METHODS", "MethodResult", "acdc", "circuit_from_mask", "eap", "eap_ig", "edge_pruning",
           "run_method"]
