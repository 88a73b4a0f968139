"""How compiled Tracr programs are pruned: their preset and their data, passed to the generic code explicitly.

The preset is `PruneConfig`'s defaults with the fields below replaced (docs/recovery.md says why each value, and
what each one fixed). Tracr models are piecewise constant in the masks, so the gradient comes from the score
function of the gate noise, gated by its running significance; Adam forgets fast (beta2 0.9) so a noise spike does
not freeze an edge; under interchange, rows whose corrupted partner gives the same output are sampled a tenth as
often (importance-weighted).
"""

from __future__ import annotations

from dataclasses import replace

from ..core.dataset import PruneData
from ..train import PruneConfig, ScoreSettings
from .data import dataset
from .model import CompiledModel

# The circuit's last extraction step drops edges the binary circuit does not need (`eval.redundancy`): an edge goes
# when the loss rises by at most this much. The least any ground-truth edge of the zoo is worth is 1.7e-4 nats per
# position (shuffle_dyck2, zero ablation); float noise on a faithful circuit's loss is below 1e-7.
REDUNDANT_TOLERANCE = 1e-6
TRACR_CONFIG = PruneConfig(target_sparsity=1.02, steps=500, warmup_steps=250, lr=0.1, lambda_lr=0.01,
                           batch_size=64, estimator="score", adam_beta2=0.9, example_focus=0.1,
                           score=ScoreSettings(gate=3.0, decay=0.99, samples=2), max_edge_price=0.0,
                           redundancy_tolerance=REDUNDANT_TOLERANCE, redundancy_max_edges=10**9)
# Zero ablation takes away an edge's whole signal, and a circuit's rarely used mechanism is then cheap (a 5-edge
# chain worth 0.036 nats in shuffle_dyck): near-binary gates (temperature 0.1), 4 masks per row, a looser gate and
# a slower descent give such edges their evidence before the pruning pressure reaches them, and the price of one
# edge stops at 1e-4 nats so that it cannot outgrow what an edge of a small graph is worth (docs/recovery.md,
# cause 7; 0.01 until 2026-12-05, when the size ladder's sort_unique_v26_l10 showed truth edges worth 2.2e-4 each).
# It costs about 2.5x the interchange defaults per program.
# Edges that matter on few rows get their evidence in bursts (shuffle_dyck2's `a0.h0 > m0`: 6 of 340 inputs), so
# the gate does not let the price push down an edge whose running estimate outweighs it (`score.hold`).
TRACR_ZERO_CONFIG = replace(TRACR_CONFIG, gate_temperature=0.1, lr=0.05, steps=700, warmup_steps=350,
                            max_edge_price=1e-4, score=ScoreSettings(gate=2.0, decay=0.99, samples=4, hold=True))


def tracr_config(ablation: str) -> PruneConfig:
    """The recovery preset for Tracr programs under this ablation (its `ablation` field set)."""
    return replace(TRACR_ZERO_CONFIG if ablation == "zero" else TRACR_CONFIG, ablation=ablation)


def tracr_data(model: CompiledModel) -> PruneData:
    """The program's dataset as training data: the loss is taken at every real position after BOS."""
    clean, corrupted = dataset(model.dataset, model)
    ids, mask = model.encode(clean)
    corrupted_ids, _ = model.encode(corrupted)
    loss_mask = mask.bool().clone()
    loss_mask[:, 0] = False
    return PruneData(ids, mask, loss_mask, corrupted_ids)
