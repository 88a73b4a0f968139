"""Edge Pruning: train hard-concrete edge masks to stay faithful to the full model at a target sparsity.

Objective per step (DESIGN section 2): faithfulness + lambda1 (s - t) + lambda2 (s - t)^2, where s is the expected
edge sparsity and t ramps linearly from 0 to the target over the warm-up. The log-alphas descend (Adam), the
lambdas ascend (Adam, maximize). Only masks and lambdas train; the model is frozen. Faithfulness is
KL(p_full || p_circuit) at the task's positions for distributions, squared error for a numerical output. The full
model's outputs on the clean inputs are computed once, before training.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch

from . import engine, gates
from .adapters.base import Adapter
from .errors import EpverifyError


@dataclass
class PruneConfig:
    target_sparsity: float = 1.0
    steps: int = 3000
    warmup_steps: int = 2500
    lr: float = 0.8  # log-alphas
    lambda_lr: float = 0.8
    batch_size: int = 32
    ablation: str = "interchange"
    node_masks: bool = False
    seed: int = 0
    # Recompute each layer in the backward instead of keeping its activations (large models; see epverify.memory)
    checkpoint_layers: bool = False
    # Sample an independent mask for every example of the batch (same objective, lower-variance gradient);
    # False: one mask per step, shared by the batch.
    per_example_masks: bool = False
    # How the faithfulness gradient reaches the log-alphas: "pathwise" (backpropagate through the sampled masks)
    # or "score" (score function of the gate noise, two mask samples per example, each the other's baseline).
    estimator: str = "pathwise"
    score_below: float = 3.0
    score_weight: float = 1.0
    rao_blackwell: bool = True
    adam_beta2: float = 0.999

    def validate(self) -> None:
        if not (0.0 <= self.target_sparsity <= 1.5) or math.isnan(self.target_sparsity):
            raise EpverifyError(
                f"target sparsity {self.target_sparsity} is out of range: use a value in [0, 1.5]"
                " (1 prunes every edge the loss allows; values above 1 keep pushing past that)"
            )
        if self.steps < 1 or self.batch_size < 1:
            raise EpverifyError(f"steps ({self.steps}) and batch size ({self.batch_size}) must be at least 1")
        if not 0 <= self.warmup_steps <= self.steps:
            raise EpverifyError(f"warm-up ({self.warmup_steps}) must be between 0 and steps ({self.steps})")
        if self.ablation not in engine.ABLATIONS:
            raise EpverifyError(f"unknown ablation {self.ablation!r}: choose one of {', '.join(engine.ABLATIONS)}")


@dataclass
class PruneData:
    """Clean inputs, their corrupted partners (interchange), and where faithfulness is measured."""

    input_ids: torch.Tensor  # (N, T)
    attention_mask: torch.Tensor  # (N, T), 1 = real token
    loss_mask: torch.Tensor  # (N, T) bool: positions compared with the full model
    corrupted_ids: torch.Tensor | None = None  # (N, T)

    def __post_init__(self) -> None:
        n = self.input_ids.shape[0] if self.input_ids.dim() == 2 else 0
        if n == 0 or self.input_ids.numel() == 0:
            raise EpverifyError("the dataset is empty: give at least one example")
        for name in ("attention_mask", "loss_mask", "corrupted_ids"):
            t = getattr(self, name)
            if t is not None and t.shape != self.input_ids.shape:
                raise EpverifyError(
                    f"{name} has shape {tuple(t.shape)} but the clean inputs are {tuple(self.input_ids.shape)}:"
                    " clean and corrupted batches must have the same shape"
                )
        if not self.loss_mask.any():
            raise EpverifyError("no position is marked for the loss: loss_mask is all False")

    def __len__(self) -> int:
        return self.input_ids.shape[0]


@dataclass
class PruneResult:
    edge_log_alpha: torch.Tensor
    node_log_alpha: torch.Tensor | None
    lambdas: torch.Tensor
    history: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    seconds: float = 0.0


class Faithfulness:
    """The loss that keeps a circuit close to the full model, with the full model's side computed once."""

    def __init__(self, adapter: Adapter, data: PruneData, batch_size: int):
        self.kind = adapter.output_kind
        self.scale = adapter.output_scale
        self.data = data
        rows = []
        with torch.no_grad():
            for start in range(0, len(data), batch_size):
                sl = slice(start, start + batch_size)
                logits = engine.forward(adapter, data.input_ids[sl], data.attention_mask[sl])
                rows.append(self._prepare(logits[data.loss_mask[sl]]))
        self.full = torch.cat(rows)  # (P, V): full model at every loss position, example-major
        counts = data.loss_mask.sum(1)
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])

    def _prepare(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float() * self.scale
        return torch.log_softmax(logits, -1) if self.kind == "distribution" else logits

    def full_rows(self, index: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.full[self.offsets[i] : self.offsets[i + 1]] for i in index.tolist()])

    def per_example(self, logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Sum over each example's loss positions of KL(full || circuit) (or squared error): shape (B,)."""
        circuit = self._prepare(logits[self.data.loss_mask[index]])
        full = self.full_rows(index)
        if self.kind == "distribution":
            rows = (full.exp() * (full - circuit)).sum(-1)
        else:
            rows = ((circuit - full) ** 2).sum(-1)
        owner = torch.repeat_interleave(torch.arange(len(index)), self.data.loss_mask[index].sum(1))
        return torch.zeros(len(index), dtype=rows.dtype).index_add_(0, owner, rows)

    def __call__(self, logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Mean over loss positions of KL(full || circuit), or of the squared error for a numerical output."""
        circuit = self._prepare(logits[self.data.loss_mask[index]])
        full = self.full_rows(index)
        if self.kind == "distribution":
            return (full.exp() * (full - circuit)).sum(-1).mean()
        return ((circuit - full) ** 2).sum(-1).mean()


def expected_sparsity(edge_log_alpha: torch.Tensor, node_log_alpha: torch.Tensor | None, edge_writer) -> torch.Tensor:
    keep = gates.prob_nonzero(edge_log_alpha)
    if node_log_alpha is not None:
        keep = keep * gates.prob_nonzero(node_log_alpha)[edge_writer]
    return 1.0 - keep.mean()


class AblationSource:
    """Gives the ablated Record for a batch of dataset rows."""

    def __init__(self, adapter: Adapter, data: PruneData, ablation: str, batch_size: int):
        self.adapter, self.data, self.ablation = adapter, data, ablation
        if ablation == "interchange" and data.corrupted_ids is None:
            raise EpverifyError("interchange ablation needs corrupted inputs; this dataset has none")
        self.mean = None
        if ablation == "mean":
            records, masks = [], []
            for start in range(0, len(data), batch_size):
                sl = slice(start, start + batch_size)
                records.append(engine.full_run(adapter, data.input_ids[sl], data.attention_mask[sl]))
                masks.append(data.attention_mask[sl])
            self.mean = engine.mean_record(records, masks)

    def __call__(self, index: torch.Tensor) -> engine.Record:
        d = self.data
        corrupted = d.corrupted_ids[index] if d.corrupted_ids is not None else None
        return engine.ablated_record(
            self.adapter, self.ablation, d.input_ids[index], d.attention_mask[index], corrupted, mean=self.mean
        )


def _noise(shape, generator) -> torch.Tensor:
    return torch.rand(shape, generator=generator).clamp(gates.EPS, 1 - gates.EPS)


def _gate(log_alpha: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / gates.BETA)
    return (s * (gates.RIGHT - gates.LEFT) + gates.LEFT).clamp(0.0, 1.0)


_CLAMP = gates.BETA * math.log(-gates.RIGHT / gates.LEFT)  # the pre-activation beyond which a gate is clamped


def _score(log_alpha: torch.Tensor, u: torch.Tensor, rao_blackwell: bool = True) -> torch.Tensor:
    """Score of the gate noise w.r.t. log_alpha: 2u - 1. Rao-Blackwellised: where the gate is clamped (at 1 for
    u >= u1, at 0 for u <= u0) the loss does not depend on u, so 2u - 1 is replaced by its mean over that region
    (u1, resp. u0 - 1). Same expectation, far less noise for gates that are almost always clamped."""
    with torch.no_grad():
        score = 2 * u - 1
        if not rao_blackwell:
            return score
        la = log_alpha.detach()
        u1 = torch.sigmoid(_CLAMP - la).expand_as(u)
        u0 = torch.sigmoid(-_CLAMP - la).expand_as(u)
        score = torch.where(u >= u1, u1, score)
        return torch.where(u <= u0, u0 - 1, score)


def _score_step(adapter, data, loss_fn, ablated, index, edge_log_alpha, node_log_alpha, gen, config):
    """Score-function estimate of d E_z[faithfulness] / d log_alpha; returns (faithfulness, surrogate).

    With u ~ U(0, 1), the gate's pre-activation logit(u) + log_alpha is logistic with location log_alpha, whose
    score is tanh(logit(u) / 2) = 2u - 1. Each example is run with two independent masks; each run's loss minus
    the other's is the advantage, so the estimate is unbiased and needs no gradient through the model.
    """
    b = len(index)
    twice = torch.cat([index, index])
    u_edge = _noise((2 * b, edge_log_alpha.shape[0]), gen)
    u_node = None if node_log_alpha is None else _noise((2 * b, node_log_alpha.shape[0]), gen)
    hybrid = config.estimator == "hybrid"
    with torch.set_grad_enabled(hybrid):
        edge_mask = _gate(edge_log_alpha, u_edge)
        node_mask = None if u_node is None else _gate(node_log_alpha, u_node)
        both = ablated.map(lambda t: torch.cat([t, t], dim=0) if t.dim() else t)
        both.embeds = torch.cat([ablated.embeds, ablated.embeds], dim=1)
        logits = engine.masked_run(adapter, data.input_ids[twice], both, edge_mask, node_mask,
                                   data.attention_mask[twice])
        per = loss_fn.per_example(logits, twice)  # (2B,)
        positions = data.loss_mask[index].sum() * 2
        faithfulness = per.sum() / positions
    with torch.no_grad():
        advantage = (per - per.roll(b)) / positions  # the other sample of the same example is the baseline
        w_edge = advantage @ _score(edge_log_alpha, u_edge, config.rao_blackwell)
        if hybrid:
            w_edge = w_edge * (edge_log_alpha < config.score_below).float() * config.score_weight
    surrogate = w_edge @ edge_log_alpha
    if hybrid:
        surrogate = surrogate + faithfulness
    if node_log_alpha is not None:
        surrogate = surrogate + (advantage @ _score(node_log_alpha, u_node, config.rao_blackwell)) @ node_log_alpha
    return faithfulness.detach(), surrogate


def prune(adapter: Adapter, data: PruneData, config: PruneConfig, progress=None) -> PruneResult:
    """Train edge (and optionally node) masks; returns the log-alphas, lambdas and the loss history.

    A non-finite loss stops training with an EpverifyError whose `result` holds the last good state.
    """
    config.validate()
    start_time = time.perf_counter()
    graph = adapter.graph
    gen = torch.Generator().manual_seed(config.seed)
    edge_log_alpha = gates.init_log_alpha(graph.num_edges, gen).to(adapter.device).requires_grad_()
    node_log_alpha = None
    params = [edge_log_alpha]
    if config.node_masks:
        node_log_alpha = gates.init_log_alpha(len(graph.writers), gen).to(adapter.device).requires_grad_()
        params.append(node_log_alpha)
    lambdas = torch.zeros(2, device=adapter.device, requires_grad=True)
    mask_opt = torch.optim.Adam(params, lr=config.lr, betas=(0.9, config.adam_beta2))
    lambda_opt = torch.optim.Adam([lambdas], lr=config.lambda_lr, maximize=True)
    edge_writer = torch.tensor(graph.edge_writer, device=adapter.device)

    loss_fn = Faithfulness(adapter, data, config.batch_size)
    ablated_for = AblationSource(adapter, data, config.ablation, config.batch_size)
    n = len(data)
    order = torch.randperm(n, generator=gen)
    position = 0
    history: list[dict] = []

    def snapshot() -> PruneResult:
        return PruneResult(
            edge_log_alpha.detach().clone(),
            None if node_log_alpha is None else node_log_alpha.detach().clone(),
            lambdas.detach().clone(),
            history,
            asdict(config),
            time.perf_counter() - start_time,
        )

    for step in range(config.steps):
        if position + min(config.batch_size, n) > n:
            order, position = torch.randperm(n, generator=gen), 0
        index = order[position : position + config.batch_size]
        position += len(index)
        ablated = ablated_for(index)

        if config.estimator in ("score", "hybrid"):
            faithfulness, surrogate = _score_step(adapter, data, loss_fn, ablated, index, edge_log_alpha,
                                                  node_log_alpha, gen, config)
        else:
            draws = (len(index),) if config.per_example_masks else ()
            edge_mask = gates.sample(edge_log_alpha.expand(*draws, -1), gen)
            node_mask = None if node_log_alpha is None else gates.sample(node_log_alpha.expand(*draws, -1), gen)
            logits = engine.masked_run(
                adapter, data.input_ids[index], ablated, edge_mask, node_mask, data.attention_mask[index],
                checkpoint=config.checkpoint_layers,
            )
            faithfulness = surrogate = loss_fn(logits, index)
        sparsity = expected_sparsity(edge_log_alpha, node_log_alpha, edge_writer)
        target = config.target_sparsity * min(1.0, (step + 1) / max(1, config.warmup_steps))
        gap = sparsity - target
        loss = surrogate + lambdas[0] * gap + lambdas[1] * gap**2

        if not torch.isfinite(loss):
            err = EpverifyError(
                f"the loss became {loss.item()} at step {step}: training stopped and the last good masks were kept;"
                " lower the learning rate or check the inputs and the model for NaN/inf"
            )
            err.result = snapshot()
            raise err
        mask_opt.zero_grad()
        lambda_opt.zero_grad()
        loss.backward()
        last_good = [p.detach().clone() for p in (*params, lambdas)]
        mask_opt.step()
        lambda_opt.step()
        if not all(torch.isfinite(p).all() for p in (*params, lambdas)):
            with torch.no_grad():
                for p, good in zip((*params, lambdas), last_good):
                    p.copy_(good)
            err = EpverifyError(
                f"the masks became non-finite at step {step + 1}: training stopped and the last good masks were"
                " kept; lower the learning rate"
            )
            err.result = snapshot()
            raise err

        record = {
            "step": step + 1,
            "loss": (faithfulness + lambdas[0] * gap + lambdas[1] * gap**2).item(),
            "faithfulness": faithfulness.item(),
            "sparsity": sparsity.item(),
            "target": target,
            "lambda1": lambdas[0].item(),
            "lambda2": lambdas[1].item(),
        }
        history.append(record)
        if progress is not None:
            progress(record)
    return snapshot()
