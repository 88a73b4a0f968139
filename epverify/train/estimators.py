"""How the faithfulness gradient reaches the log-alphas: two estimators behind one interface.

An estimator is called once per step with the batch's rows and their weights and returns the faithfulness of the
sampled circuits and a surrogate whose gradient with respect to the log-alphas is the estimate:

    faithfulness, surrogate = estimator(params, index, scale, generator)

- `Pathwise` (the default; the paper's): sample hard-concrete masks and backpropagate through them and the model.
  The surrogate is the faithfulness itself.
- `Score`: the score function of the gate noise, with no gradient through the model (docs/recovery.md). It needs
  only the model's outputs, so a loss that is a staircase in the masks (compiled Tracr programs) still gets the
  gradient of its expectation. Its settings are `PruneConfig.score`.
"""

from __future__ import annotations

import math

import torch

from ..core import hard_concrete
from ..eval.evaluator import Evaluator
from .config import PruneConfig


class Estimator:
    """The interface (module docstring); `after_backward` may adjust the gradients before the optimizer step."""

    def __call__(self, params: list[torch.Tensor], index: torch.Tensor, scale: torch.Tensor,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def after_backward(self, params: list[torch.Tensor]) -> None:
        """Called between the backward and the optimizer step."""

    def record(self) -> dict:
        """What this estimator adds to a step's history record."""
        return {}

    def state_dict(self) -> dict | None:
        return None

    def load_state_dict(self, state: dict | None) -> None:
        """Restore what `state_dict` returned (nothing for a stateless estimator)."""


class Pathwise(Estimator):
    """Backpropagate the faithfulness through masks sampled from the gates (one per step, or one per example)."""

    def __init__(self, evaluator: Evaluator, config: PruneConfig, parallel):
        self.evaluator, self.config, self.parallel = evaluator, config, parallel

    def __call__(self, params, index, scale, gen):
        config = self.config
        draws = (len(index),) if config.per_example_masks else ()
        beta = config.gate_temperature
        edge_mask = hard_concrete.sample(params[0].expand(*draws, -1), gen, beta)
        node_mask = hard_concrete.sample(params[1].expand(*draws, -1), gen, beta) if len(params) > 1 else None
        rows = self.parallel.rows(len(index))  # this process's share of the batch: all of it in one process
        if draws:  # every process draws the whole batch's masks (same generator) and keeps its rows
            edge_mask, node_mask = edge_mask[rows], None if node_mask is None else node_mask[rows]
        index, scale = index[rows], scale[rows]
        size = config.micro_batch_size
        if not size or size >= len(index):
            faithfulness = self._faithfulness(edge_mask, node_mask, index, scale)
            return faithfulness, faithfulness
        # Micro-batches: the masks are sampled once, above; each part's backward stops at a detached copy of them
        # (its activations are freed before the next part runs) and adds up there. The surrogate then carries the
        # summed gradient from the masks on to the log-alphas: d(sum m * g)/d(log-alpha) = g * dm/d(log-alpha).
        masks = [m for m in (edge_mask, node_mask) if m is not None]
        leaves = [m.detach().requires_grad_() for m in masks]
        faithfulness = torch.zeros((), device=masks[0].device)
        for part in torch.arange(len(index)).split(size):
            picked = [leaf[part] if draws else leaf for leaf in leaves]
            value = self._faithfulness(picked[0], picked[1] if len(picked) > 1 else None, index[part], scale[part])
            value.backward()
            faithfulness = faithfulness + value.detach().to(faithfulness.device)
        surrogate = sum((m * leaf.grad).sum() for m, leaf in zip(masks, leaves) if leaf.grad is not None)
        return faithfulness, surrogate

    def _faithfulness(self, edge_mask, node_mask, index, scale) -> torch.Tensor:
        outputs = self.evaluator.run(edge_mask, index, node_mask, checkpoint=self.config.checkpoint_layers)
        return (self.evaluator.loss_per_row(outputs, index) * scale.to(outputs.device)).sum()


def _noise(shape, generator, device) -> torch.Tensor:
    # drawn on the CPU generator, then moved: the same seed gives the same masks on every device
    return torch.rand(shape, generator=generator).clamp(hard_concrete.EPS, 1 - hard_concrete.EPS).to(device)


def _score(log_alpha: torch.Tensor, u: torch.Tensor, beta: float) -> torch.Tensor:
    """Score of the gate noise w.r.t. log_alpha: 2u - 1. Rao-Blackwellised: where the gate is clamped (at 1 for
    u >= u1, at 0 for u <= u0) the loss does not depend on u, so 2u - 1 is replaced by its mean over that region
    (u1, resp. u0 - 1). Same expectation, far less noise for gates that are almost always clamped."""
    with torch.no_grad():
        score = 2 * u - 1
        la = log_alpha.detach()
        clamp = beta * math.log(-hard_concrete.RIGHT / hard_concrete.LEFT)  # pre-activation where a gate clamps
        u1 = torch.sigmoid(clamp - la).expand_as(u)
        u0 = torch.sigmoid(-clamp - la).expand_as(u)
        score = torch.where(u >= u1, u1, score)
        return torch.where(u <= u0, u0 - 1, score)


class Score(Estimator):
    """Score-function estimate of d E_z[faithfulness] / d log_alpha, with a running significance gate.

    With u ~ U(0, 1), a gate's pre-activation logit(u) + log_alpha is logistic with location log_alpha, whose score
    is 2u - 1 (Rao-Blackwellised where the gate is clamped, see `_score`). Every example of the batch is run
    `score.samples` times with independent masks; a run's loss minus the mean of the example's other runs is its
    advantage (the other runs are independent of it, so the baseline adds no bias), and the mean of
    advantage * score estimates the example's gradient without a backward pass through the model.

    Gate: the estimate of an edge that does not matter is zero-mean noise (other edges' gates move the loss), and
    under Adam that noise, not the sparsity term, would set its step. So each coordinate keeps a running mean and
    variance of its estimate (decay `score.decay`), and receives the estimate only while
    |mean| > gate * standard error; otherwise it moves by the sparsity term alone. The gate is a deliberate bias: an
    edge gets no faithfulness gradient until there is evidence that it matters (the gate depends only on past
    steps, so where it is open the estimate is still unbiased).
    """

    def __init__(self, evaluator: Evaluator, config: PruneConfig, sizes: list[int]):
        self.evaluator = evaluator
        settings = config.score
        self.gate, self.decay, self.samples = settings.gate, settings.decay, settings.samples
        self.hold_on, self.beta = settings.hold, config.gate_temperature
        device = evaluator.adapter.device
        self.mean = [torch.zeros(n, device=device) for n in sizes]
        self.var = [torch.zeros(n, device=device) for n in sizes]
        self.steps = 0
        self.open_fraction = 0.0
        self.closed: list[torch.Tensor] = []  # this step, per tensor: where the gate held the estimate back
        self.grads: list[torch.Tensor] = []  # this step's estimates, passed on as the surrogate's gradient

    def __call__(self, params, index, scale, gen):
        b, k = len(index), self.samples
        rows = index.repeat(k)  # sample j of example i is row j * b + i
        device = params[0].device
        noise = [_noise((k * b, la.shape[0]), gen, device) for la in params]
        with torch.no_grad():
            masks = [hard_concrete.from_noise(la.detach(), u, self.beta) for la, u in zip(params, noise)]
            outputs = self.evaluator.run(masks[0], rows, masks[1] if len(masks) > 1 else None)
            per = self.evaluator.loss_per_row(outputs, rows).view(k, b)  # each example's loss, per sample
            scale = scale.to(per.device)
            faithfulness = (per * scale).sum() / k
            baseline = (per.sum(0, keepdim=True) - per) / (k - 1)  # the example's other samples: independent
            advantage = (per - baseline) * scale / k  # (k, B)
            self.steps += 1
            self.grads = [self._estimate(j, la, u, advantage) for j, (la, u) in enumerate(zip(params, noise))]
            if self.gate > 0:
                opened = sum(int((~closed).sum()) for closed in self.closed)
                self.open_fraction = opened / sum(la.shape[0] for la in params)
        surrogate = sum((g * p).sum() for g, p in zip(self.grads, params))
        return faithfulness, surrogate

    def _estimate(self, j: int, log_alpha, u, advantage) -> torch.Tensor:
        """This step's estimate for log-alpha tensor j, through the gate."""
        k, b = advantage.shape
        w = _score(log_alpha, u, self.beta).view(k, b, -1)
        terms = (advantage[:, :, None] * w).sum(0)  # (B, n): one independent term per example
        grad = terms.sum(0)
        if self.gate <= 0:
            return grad
        if j == 0:
            self.closed = []
        d = self.decay
        self.mean[j].mul_(d).add_(grad, alpha=1 - d)
        self.var[j].mul_(d).add_((terms**2).sum(0), alpha=1 - d)
        correction = 1 - d**self.steps
        stderr = (self.var[j] / correction * (1 - d) / (1 + d)).sqrt()
        is_open = (self.mean[j] / correction).abs() > self.gate * stderr
        self.closed.append(~is_open)
        return grad * is_open

    @torch.no_grad()
    def after_backward(self, params: list[torch.Tensor]) -> None:
        """With `hold`: after the backward (a log-alpha's gradient is then the estimate passed on plus the sparsity
        term's), zero the gradient of every edge whose gate is closed while its running estimate, though not
        significant, outweighs the sparsity term's push down. Such an edge matters on rare rows (evidence arrives
        in bursts and the gate closes between them); without the hold, Adam moves it down at close to its full
        step whatever the size of the push."""
        if not self.hold_on:
            return
        correction = 1 - self.decay**self.steps
        for p, g, closed, mean in zip(params, self.grads, self.closed, self.mean):
            push = p.grad - g  # what the sparsity term alone asks (positive: prune)
            p.grad[closed & (push > 0) & (mean / correction + push < 0)] = 0.0

    def record(self) -> dict:
        return {"gate_open": self.open_fraction}

    def state_dict(self) -> dict:
        return {"mean": self.mean, "var": self.var, "steps": self.steps, "open_fraction": self.open_fraction}

    def load_state_dict(self, state: dict) -> None:
        device = self.mean[0].device
        self.mean = [t.clone().to(device) for t in state["mean"]]
        self.var = [t.clone().to(device) for t in state["var"]]
        self.steps, self.open_fraction = state["steps"], state["open_fraction"]


def make_estimator(config: PruneConfig, evaluator: Evaluator, sizes: list[int], parallel) -> Estimator:
    """The estimator `config.estimator` names."""
    if config.estimator == "score":
        return Score(evaluator, config, sizes)
    return Pathwise(evaluator, config, parallel)
