"""The delta stack: one preallocated stack of writer deltas that every reader mixes its input from.

The engine (`epverify.core.engine`) pushes each writer group's deltas h_w - h~_w as it computes them and asks for
each reader group's inputs, resid~(r) + sum_w z_wr (h_w - h~_w), as one matrix product of the group's mask block
against the stack's upstream prefix. Autograd sees two operations, `push` and `mix`; their backward accumulates
every writer's gradient in one float32 buffer however many readers read it (docs/design.md, "The engine").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PER_EXAMPLE_DIRECT = 4096  # per-example mixes write straight into reader-major layout from rows this long (T*d)


@dataclass
class _Group:
    """Writers pushed together: the embeddings, a layer's heads, or a layer's MLP."""

    start: int  # first row in the stack
    n: int
    out_weight: torch.Tensor | None  # heads: (H, head_dim, d), their gradient is kept in head space
    grad_start: int | None  # first row in its gradient buffer; None when its deltas need no gradient


class DeltaStack:
    """One preallocated stack of writer deltas, shared by every reader, with gradients accumulated per writer.

    Autograd sees two operations: `push` (a writer group's deltas enter the stack; returns an ordering handle, an
    empty tensor) and `mix` (a reader group's inputs from its mask block and the handles of its upstream writers).
    Passing the handles makes autograd run a push's backward only after every mix that read it, when its gradient is
    complete.

    Layout: the values are (W, B, T, d) in the model's dtype. A group's rows are one contiguous block, and the
    upstream prefix of a chunk of batch rows is a (W_up, b*T*d) matrix with a row stride, so a reader group's
    inputs are one matrix product (one per example for per-example masks) written straight into the
    reader-major layout the readers consume, and its gradients come back the same way, with no copies or
    transposes of the stack. Gradients accumulate in float32, in two buffers allocated at the first accumulation:
    one for the writers that write in d space (MLPs, embeddings), and one for the heads, kept before the output
    projection (H per layer, B, T, head_dim), folding each reader group's contribution through the projection, so
    that side is about 1/H of the stack. Writers whose deltas need no gradient (the embeddings: no mask acts
    before them) get no rows. A reader group's contribution reaches its upstream writers in chunks of layers whose
    intermediates fit in `fold_bytes` (at least one layer): one product for the dense writers and one product and
    one fold for the heads per chunk, rather than one or two per upstream group.
    """

    def __init__(self, n_writers: int, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device,
                 fold_bytes: int):
        self.values = torch.empty(n_writers, *shape, dtype=dtype, device=device)  # (W, B, T, d)
        self.fold_bytes = fold_bytes
        self.groups: list[_Group] = []
        self.filled = 0
        self.handles: list[torch.Tensor] = []
        self.dense_grad: torch.Tensor | None = None  # float32 (rows, B, T, d)
        self.head_grad: torch.Tensor | None = None  # float32 (rows, B, T, head_dim)

    def release(self) -> None:
        """Drop the buffers once nothing will read them (no backward to come)."""
        self.values = None
        self.groups = []

    def push(self, delta: torch.Tensor) -> None:
        """Append deltas (n, B, T, d) of the next writers in writer order."""
        self._push(delta, delta.shape[0], None)

    def push_heads(self, head_delta: torch.Tensor, out_weight: torch.Tensor) -> None:
        """Append a layer's heads from their deltas before projection (B, H, T, e) and weights (H, e, d)."""
        self._push(head_delta, head_delta.shape[1], out_weight)

    def _push(self, delta: torch.Tensor, n: int, out_weight: torch.Tensor | None) -> None:
        grad_start = None
        if delta.requires_grad:
            same_kind = self._with_grad(out_weight is not None)
            grad_start = sum(g.n for g in same_kind)
        self.groups.append(_Group(self.filled, n, out_weight, grad_start))
        self.handles.append(_Push.apply(delta, self, len(self.groups) - 1))
        self.filled += n

    def _with_grad(self, heads: bool, n_up: int | None = None) -> list[_Group]:
        """The groups with gradient rows in the heads' buffer (heads) or the dense one, of the first n_up writers."""
        return [g for g in self.groups if g.grad_start is not None and (g.out_weight is not None) == heads
                and (n_up is None or g.start < n_up)]

    def mix(self, masks: torch.Tensor, handles: list[torch.Tensor] | None = None, rows: slice = slice(None),
            base: torch.Tensor | None = None) -> torch.Tensor:
        """Reader inputs for batch rows `rows`: base (b, T, d), the ablated residual (None: 0), plus masks (R, W_up),
        or per example (b, R, W_up), against the first W_up writers -> (R, b, T, d). `handles` are those of the
        groups read (default: all so far)."""
        handles = self.handles if handles is None else handles
        n_up = sum(g.n for g in self.groups[: len(handles)])
        if masks.shape[-1] != n_up:
            raise RuntimeError(f"mask block reads {masks.shape[-1]} writers but {n_up} are upstream")
        return _Mix.apply(masks, base, self, rows, *handles)

    def upstream(self, n_up: int, rows: slice) -> torch.Tensor:
        """The first n_up writers' deltas for batch rows `rows`: (W_up, b, T*d), a view."""
        return self.values[:n_up, rows].flatten(2)

    def accumulate(self, masks: torch.Tensor, grad: torch.Tensor, rows: slice) -> None:
        """Add a reader group's gradient (R, b, T*d), weighted by its masks ([b,] R, W_up), into the gradient rows
        of its upstream writers: per chunk of upstream groups, one product for the dense writers, and one product
        and one fold through the output projections for the heads."""
        if self.dense_grad is None:
            self._allocate_grads(grad.device)
        n_up = masks.shape[-1]
        z = masks.to(grad.dtype)
        n_readers, b = grad.shape[:2]
        seq, d = self.values.shape[2:]
        # Products add straight into the float32 buffers when the gradient is float32 too. Otherwise, and for the
        # dense writers' per-example products, each is an intermediate of b*T*d per writer.
        into_buffer = grad.dtype == torch.float32
        dense_in_place = into_buffer and z.dim() == 2
        dense_bytes = 0 if dense_in_place else b * seq * d * grad.element_size()
        for chunk, target in self._chunks(self._with_grad(False, n_up), self.dense_grad, rows, dense_bytes):
            target, z_chunk = target.flatten(1), _columns(z, chunk)  # (n, b*T*d), ([b,] R, n)
            if dense_in_place:
                target.addmm_(z_chunk.t(), grad.view(n_readers, -1))
            else:
                target += _mixed(z_chunk, grad)
        heads = self._with_grad(True, n_up)
        if not heads:
            return
        e = heads[0].out_weight.shape[1]
        # per head, the intermediate of its fold (the mixed gradient in d space, or with one reader the gradient
        # projected into the head's space) and its slice of the output projection, concatenated per chunk
        head_bytes = (b * seq * (d if n_readers > 1 else e) + e * d) * grad.element_size()
        for chunk, target in self._chunks(heads, self.head_grad, rows, head_bytes):  # target (n, b, T, e)
            n = target.shape[0]
            weight = torch.cat([g.out_weight for g in chunk]) if len(chunk) > 1 else chunk[0].out_weight
            weight = weight.to(grad.dtype)  # (n, e, d)
            z_chunk = _columns(z, chunk)  # ([b,] R, n)
            if n_readers == 1:  # an MLP or the output: project its gradient once through every head,
                # (b*T, d) @ (d, n*e), and scale each head by its mask (no (n, b*T, d) outer product to fold)
                folded = torch.mm(grad.view(-1, d), weight.flatten(0, 1).t()).view(b, -1, n, e)  # (b, T, n, e)
                scale = z_chunk.reshape(-1, n).t().reshape(n, -1, 1, 1)  # (n, 1 or b, 1, 1)
                target.addcmul_(folded.permute(2, 0, 1, 3), scale)
            else:  # mix in d space, (n, b*T, d), then fold: (n, b*T, d) @ (n, d, e) -> (n, b*T, e)
                part, target = _mixed(z_chunk, grad).view(n, -1, d), target.flatten(1, 2)
                if into_buffer:
                    target.baddbmm_(part, weight.transpose(1, 2))
                else:
                    target += torch.bmm(part, weight.transpose(1, 2))

    def _allocate_grads(self, device: torch.device) -> None:
        """Zeroed float32 gradient rows for every writer that needs them: dense (rows, B, T, d), heads (rows, B, T,
        head_dim)."""
        shape = self.values.shape[1:]  # (B, T, d)
        heads = self._with_grad(True)
        e = heads[0].out_weight.shape[1] if heads else 0
        dense_rows, head_rows = sum(g.n for g in self._with_grad(False)), sum(g.n for g in heads)
        self.dense_grad = torch.zeros(dense_rows, *shape, dtype=torch.float32, device=device)
        self.head_grad = torch.zeros(head_rows, *shape[:-1], e, dtype=torch.float32, device=device)

    def _chunks(self, groups: list[_Group], buffer: torch.Tensor, rows: slice, row_bytes: int):
        """Consecutive groups whose intermediates take at most fold_bytes at row_bytes per writer (at least one
        group), each with its rows of the gradient buffer for batch rows `rows` (a view)."""
        if not groups:
            return
        per_chunk = max(1, self.fold_bytes // (row_bytes * groups[0].n)) if row_bytes else len(groups)
        for first in range(0, len(groups), per_chunk):
            chunk = groups[first : first + per_chunk]
            start = chunk[0].grad_start
            yield chunk, buffer[start : start + sum(g.n for g in chunk), rows]


def _columns(z: torch.Tensor, groups: list[_Group]) -> torch.Tensor:
    """The mask columns ([b,] R, n) of the writers of `groups`, in order."""
    pieces = [z[..., g.start : g.start + g.n] for g in groups]
    return torch.cat(pieces, -1) if len(pieces) > 1 else pieces[0]


def _mixed(z: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Per writer, its readers' gradients weighted by their masks: z ([b,] R, n), grad (R, b, X) -> (n, b*X)."""
    if z.dim() == 2:  # one mask for the batch: one product over every row
        return torch.mm(z.t(), grad.view(grad.shape[0], -1))
    return _per_example_product(z.transpose(1, 2), grad.transpose(0, 1)).flatten(1)


def _per_example_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, m, k) @ (B, k, x) -> (m, B, x), contiguous. With long rows the product is written straight into that
    layout; with short ones (tiny models) the strided write would go one example at a time, so it is computed
    contiguous and transposed in one copy."""
    out = a.new_empty(a.shape[1], a.shape[0], b.shape[-1])
    if b.shape[-1] >= PER_EXAMPLE_DIRECT:
        torch.bmm(a, b, out=out.transpose(0, 1))
    else:
        out.copy_(torch.bmm(a, b).transpose(0, 1))
    return out


class _Push(torch.autograd.Function):
    @staticmethod
    def forward(ctx, delta, stack: DeltaStack, index: int):
        group = stack.groups[index]
        rows = stack.values[group.start : group.start + group.n]  # (n, B, T, d), contiguous
        if group.out_weight is None:
            rows.copy_(delta)
        else:  # (H, B*T, e) @ (H, e, d) -> (H, B*T, d), straight into the stack
            h, width = delta.shape[1], delta.shape[-1]
            heads_first = delta.transpose(0, 1).reshape(h, -1, width)
            torch.bmm(heads_first, group.out_weight.to(delta.dtype), out=rows.view(h, -1, rows.shape[-1]))
        ctx.stack, ctx.index, ctx.dtype, ctx.shape = stack, index, delta.dtype, delta.shape
        ctx.set_materialize_grads(False)  # the handle's gradient is always None: nothing to build
        return delta.new_empty(0)

    @staticmethod
    def backward(ctx, _handle_grad):
        stack, ctx.stack = ctx.stack, None  # let the stack go as the backward proceeds
        group = stack.groups[ctx.index]
        heads = group.out_weight is not None
        buffer = stack.head_grad if heads else stack.dense_grad
        if buffer is None:  # no reader downstream needed a gradient
            return torch.zeros(ctx.shape, dtype=ctx.dtype, device=stack.values.device), None, None
        grad = buffer[group.grad_start : group.grad_start + group.n]
        if heads:
            grad = grad.transpose(0, 1)  # (B, H, T, e), the layout pushed
        return grad.to(ctx.dtype), None, None


class _Mix(torch.autograd.Function):
    @staticmethod
    def forward(ctx, masks, base, stack: DeltaStack, rows: slice, *handles):
        n_up = masks.shape[-1]
        ctx.stack, ctx.rows, ctx.n_handles = stack, rows, len(handles)
        ctx.save_for_backward(masks)
        values = stack.upstream(n_up, rows)  # (W_up, b, T*d)
        b, n_readers = values.shape[1], masks.shape[-2]
        z = masks.to(values.dtype)
        if masks.dim() == 2:  # (R, W_up) @ (W_up, b*T*d)
            out = values.new_empty(n_readers, b, *stack.values.shape[2:])  # (R, b, T, d)
            flat = out.view(n_readers, -1)
            if base is None:
                torch.mm(z, values.flatten(1), out=flat)
            else:
                torch.addmm(base.reshape(1, -1).to(values.dtype), z, values.flatten(1), out=flat)
        else:  # per example: (b, R, W_up) @ (b, W_up, T*d), as (R, b, T*d)
            out = _per_example_product(z, values.transpose(0, 1)).view(n_readers, b, *stack.values.shape[2:])
            if base is not None:
                out += base.to(values.dtype)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (masks,) = ctx.saved_tensors
        stack, ctx.stack = ctx.stack, None
        n_up = masks.shape[-1]
        n_readers, b = grad_out.shape[:2]
        g = grad_out.to(stack.values.dtype).contiguous().view(n_readers, b, -1)  # (R, b, T*d)
        grad_masks = grad_base = None
        if ctx.needs_input_grad[0]:
            values = stack.upstream(n_up, ctx.rows)  # (W_up, b, T*d)
            if masks.dim() == 2:  # (R, b*T*d) @ (b*T*d, W_up)
                grad_masks = torch.mm(g.view(n_readers, -1), values.flatten(1).t())
            else:  # (b, R, T*d) @ (b, T*d, W_up)
                grad_masks = torch.bmm(g.transpose(0, 1), values.permute(1, 2, 0))
            grad_masks = grad_masks.to(masks.dtype)
        if ctx.needs_input_grad[1]:
            grad_base = grad_out.sum(0)
        if any(ctx.needs_input_grad[4:]):
            stack.accumulate(masks, g, ctx.rows)
        # The handles carry no gradient (None: nothing to allocate or for autograd to sum): they only order the
        # pushes' backward after this one.
        return (grad_masks, grad_base, None, None, *[None] * ctx.n_handles)
