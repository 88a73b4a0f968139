"""What a long pruning run shows while it trains: step, loss, KL, sparsity against its target, lambdas, ETA.

On a terminal it is a tqdm bar whose postfix carries the figures. In a log (stderr not a terminal, e.g. CI or a
batch job) a bar's carriage returns are noise, so it prints one plain line every `every` steps instead.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm


def _line(record: dict) -> str:
    return (f"loss {record['loss']:.4f}  kl {record['faithfulness']:.4f}  sparsity {record['sparsity']:.4f} / "
            f"{record['target']:.4f}  lambda {record['lambda1']:+.3f} {record['lambda2']:+.3f}")


class TrainingProgress:
    """Callable for `trainer.prune(progress=...)`. A resumed run's first record starts the count where it resumed."""

    def __init__(self, total: int, stream=None, every: int | None = None, bar: bool | None = None):
        self.stream = stream or sys.stderr
        self.total = total
        self.every = every or max(1, total // 20)
        self.use_bar = self.stream.isatty() if bar is None else bar
        self.bar = None
        self.first_step = None
        self.started = time.perf_counter()

    def __call__(self, record: dict) -> None:
        step = record["step"]
        if self.first_step is None:
            self.first_step, self.started = step - 1, time.perf_counter()
            if self.use_bar:
                self.bar = tqdm(total=self.total, initial=self.first_step, file=self.stream, unit="step",
                                dynamic_ncols=True, desc="pruning")
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix_str(_line(record), refresh=False)
            if step == self.total:
                self.bar.close()
            return
        if step % self.every and step != self.total:
            return
        done = step - self.first_step
        elapsed = time.perf_counter() - self.started
        eta = elapsed / done * (self.total - step) if done else 0.0
        print(f"step {step:6d}/{self.total}  {_line(record)}  eta {_clock(eta)}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
