"""Adam for the masks and the Lagrange multipliers."""

from __future__ import annotations

import torch


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
