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

from ..adapters.base import Adapter
from ..core import engine, hard_concrete
from ..errors import EpverifyError
from ..io import checkpoint
from ..scale.distributed import Parallel


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
    # Recompute each layer in the backward instead of keeping its activations (large models; see epverify.scale.memory)
    checkpoint_layers: bool = False
    # Sample an independent mask for every example of the batch (same objective, lower-variance gradient);
    # False: one mask per step, shared by the batch.
    per_example_masks: bool = False
    # How the faithfulness gradient reaches the log-alphas: "pathwise" (backpropagate through the sampled masks)
    # or "score" (score function of the gate noise: two independent masks per example, each run the other's
    # baseline; no gradient through the model). See docs/recovery.md.
    estimator: str = "pathwise"
    # Score estimator only: an edge receives its faithfulness gradient once the running estimate is this many
    # standard errors from zero (0: always); the running statistics decay by `score_decay` per step.
    score_gate: float = 0.0
    score_decay: float = 0.95
    # Score estimator with a gate only: an edge whose gate is closed is not pushed down by the sparsity term while
    # its running estimate says that keeping it is worth more than that push (rare evidence: docs/recovery.md).
    score_hold: bool = False
    score_samples: int = 2  # independent masks per example (each one's baseline is the mean of the others)
    # Example sampling: 1 draws batches uniformly. Below 1, examples whose output the empty circuit (every edge
    # ablated) already reproduces are drawn this much less often than the others, and every example's loss is
    # importance-weighted so the objective is unchanged. See docs/recovery.md.
    example_focus: float = 1.0
    adam_beta2: float = 0.999  # second-moment decay of the log-alphas' Adam
    # Temperature beta of the hard-concrete gates (DESIGN: 2/3). Lower puts more of each gate's mass at exactly
    # 0 and 1 (the score estimator then explores circuits rather than scaled edges; see docs/recovery.md).
    gate_temperature: float = hard_concrete.BETA
    # Ceiling on the sparsity term's pull on one edge, in units of the faithfulness loss (nats per position for
    # KL): after each ascent step the lambdas are scaled down so that |lambda1 + 2 lambda2 (s - t)| / E stays at or
    # below it (E edges). 0: no ceiling. With a target above 1 the Lagrangian never reaches its target and the price
    # of an edge rises all run (to about 0.5 nats per edge on a 13-edge graph); the ceiling keeps every edge whose
    # removal costs more than this (see docs/recovery.md).
    max_edge_price: float = 0.0

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
        if self.estimator not in ("pathwise", "score"):
            raise EpverifyError(f"unknown estimator {self.estimator!r}: choose pathwise or score")
        if not 0.0 < self.example_focus <= 1.0:
            raise EpverifyError(f"example_focus ({self.example_focus}) must lie in (0, 1]")
        if self.score_samples < 2:
            raise EpverifyError(f"score_samples ({self.score_samples}) must be at least 2")
        if not 0.0 <= self.score_decay < 1.0 or not 0.0 <= self.adam_beta2 < 1.0:
            raise EpverifyError("score_decay and adam_beta2 must lie in [0, 1)")
        if self.score_hold and (self.estimator != "score" or not self.score_gate > 0):
            raise EpverifyError("score_hold acts on the score estimator's gate: set estimator='score' and a"
                                " score_gate above 0, or score_hold=False")
        if not self.max_edge_price >= 0.0:
            raise EpverifyError(f"max_edge_price ({self.max_edge_price}) must be 0 (no ceiling) or positive")
        if not 0.0 < self.gate_temperature <= 10.0:
            raise EpverifyError(f"gate_temperature ({self.gate_temperature}) must lie in (0, 10]")
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
        counts = data.loss_mask.sum(1).cpu()
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])

    def _prepare(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float() * self.scale
        return torch.log_softmax(logits, -1) if self.kind == "distribution" else logits

    def full_rows(self, index: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.full[self.offsets[i] : self.offsets[i + 1]] for i in index.tolist()])

    def at_loss(self, logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The outputs at the loss positions (P, V): from logits (B, T, V), or as they are when they are already
        those rows (a masked run given positions=loss_mask, which unembeds nothing else)."""
        return logits if logits.dim() == 2 else logits[self.data.loss_mask[index]]

    def per_example(self, logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Sum over each example's loss positions of KL(full || circuit) (or squared error): shape (B,)."""
        circuit = self._prepare(self.at_loss(logits, index))
        full = self.full_rows(index)
        if self.kind == "distribution":
            rows = (full.exp() * (full - circuit)).sum(-1)
        else:
            rows = ((circuit - full) ** 2).sum(-1)
        counts = self.data.loss_mask[index].sum(1)
        owner = torch.repeat_interleave(torch.arange(len(index), device=counts.device), counts)
        return torch.zeros(len(index), dtype=rows.dtype, device=rows.device).index_add_(0, owner, rows)

    def __call__(self, logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Mean over loss positions of KL(full || circuit), or of the squared error for a numerical output."""
        circuit = self._prepare(self.at_loss(logits, index))
        full = self.full_rows(index)
        if self.kind == "distribution":
            return (full.exp() * (full - circuit)).sum(-1).mean()
        return ((circuit - full) ** 2).sum(-1).mean()


def expected_sparsity(edge_log_alpha: torch.Tensor, node_log_alpha: torch.Tensor | None, edge_writer,
                      beta: float = hard_concrete.BETA) -> torch.Tensor:
    keep = hard_concrete.prob_nonzero(edge_log_alpha, beta)
    if node_log_alpha is not None:
        keep = keep * hard_concrete.prob_nonzero(node_log_alpha, beta)[edge_writer]
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
        self.cache = None
        if ablation == "interchange" and self._cache_bytes() <= CACHE_BYTES:
            # the corrupted runs never change: compute them once and select rows per step
            parts = [self._run(torch.arange(start, min(start + batch_size, len(data))))
                     for start in range(0, len(data), batch_size)]
            self.cache = _cat_records(parts)

    def _cache_bytes(self) -> int:
        a, (n, t) = self.adapter, self.data.input_ids.shape
        per_row = t * (a.d_model * (len(a.embed_names) + 4 * a.n_layers + 2) + a.n_layers * a.n_heads * a.head_dim)
        return n * per_row * 4

    def __call__(self, index: torch.Tensor) -> engine.Record:
        if self.cache is not None:
            return self.cache.select(index)
        return self._run(index)

    def _run(self, index: torch.Tensor) -> engine.Record:
        d = self.data
        corrupted = d.corrupted_ids[index] if d.corrupted_ids is not None else None
        return engine.ablated_record(
            self.adapter, self.ablation, d.input_ids[index], d.attention_mask[index], corrupted, mean=self.mean
        )


class Adam:
    """Adam (Kingma & Ba), the same update as torch.optim.Adam without its import cost (torch.optim pulls in
    torch._dynamo, about 3 s per process) or per-step overhead, which dominate on tiny Tracr models."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8, maximize: bool = False):
        self.params, self.lr, self.betas, self.eps, self.maximize = list(params), lr, betas, eps, maximize
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            g = -p.grad if self.maximize else p.grad
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.addcdiv_(m, (v / c2).sqrt_().add_(self.eps), value=-self.lr / c1)

    def state_dict(self) -> dict:
        return {"m": [m.clone() for m in self.m], "v": [v.clone() for v in self.v], "t": self.t}

    def load_state_dict(self, state: dict) -> None:
        for mine, saved in ((self.m, state["m"]), (self.v, state["v"])):
            for t, s in zip(mine, saved):
                t.copy_(s)
        self.t = state["t"]


CACHE_BYTES = 256 * 2**20  # interchange: keep the corrupted runs of the whole dataset when they fit in this


def _cat_records(parts: list[engine.Record]) -> engine.Record:
    first = parts[0]
    out = {}
    for name in ("attn_in", "heads", "mlp_in", "mlp_out"):
        out[name] = [torch.cat([getattr(p, name)[i] for p in parts]) for i in range(len(getattr(first, name)))]
    logits = None if first.logits is None else torch.cat([p.logits for p in parts])
    return engine.Record(torch.cat([p.embeds for p in parts], dim=1), out["attn_in"], out["heads"], out["mlp_in"],
                         out["mlp_out"], torch.cat([p.final for p in parts]), logits)


def _noise(shape, generator) -> torch.Tensor:
    return torch.rand(shape, generator=generator).clamp(hard_concrete.EPS, 1 - hard_concrete.EPS)


def _score(log_alpha: torch.Tensor, u: torch.Tensor, beta: float) -> torch.Tensor:
    """Score of the gate noise w.r.t. log_alpha: 2u - 1. Rao-Blackwellised: where the gate is clamped (at 1 for
    u >= u1, at 0 for u <= u0) the loss does not depend on u, so 2u - 1 is replaced by its mean over that region
    (u1, resp. u0 - 1). Same expectation, far less noise for gates that are almost always clamped."""
    with torch.no_grad():
        score = 2 * u - 1
        la = log_alpha.detach()
        clamp = beta * math.log(-hard_concrete.RIGHT / hard_concrete.LEFT)  # the pre-activation beyond which a gate is clamped
        u1 = torch.sigmoid(clamp - la).expand_as(u)
        u0 = torch.sigmoid(-clamp - la).expand_as(u)
        score = torch.where(u >= u1, u1, score)
        return torch.where(u <= u0, u0 - 1, score)


class ScoreGradient:
    """Score-function estimate of d E_z[faithfulness] / d log_alpha, with a running significance gate.

    With u ~ U(0, 1), a gate's pre-activation logit(u) + log_alpha is logistic with location log_alpha, whose score
    is 2u - 1 (Rao-Blackwellised where the gate is clamped, see `_score`). Every example of the batch is run
    `score_samples` times with independent masks; a run's loss minus the mean of the example's other runs is its
    advantage (the other runs are independent of it, so the baseline adds no bias), and the mean of
    advantage * score estimates the example's gradient without a backward pass through the model. Only the
    model's output is used, so a loss that is a staircase in the masks (Tracr's discretising MLPs, saturated
    attention) gets the gradient of its expectation, where backpropagating through the sampled masks sees zero.

    Gate: the estimate of an edge that does not matter is zero-mean noise (other edges' gates move the loss), and
    under Adam that noise, not the sparsity term, would set its step. So each coordinate keeps a running mean and
    variance of its estimate (decay `score_decay`), and receives the estimate only while
    |mean| > gate * standard error; otherwise it moves by the sparsity term alone. The gate is a deliberate bias: an
    edge gets no faithfulness gradient until there is evidence that it matters (the gate depends only on past
    steps, so where it is open the estimate is still unbiased).
    """

    def __init__(self, sizes: list[int], config: PruneConfig):
        self.gate, self.decay = config.score_gate, config.score_decay
        self.samples, self.beta = config.score_samples, config.gate_temperature
        self.mean = [torch.zeros(n) for n in sizes]
        self.var = [torch.zeros(n) for n in sizes]
        self.steps = 0
        self.open_fraction = 0.0
        self.closed: list[torch.Tensor] = []  # this step, per tensor: where the gate held the estimate back

    def __call__(self, adapter, data, loss_fn, ablated_for, index, scale, log_alphas, gen):
        """Returns (faithfulness of the sampled circuits, [gradient estimate per log-alpha tensor]).

        `scale` (B,) weighs each example's summed loss so that sum(scale * loss) estimates the faithfulness."""
        b, k = len(index), self.samples
        rows = index.repeat(k)  # sample j of example i is row j * b + i
        noise = [_noise((k * b, la.shape[0]), gen) for la in log_alphas]
        with torch.no_grad():
            masks = [hard_concrete.from_noise(la.detach(), u, self.beta) for la, u in zip(log_alphas, noise)]
            logits = engine.masked_run(adapter, data.input_ids[rows], ablated_for(rows), masks[0],
                                       masks[1] if len(masks) > 1 else None, data.attention_mask[rows],
                                       positions=data.loss_mask[rows])
            per = loss_fn.per_example(logits, rows)  # (k B,) loss summed over each example's positions
            faithfulness = (per.view(k, b) * scale).sum() / k
            per = per.view(k, b)
            baseline = (per.sum(0, keepdim=True) - per) / (k - 1)  # the example's other samples: independent
            advantage = (per - baseline) * scale / k  # (k, B)
            self.steps += 1
            grads, opened, self.closed = [], 0, []
            for j, (la, u) in enumerate(zip(log_alphas, noise)):
                w = _score(la, u, self.beta).view(k, b, -1)
                terms = (advantage[:, :, None] * w).sum(0)  # (B, n): one independent term per example
                grad = terms.sum(0)
                if self.gate > 0:
                    d = self.decay
                    self.mean[j].mul_(d).add_(grad, alpha=1 - d)
                    self.var[j].mul_(d).add_((terms**2).sum(0), alpha=1 - d)
                    correction = 1 - d**self.steps
                    stderr = (self.var[j] / correction * (1 - d) / (1 + d)).sqrt()
                    is_open = (self.mean[j] / correction).abs() > self.gate * stderr
                    grad = grad * is_open
                    opened += int(is_open.sum())
                    self.closed.append(~is_open)
                grads.append(grad)
            self.open_fraction = opened / sum(la.shape[0] for la in log_alphas)
        return faithfulness, grads

    @torch.no_grad()
    def hold(self, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        """After the backward (a log-alpha's gradient is then the estimate passed on plus the sparsity term's):
        zero the gradient of every edge whose gate is closed while its running estimate, though not significant,
        outweighs the sparsity term's push down. Such an edge matters on rare rows (evidence arrives in bursts
        and the gate closes between them); without the hold, Adam moves it down at close to its full step
        whatever the size of the push."""
        correction = 1 - self.decay**self.steps
        for p, g, closed, mean in zip(params, grads, self.closed, self.mean):
            push = p.grad - g  # what the sparsity term alone asks (positive: prune)
            p.grad[closed & (push > 0) & (mean / correction + push < 0)] = 0.0

    def state_dict(self) -> dict:
        return {"mean": self.mean, "var": self.var, "steps": self.steps, "open_fraction": self.open_fraction}

    def load_state_dict(self, state: dict) -> None:
        self.mean = [t.clone() for t in state["mean"]]
        self.var = [t.clone() for t in state["var"]]
        self.steps, self.open_fraction = state["steps"], state["open_fraction"]


class ExampleSampler:
    """Batches of dataset rows and the weights that turn their summed losses into the faithfulness estimate.

    Uniform (example_focus 1): shuffled passes over the data; an example's weight is 1 / (positions in the batch).
    Focused (example_focus < 1): rows are drawn with replacement, those whose output the empty circuit (every edge
    ablated) already reproduces `example_focus` times as often as the others; weights 1 / (B q_i P) (q_i the
    probability of row i, P all loss positions) keep the estimate unbiased. Under interchange ablation many rows
    have a corrupted partner with the same output: they carry no signal, and focusing spends the batch elsewhere.
    """

    def __init__(self, adapter, data, loss_fn, ablated_for, config: PruneConfig, gen: torch.Generator):
        self.data, self.gen, self.batch = data, gen, config.batch_size
        self.positions = data.loss_mask.sum(1).to(torch.float32)
        self.probs = None
        if config.example_focus < 1.0:
            empty = torch.zeros(adapter.graph.num_edges, device=adapter.device)
            losses = []
            with torch.no_grad():
                for start in range(0, len(data), config.batch_size):
                    rows = torch.arange(start, min(start + config.batch_size, len(data)))
                    logits = engine.masked_run(adapter, data.input_ids[rows], ablated_for(rows), empty, None,
                                               data.attention_mask[rows])
                    losses.append(loss_fn.per_example(logits, rows))
            sensitive = torch.cat(losses) > FOCUS_TOLERANCE * self.positions
            weights = torch.where(sensitive, 1.0, config.example_focus)
            self.probs = weights / weights.sum()
            self.focused = float(sensitive.float().mean())
        self.order, self.position = torch.randperm(len(data), generator=gen), 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self.data)
        if self.probs is not None:
            index = torch.multinomial(self.probs, self.batch, replacement=True, generator=self.gen)
            return index, 1.0 / (self.batch * self.probs[index] * self.positions.sum())
        if self.position + min(self.batch, n) > n:
            self.order, self.position = torch.randperm(n, generator=self.gen), 0
        index = self.order[self.position : self.position + self.batch]
        self.position += len(index)
        return index, torch.full((len(index),), 1.0, device=self.positions.device) / self.positions[index].sum()

    def state_dict(self) -> dict:
        return {"order": self.order, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.order, self.position = state["order"].clone(), state["position"]


@torch.no_grad()
def _cap_price(lambdas: torch.Tensor, gap: float, ceiling: float) -> None:
    """Scale the lambdas down so that the sparsity term's slope |lambda1 + 2 lambda2 gap| is at most `ceiling`."""
    slope = abs(float(lambdas[0]) + 2 * float(lambdas[1]) * gap)
    if slope > ceiling:
        lambdas.mul_(ceiling / slope)


FOCUS_TOLERANCE = 1e-6  # an example whose empty-circuit loss per position is below this counts as reproduced


def prune(adapter: Adapter, data: PruneData, config: PruneConfig, progress=None, checkpoint_path=None,
          checkpoint_every: int = 0, resume: bool = False, parallel: Parallel | None = None) -> PruneResult:
    """Train edge (and optionally node) masks; returns the log-alphas, lambdas and the loss history.

    `progress(record)` is called after every step with the step's history record. With `checkpoint_path`, the
    whole training state is written there atomically every `checkpoint_every` steps (epverify.io.checkpoint); with
    `resume`, training continues from that file and ends exactly as an uninterrupted run with the same seed would.
    A non-finite loss stops training with an EpverifyError whose `result` holds the last good state.
    `parallel` (epverify.scale.distributed): this process's share of each batch when several processes run (launched
    by accelerate), whose mask gradients are averaged so that every process keeps the same masks.
    """
    config.validate()
    parallel = Parallel() if parallel is None else parallel
    parallel.check(config)
    if checkpoint_every < 0:
        raise EpverifyError(f"checkpoint_every ({checkpoint_every}) must be 0 (never) or a number of steps")
    if resume and checkpoint_path is None:
        raise EpverifyError("resume needs the checkpoint file to continue from")
    start_time = time.perf_counter()
    graph = adapter.graph
    gen = torch.Generator().manual_seed(config.seed)
    edge_log_alpha = hard_concrete.init_log_alpha(graph.num_edges, gen).to(adapter.device).requires_grad_()
    node_log_alpha = None
    params = [edge_log_alpha]
    if config.node_masks:
        node_log_alpha = hard_concrete.init_log_alpha(len(graph.writers), gen).to(adapter.device).requires_grad_()
        params.append(node_log_alpha)
    lambdas = torch.zeros(2, device=adapter.device, requires_grad=True)
    mask_opt = Adam(params, lr=config.lr, betas=(0.9, config.adam_beta2))
    lambda_opt = Adam([lambdas], lr=config.lambda_lr, maximize=True)
    edge_writer = torch.tensor(graph.edge_writer, device=adapter.device)

    score = ScoreGradient([p.shape[0] for p in params], config) if config.estimator != "pathwise" else None
    loss_fn = Faithfulness(adapter, data, config.batch_size)
    ablated_for = AblationSource(adapter, data, config.ablation, config.batch_size)
    sampler = ExampleSampler(adapter, data, loss_fn, ablated_for, config, gen)
    history: list[dict] = []
    first_step, seconds_before = 0, 0.0
    data_hash = checkpoint.fingerprint(data.input_ids, data.attention_mask, data.loss_mask, data.corrupted_ids)

    def training_state(step: int) -> dict:
        return {
            "step": step, "config": asdict(config), "num_edges": graph.num_edges, "data": data_hash,
            "params": [p.detach().cpu() for p in params], "lambdas": lambdas.detach().cpu(),
            "mask_opt": mask_opt.state_dict(), "lambda_opt": lambda_opt.state_dict(), "generator": gen.get_state(),
            "sampler": sampler.state_dict(), "score": None if score is None else score.state_dict(),
            "history": history, "seconds": seconds_before + time.perf_counter() - start_time,
        }

    if resume:
        state = checkpoint.load(checkpoint_path)
        checkpoint.check_compatible(state, asdict(config), graph.num_edges, data_hash, checkpoint_path)
        with torch.no_grad():
            for p, saved in zip((*params, lambdas), (*state["params"], state["lambdas"])):
                p.copy_(saved)
        mask_opt.load_state_dict(state["mask_opt"])
        lambda_opt.load_state_dict(state["lambda_opt"])
        gen.set_state(state["generator"])
        sampler.load_state_dict(state["sampler"])
        if score is not None:
            score.load_state_dict(state["score"])
        history.extend(state["history"])
        first_step, seconds_before = state["step"], state["seconds"]

    def snapshot() -> PruneResult:
        return PruneResult(
            edge_log_alpha.detach().clone(),
            None if node_log_alpha is None else node_log_alpha.detach().clone(),
            lambdas.detach().clone(),
            history,
            asdict(config),
            seconds_before + time.perf_counter() - start_time,
        )

    for step in range(first_step, config.steps):
        index, scale = sampler.next()

        if score is not None:
            faithfulness, grads = score(adapter, data, loss_fn, ablated_for, index, scale, params, gen)
            surrogate = sum((g * p).sum() for g, p in zip(grads, params))
        else:
            draws = (len(index),) if config.per_example_masks else ()
            beta = config.gate_temperature
            edge_mask = hard_concrete.sample(edge_log_alpha.expand(*draws, -1), gen, beta)
            node_mask = None if node_log_alpha is None else hard_concrete.sample(node_log_alpha.expand(*draws, -1), gen, beta)
            rows = parallel.rows(len(index))  # this process's share of the batch: all of it in one process
            if draws:  # every process draws the whole batch's masks (same generator) and keeps its rows
                edge_mask, node_mask = edge_mask[rows], None if node_mask is None else node_mask[rows]
            index, scale = index[rows], scale[rows]
            logits = engine.masked_run(
                adapter, data.input_ids[index], ablated_for(index), edge_mask, node_mask,
                data.attention_mask[index], checkpoint=config.checkpoint_layers, positions=data.loss_mask[index],
            )
            faithfulness = surrogate = (loss_fn.per_example(logits, index) * scale).sum()
        sparsity = expected_sparsity(edge_log_alpha, node_log_alpha, edge_writer, config.gate_temperature)
        target = config.target_sparsity * min(1.0, (step + 1) / max(1, config.warmup_steps))
        gap = sparsity - target
        loss = parallel.local_objective(surrogate) + lambdas[0] * gap + lambdas[1] * gap**2

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
        faithfulness = parallel.average_gradients([*params, lambdas], faithfulness)
        if config.score_hold:
            score.hold(params, grads)
        last_good = [p.detach().clone() for p in (*params, lambdas)]
        mask_opt.step()
        lambda_opt.step()
        if config.max_edge_price > 0:
            _cap_price(lambdas, gap.detach().item(), config.max_edge_price * graph.num_edges)
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
        if score is not None:
            record["gate_open"] = score.open_fraction
        history.append(record)
        due = checkpoint_every and (step + 1) % checkpoint_every == 0
        if checkpoint_path is not None and due and parallel.is_main:  # one writer when several processes run
            checkpoint.save(checkpoint_path, training_state(step + 1))
        if progress is not None:
            progress(record)
    return snapshot()
