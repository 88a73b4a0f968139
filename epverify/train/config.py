"""The settings of a pruning run: one dataclass, one source of defaults.

`PruneConfig()`'s field defaults are the defaults everywhere: `epverify prune` reads its flag defaults from them
(`epverify.cli.options`), and `prune(adapter, data)` uses them. Presets for particular models (the compiled Tracr
programs: `epverify.tracr.policy`) are `PruneConfig`s built from these with a few fields replaced, passed in
explicitly by whoever runs them. Settings read by one estimator only sit in that estimator's nested dataclass
(`score`); every other field acts on every run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace

from ..core import hard_concrete
from ..core.engine import ABLATIONS
from ..errors import EpverifyError

ESTIMATORS = ("pathwise", "score")
INIT_FROM = ("", "eap", "eap-ig")  # where the log-alphas start: the usual N(10, 0.01), or attribution scores
WARMUP_FRACTION = 5 / 6  # the warm-up's share of the steps when it is not given
# What a setting was before it existed, where its default is not that: a checkpoint written then ran without it.
BEFORE_IT_EXISTED = {"max_edge_price": 0.0, "sparsity_constraint": "exact"}
SPARSITY_CONSTRAINTS = ("at_least", "exact")  # how the target binds: PruneConfig.sparsity_constraint
# Settings that change how much memory a step takes, not what it computes: a run may resume with other values
# (e.g. micro-batches after running out of memory).
MEMORY_ONLY = ("micro_batch_size", "checkpoint_layers")


@dataclass
class ScoreSettings:
    """Read by the score estimator only (`estimator="score"`; docs/recovery.md)."""

    # An edge receives its faithfulness gradient once its running estimate is this many standard errors from zero
    # (0: always); the running statistics decay by `decay` per step.
    gate: float = 0.0
    decay: float = 0.95
    # With a gate: an edge whose gate is closed is not pushed down by the sparsity term while its running estimate
    # says that keeping it is worth more than that push (rare evidence arrives in bursts).
    hold: bool = False
    samples: int = 2  # independent masks per example (each one's baseline is the mean of the others)


@dataclass
class PruneConfig:
    """Everything a pruning run is configured by (docs/design.md, "Training")."""

    # The fraction of edges to remove, reached by the end of the warm-up. 0.95 keeps 5% of the edges; above 1 the
    # sparsity term never stops pushing, so only what the faithfulness loss defends survives.
    target_sparsity: float = 0.95
    steps: int = 3000
    warmup_steps: int | None = None  # steps over which the target ramps up; None: 5/6 of the steps (2,500 of 3,000)
    lr: float = 0.8  # log-alphas
    lambda_lr: float = 0.8
    batch_size: int = 32
    # Rows run in one pass (0: the whole batch at once). Smaller runs the step's rows in parts with the same sampled
    # masks, adding up their gradients before the optimizer step: the same step with less activation memory.
    micro_batch_size: int = 0
    ablation: str = "interchange"
    node_masks: bool = False
    seed: int = 0
    # Recompute each layer in the backward instead of keeping its activations (large models; epverify.scale.memory)
    checkpoint_layers: bool = False
    # Sample an independent mask for every example of the batch (same objective, lower-variance gradient);
    # False: one mask per step, shared by the batch.
    per_example_masks: bool = False
    # How the faithfulness gradient reaches the log-alphas: "pathwise" (backpropagate through the sampled masks)
    # or "score" (score function of the gate noise; no gradient through the model). See docs/recovery.md.
    estimator: str = "pathwise"
    score: ScoreSettings = field(default_factory=ScoreSettings)
    # Example sampling: 1 draws batches uniformly. Below 1, examples whose output the empty circuit (every edge
    # ablated) already reproduces are drawn this much less often than the others, and every example's loss is
    # importance-weighted so the objective is unchanged.
    example_focus: float = 1.0
    adam_beta2: float = 0.999  # second-moment decay of the log-alphas' Adam
    # Temperature beta of the hard-concrete gates (2/3). Lower puts more of each gate's mass at exactly 0 and 1.
    gate_temperature: float = hard_concrete.BETA
    # Ceiling on the sparsity term's pull on one edge, in units of the faithfulness loss (nats per position for
    # KL): after each ascent step the lambdas are scaled down so that |lambda1 + 2 lambda2 (s - t)| / E stays at or
    # below it (E edges). 0: no ceiling. With a target above 1 the price of an edge otherwise rises all run, until
    # it passes what any edge is worth; with a target below 1 it binds only when holding the target would price
    # edges above it (then the run warns that its sparsity ended short of the target). docs/recovery.md.
    max_edge_price: float = 0.01
    # Log-alphas are kept within [-bound, bound] after each step (0: unbounded, the default). Past about 10 a gate is
    # open (or shut) on every sample and its sparsity gradient falls below Adam's epsilon, so an edge that drifted
    # there stays whatever the objective later says: an edge no output needs, pushed up while the sparsity ran
    # ahead of its ramp, then outranks the circuit. A bound of 10 frees such edges but also exposes edges whose
    # pathwise gradient is weak to the pruning pressure: docs/recovery.md, "Trained models", has both measured.
    log_alpha_bound: float = 0.0
    # How the target binds. "at_least" (the default since 2026-12-05): the target is a floor; while the expected
    # sparsity is past it the term and the lambdas' gradient are zero, so only the faithfulness loss moves an edge.
    # "exact" (the paper's form, and every run before): the sparsity is held at the target from both sides, so when
    # it runs ahead of the ramp every edge is pushed back up, and an edge no output needs can end saturated above
    # the circuit (the trained models' ROC AUC: docs/recovery.md, "Trained models").
    sparsity_constraint: str = "at_least"
    # Extraction's last step (`eval.extraction`): in ascending order of log-alpha, drop each kept edge the binary
    # circuit does not need while its loss rises by at most this much in all (nats per position; 0: no pass), for
    # circuits of at most `redundancy_max_edges` edges (its last pass runs the model once per kept edge).
    redundancy_tolerance: float = 1e-3
    redundancy_max_edges: int = 500
    # Warm start: "" starts every log-alpha at N(10, 0.01) (every mask open); "eap" or "eap-ig" starts them from
    # that method's attribution scores on the training data (`hard_concrete.warm_log_alpha`: the edges above the
    # target's quantile open, the rest shut, graded by rank; docs/method.md).
    init_from: str = ""

    def __post_init__(self) -> None:
        if self.warmup_steps is None:
            self.warmup_steps = int(self.steps * WARMUP_FRACTION)

    def validate(self) -> None:
        """Raise an EpverifyError naming the first setting out of range."""
        if not (0.0 <= self.target_sparsity <= 1.5) or math.isnan(self.target_sparsity):
            raise EpverifyError(
                f"target sparsity {self.target_sparsity} is out of range: use a value in [0, 1.5]"
                " (1 prunes every edge the loss allows; values above 1 keep pushing past that)"
            )
        if self.steps < 1 or self.batch_size < 1:
            raise EpverifyError(f"steps ({self.steps}) and batch size ({self.batch_size}) must be at least 1")
        if not 0 <= self.warmup_steps <= self.steps:
            raise EpverifyError(f"warm-up ({self.warmup_steps}) must be between 0 and steps ({self.steps})")
        for name in ("lr", "lambda_lr"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise EpverifyError(f"{name} ({value}) must be a number >= 0 (0 freezes it), e.g. "
                                    f"{getattr(PruneConfig, name)}")
        if self.micro_batch_size < 0:
            raise EpverifyError(f"micro_batch_size ({self.micro_batch_size}) must be 0 (the whole batch in one pass)"
                                " or a number of rows")
        if self.micro_batch_size and self.estimator != "pathwise":
            raise EpverifyError("micro-batches split the backward through the model, which only the pathwise"
                                " estimator runs: drop micro_batch_size or use estimator='pathwise'")
        if self.estimator not in ESTIMATORS:
            raise EpverifyError(f"unknown estimator {self.estimator!r}: choose pathwise or score")
        if not 0.0 < self.example_focus <= 1.0:
            raise EpverifyError(f"example_focus ({self.example_focus}) must lie in (0, 1]")
        if self.score.samples < 2:
            raise EpverifyError(f"score.samples ({self.score.samples}) must be at least 2")
        if not 0.0 <= self.score.decay < 1.0 or not 0.0 <= self.adam_beta2 < 1.0:
            raise EpverifyError("score.decay and adam_beta2 must lie in [0, 1)")
        if self.score.hold and (self.estimator != "score" or not self.score.gate > 0):
            raise EpverifyError("the score estimator's hold (score_hold) acts on its gate: set estimator='score'"
                                " and a score gate above 0, or hold=False")
        if not self.log_alpha_bound >= 0.0:
            raise EpverifyError(f"log_alpha_bound ({self.log_alpha_bound}) must be 0 (unbounded) or positive")
        if not self.max_edge_price >= 0.0:
            raise EpverifyError(f"max_edge_price ({self.max_edge_price}) must be 0 (no ceiling) or positive")
        if not self.redundancy_tolerance >= 0.0 or self.redundancy_max_edges < 0:
            raise EpverifyError(f"redundancy_tolerance ({self.redundancy_tolerance}) and redundancy_max_edges"
                                f" ({self.redundancy_max_edges}) must be 0 (no pass) or positive")
        if not 0.0 < self.gate_temperature <= 10.0:
            raise EpverifyError(f"gate_temperature ({self.gate_temperature}) must lie in (0, 10]")
        if self.sparsity_constraint not in SPARSITY_CONSTRAINTS:
            raise EpverifyError(f"unknown sparsity_constraint {self.sparsity_constraint!r}: choose"
                                f" {' or '.join(SPARSITY_CONSTRAINTS)}")
        if self.init_from not in INIT_FROM:
            raise EpverifyError(f"unknown init_from {self.init_from!r}: choose eap, eap-ig or '' (no warm start)")
        if self.ablation not in ABLATIONS:
            raise EpverifyError(f"unknown ablation {self.ablation!r}: choose one of {', '.join(ABLATIONS)}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> PruneConfig:
        """A config from `to_dict`'s output, or from a checkpoint written before the score estimator's settings
        were nested (flat `score_gate`, ...); a field missing from `values` takes the value that runs had before
        it existed (`BEFORE_IT_EXISTED`), else its default."""
        values = {**BEFORE_IT_EXISTED, **values}
        score = dict(values.pop("score", None) or {})
        for name in (f.name for f in fields(ScoreSettings)):
            if f"score_{name}" in values:
                score[name] = values.pop(f"score_{name}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise EpverifyError(f"unknown prune setting(s) {', '.join(unknown)}: known are {', '.join(sorted(known))}")
        return replace(cls(**values), score=ScoreSettings(**score))
