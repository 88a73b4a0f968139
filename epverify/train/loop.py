"""Edge Pruning's training loop: hard-concrete edge masks trained to stay faithful at a target sparsity.

Objective per step (docs/design.md, "The method"): faithfulness + lambda1 (s - t) + lambda2 (s - t)^2. The
log-alphas descend (Adam), the lambdas ascend (Adam, maximize). Only masks and lambdas train; the model is frozen.
The faithfulness and its gradient come from the estimator, measured by the evaluator, which computes the full
model's outputs once.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from ..adapters.base import Adapter
from ..core import hard_concrete
from ..core.dataset import PruneData
from ..errors import EpverifyError
from ..eval.evaluator import Evaluator
from ..io import checkpoint
from ..scale.distributed import Parallel
from .config import PruneConfig
from .estimators import make_estimator
from .objective import SparsityTerm
from .optim import Adam
from .sampling import ExampleSampler


@dataclass
class PruneResult:
    edge_log_alpha: torch.Tensor
    node_log_alpha: torch.Tensor | None
    lambdas: torch.Tensor
    history: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    seconds: float = 0.0


def prune(adapter: Adapter, data: PruneData, config: PruneConfig | None = None, progress=None,
          checkpoint_path=None, checkpoint_every: int = 0, resume: bool = False,
          parallel: Parallel | None = None) -> PruneResult:
    """Train edge (and optionally node) masks; returns the log-alphas, lambdas and the loss history.

    `progress(record)` is called after every step with the step's history record. With `checkpoint_path`, the
    whole training state is written there atomically every `checkpoint_every` steps (epverify.io.checkpoint); with
    `resume`, training continues from that file and ends exactly as an uninterrupted run with the same seed would.
    A non-finite loss stops training with an EpverifyError whose `result` holds the last good state.
    `parallel` (epverify.scale.distributed): this process's share of each batch when several processes run, whose
    mask gradients are averaged so that every process keeps the same masks.
    """
    run = Training(adapter, data, config or PruneConfig(), parallel or Parallel(), checkpoint_every, resume,
                   checkpoint_path)
    with stop_requests() as stop:
        for step in range(run.first_step, run.config.steps):
            record = run.step(step)
            run.history.append(record)
            if checkpoint_path is not None and checkpoint_every and (step + 1) % checkpoint_every == 0:
                run.save_or_warn(checkpoint_path, step + 1)
            if progress is not None:
                progress(record)
            if run.parallel.any(bool(stop)) and step + 1 < run.config.steps:
                run.stop_here(step + 1, checkpoint_path)
    return run.result()


class Interrupted(EpverifyError):
    """Training was stopped by SIGINT or SIGTERM after a completed step; its state is in `result` and, with a
    checkpoint path, in the checkpoint (`step`, `checkpoint`)."""


@contextmanager
def stop_requests():
    """While training: SIGINT (Ctrl-C) and SIGTERM ask the loop to stop after the step it is in, with a checkpoint
    of that step; a second signal stops at once. Yields the list the handler appends the signals to."""
    requested: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
        yield requested
        return

    def handler(signum, frame):
        if requested:
            raise KeyboardInterrupt
        requested.append(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class Training:
    """The state of one run: masks, lambdas, optimizers, sampler, estimator and history, and one step of it."""

    def __init__(self, adapter: Adapter, data: PruneData, config: PruneConfig, parallel: Parallel,
                 checkpoint_every: int = 0, resume: bool = False, checkpoint_path=None):
        config.validate()
        parallel.check(config)
        if checkpoint_every < 0:
            raise EpverifyError(f"checkpoint_every ({checkpoint_every}) must be 0 (never) or a number of steps")
        if resume and checkpoint_path is None:
            raise EpverifyError("resume needs the checkpoint file to continue from")
        self.started = time.perf_counter()
        self.config, self.parallel, self.graph = config, parallel, adapter.graph
        self.gen = torch.Generator().manual_seed(config.seed)
        device = adapter.device
        self.evaluator = Evaluator(adapter, data, config.ablation, config.batch_size)
        edges = hard_concrete.init_log_alpha(self.graph.num_edges, self.gen)
        if config.init_from and not resume:  # a resumed run restores its log-alphas from the checkpoint
            edges = self._warm_start(config) + (edges - hard_concrete.INIT_MEAN)  # the same small noise
        self.params = [edges.to(device).requires_grad_()]
        if config.node_masks:
            writers = len(self.graph.writers)
            self.params.append(hard_concrete.init_log_alpha(writers, self.gen).to(device).requires_grad_())
        self.sparsity = SparsityTerm(config, self.graph, device)
        self.mask_opt = Adam(self.params, lr=config.lr, betas=(0.9, config.adam_beta2))
        self.lambda_opt = Adam([self.sparsity.lambdas], lr=config.lambda_lr, maximize=True)
        self.estimator = make_estimator(config, self.evaluator, [p.shape[0] for p in self.params], parallel)
        self.sampler = ExampleSampler(self.evaluator, config, self.gen)
        self.history: list[dict] = []
        self.first_step, self.seconds_before = 0, 0.0
        data = self.evaluator.data
        self.data_hash = checkpoint.fingerprint(data.input_ids, data.attention_mask, data.loss_mask,
                                                data.corrupted_ids)
        if resume:
            self.restore(checkpoint_path)

    def _warm_start(self, config: PruneConfig) -> torch.Tensor:
        """Initial edge log-alphas from EAP's or EAP-IG's scores on the training data (`warm_log_alpha`)."""
        from ..methods import eap, eap_ig

        method = eap if config.init_from == "eap" else eap_ig
        result = method(self.evaluator.adapter, self.evaluator.data, config.ablation, evaluator=self.evaluator)
        return hard_concrete.warm_log_alpha(result.scores, config.target_sparsity)

    @property
    def node_log_alpha(self) -> torch.Tensor | None:
        return self.params[1] if len(self.params) > 1 else None

    def step(self, step: int) -> dict:
        """One optimizer step of masks and lambdas; returns the step's history record."""
        index, scale = self.sampler.next()
        faithfulness, surrogate = self.estimator(self.params, index, scale, self.gen)
        term, sparsity, target, gap = self.sparsity(self.params[0], self.node_log_alpha, step)
        loss = self.parallel.local_objective(surrogate) + term
        if not torch.isfinite(loss):
            self._stop(f"the loss became {loss.item()} at step {step}: training stopped and the last good masks were"
                       " kept; lower the learning rate or check the inputs and the model for NaN/inf")
        lambdas = self.sparsity.lambdas
        self.mask_opt.zero_grad()
        self.lambda_opt.zero_grad()
        loss.backward()
        faithfulness = self.parallel.average_gradients([*self.params, lambdas], faithfulness)
        self.estimator.after_backward(self.params)
        last_good = [p.detach().clone() for p in (*self.params, lambdas)]
        self.mask_opt.step()
        if self.config.log_alpha_bound > 0:
            with torch.no_grad():
                for p in self.params:
                    p.clamp_(-self.config.log_alpha_bound, self.config.log_alpha_bound)
        self.lambda_opt.step()
        self.sparsity.cap(gap.detach())
        if not all(torch.isfinite(p).all() for p in (*self.params, lambdas)):
            with torch.no_grad():
                for p, good in zip((*self.params, lambdas), last_good):
                    p.copy_(good)
            self._stop(f"the masks became non-finite at step {step + 1}: training stopped and the last good masks"
                       " were kept; lower the learning rate")
        return {"step": step + 1, "loss": (faithfulness + lambdas[0] * gap + lambdas[1] * gap**2).item(),
                "faithfulness": faithfulness.item(), "sparsity": sparsity.item(), "target": target,
                "lambda1": lambdas[0].item(), "lambda2": lambdas[1].item(), **self.estimator.record()}

    def stop_here(self, step: int, checkpoint_path) -> None:
        """Raise Interrupted after `step` completed steps, writing their checkpoint first (process 0)."""
        where = ""
        if checkpoint_path is not None:
            self.save(checkpoint_path, step)
            where = f"; its checkpoint is {checkpoint_path}"
        err = Interrupted(f"interrupted after step {step} of {self.config.steps}{where}")
        err.result, err.step, err.checkpoint = self.result(), step, checkpoint_path
        raise err

    def _stop(self, message: str):
        err = EpverifyError(message)
        err.result = self.result()
        raise err

    def result(self) -> PruneResult:
        """The run as it stands: copies of the log-alphas and lambdas, the history, the config and the time."""
        node = self.node_log_alpha
        return PruneResult(self.params[0].detach().clone(), None if node is None else node.detach().clone(),
                           self.sparsity.lambdas.detach().clone(), self.history, self.config.to_dict(),
                           self.seconds_before + time.perf_counter() - self.started)

    # ----- checkpoints --------------------------------------------------------------------------------------
    def save(self, path, step: int) -> None:
        """Write the whole training state after `step` steps (process 0 only, when several processes run)."""
        if not self.parallel.is_main:
            return
        checkpoint.save(path, {
            "step": step, "config": self.config.to_dict(), "num_edges": self.graph.num_edges,
            "data": self.data_hash, "params": [p.detach().cpu() for p in self.params],
            "lambdas": self.sparsity.lambdas.detach().cpu(), "mask_opt": self.mask_opt.state_dict(),
            "lambda_opt": self.lambda_opt.state_dict(), "generator": self.gen.get_state(),
            "sampler": self.sampler.state_dict(), "score": self.estimator.state_dict(), "history": self.history,
            "seconds": self.seconds_before + time.perf_counter() - self.started,
        })

    def save_or_warn(self, path, step: int) -> None:
        """`save`, or one warning when the file cannot be written (a full disk): training goes on, and the last
        checkpoint on disk stays as it was."""
        try:
            self.save(path, step)
        except EpverifyError as err:
            logging.getLogger("epverify").warning("warning: checkpoint of step %d not written (%s); training goes on",
                                                  step, err)

    def restore(self, path) -> None:
        """Continue from a checkpoint; one written before a setting existed counts that setting as it ran then
        (`PruneConfig.from_dict`)."""
        state = checkpoint.load(path)
        state["config"] = PruneConfig.from_dict(state["config"]).to_dict()
        checkpoint.check_compatible(state, self.config.to_dict(), self.graph.num_edges, self.data_hash, path)
        with torch.no_grad():
            for p, saved in zip((*self.params, self.sparsity.lambdas), (*state["params"], state["lambdas"])):
                p.copy_(saved)
        self.mask_opt.load_state_dict(state["mask_opt"])
        self.lambda_opt.load_state_dict(state["lambda_opt"])
        self.gen.set_state(state["generator"])
        self.sampler.load_state_dict(state["sampler"])
        self.estimator.load_state_dict(state["score"])
        self.history.extend(state["history"])
        self.first_step, self.seconds_before = state["step"], state["seconds"]
