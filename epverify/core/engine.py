"""The masked forward: every reader gets its own residual input, mixed from the writers by the edge masks.

For reader r with upstream writers w (DESIGN section 2):

    x_r = resid~(r) + sum_w z_wr * (h_w - h~_w)

`resid~(r)` is the ablated residual at r's place in the network and `h~_w` a writer's ablated output; both come
from a `Record` of an ablated run (the full model on the corrupted input for interchange, zeros for zero ablation,
per-position means for mean ablation). The deltas h_w - h~_w of all writers live in one preallocated stack,
(writers, B, T, d); every reader group takes its inputs with one matrix product of its mask block against the
stack's upstream prefix. Gradients into the stack accumulate in one buffer of the same shape, however many
readers use a writer, so the memory is two stacks plus the model's own activations.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.utils.checkpoint

from ..adapters.base import Adapter
from ..errors import EpverifyError

ABLATIONS = ("interchange", "zero", "mean", "resample")
READER_CHUNK_BYTES = 512 * 2**20  # attention readers are mixed and normed in batch chunks of about this size
PER_EXAMPLE_DIRECT = 4096  # per-example mixes write straight into reader-major layout from rows this long (T*d)


@dataclass
class Record:
    """What an unmasked run computed, per layer: the residual each reader group reads and each writer's output.

    Heads are kept before their output projection (B, H, T, head_dim): small, and the projection is linear, so
    a head's delta is the projection of the difference.
    """

    embeds: torch.Tensor  # (E, B, T, d)
    attn_in: list[torch.Tensor]  # per layer (B, T, d): residual before the attention
    heads: list[torch.Tensor]  # per layer (B, H, T, head_dim)
    mlp_in: list[torch.Tensor]  # per layer (B, T, d): residual the MLP reads
    mlp_out: list[torch.Tensor]  # per layer (B, T, d)
    final: torch.Tensor  # (B, T, d): residual before the unembedding
    logits: torch.Tensor | None = None  # (B, T, V)

    def map(self, fn) -> Record:
        """Apply fn to every tensor (e.g. select batch rows, move devices)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                out[f.name] = None
            elif isinstance(value, list):
                out[f.name] = [fn(v) for v in value]
            else:
                out[f.name] = fn(value)
        return Record(**out)

    def select(self, index: torch.Tensor) -> Record:
        """Rows `index` of the batch (the embeddings carry the batch in dimension 1)."""
        index = index.to(self.final.device)  # index_select wants the index where the data is
        def rows(t: torch.Tensor) -> torch.Tensor:
            return t.index_select(0, index)

        return Record(
            embeds=self.embeds.index_select(1, index),
            attn_in=[rows(t) for t in self.attn_in],
            heads=[rows(t) for t in self.heads],
            mlp_in=[rows(t) for t in self.mlp_in],
            mlp_out=[rows(t) for t in self.mlp_out],
            final=rows(self.final),
            logits=None if self.logits is None else rows(self.logits),
        )


@torch.no_grad()
def full_run(adapter: Adapter, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> Record:
    """The unmasked model, recording what every reader group reads and every writer writes."""
    return _full_run(adapter, input_ids, attention_mask)


def _full_run(adapter: Adapter, input_ids, attention_mask) -> Record:
    embeds = adapter.embed(input_ids)  # (E, B, T, d)
    x = embeds.sum(0)
    attn_in, heads, mlp_in, mlp_out = [], [], [], []
    for layer in range(adapter.n_layers):
        attn_in.append(x)
        shared = x[None]
        q, k, v = adapter.attention_qkv(layer, shared, shared, shared)
        a = adapter.attention(layer, q, k, v, attention_mask)  # (B, H, T, head_dim)
        heads.append(a)
        after_attn = x + adapter.head_write_sum(layer, a)
        bias = adapter.attention_bias(layer)
        if bias is not None:
            after_attn = after_attn + bias
        m_in = x if adapter.parallel_mlp else after_attn
        mlp_in.append(m_in)
        out = adapter.mlp(layer, m_in)
        mlp_out.append(out)
        x = after_attn + out
    return Record(embeds, attn_in, heads, mlp_in, mlp_out, x, adapter.unembed(x))


def forward(adapter: Adapter, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Plain logits of the unmasked model (differentiable; used as the reference the masks are compared to)."""
    return _full_run(adapter, input_ids, attention_mask).logits


@torch.no_grad()
def zero_record(adapter: Adapter, batch: int, seq: int) -> Record:
    """Zero ablation: every writer outputs 0, so each residual holds only the attention biases upstream of it."""
    d, dev, dt = adapter.d_model, adapter.device, adapter.dtype
    zeros = torch.zeros(batch, seq, d, device=dev, dtype=dt)
    x = zeros
    attn_in, heads, mlp_in, mlp_out = [], [], [], []
    for layer in range(adapter.n_layers):
        attn_in.append(x)
        heads.append(torch.zeros(batch, adapter.n_heads, seq, adapter.head_dim, device=dev, dtype=dt))
        bias = adapter.attention_bias(layer)
        after_attn = x if bias is None else x + bias
        mlp_in.append(x if adapter.parallel_mlp else after_attn)
        mlp_out.append(zeros)
        x = after_attn
    embeds = torch.zeros(len(adapter.embed_names), batch, seq, d, device=dev, dtype=dt)
    return Record(embeds, attn_in, heads, mlp_in, mlp_out, x)


@torch.no_grad()
def mean_record(records: list[Record], masks: list[torch.Tensor]) -> Record:
    """Mean ablation: per position, the mean of every recorded tensor over the reference examples.

    `masks` are the attention masks (B, T) of the records; padded positions do not count. The result has batch
    size 1 and the longest length; `expand_record` broadcasts it to a batch.
    """
    seq = max(m.shape[1] for m in masks)

    def pad(t: torch.Tensor, batch_dim: int) -> torch.Tensor:
        # t has batch in `batch_dim` and sequence right after it
        if t.shape[batch_dim + 1] == seq:
            return t
        shape = list(t.shape)
        shape[batch_dim + 1] = seq - t.shape[batch_dim + 1]
        return torch.cat([t, t.new_zeros(shape)], dim=batch_dim + 1)

    counts = sum(pad(m.to(torch.float64), 0).sum(0) for m in masks).clamp(min=1)  # (T,)

    def mean(get, seq_dim: int) -> torch.Tensor:
        total = None
        for rec, m in zip(records, masks):
            t = get(rec).to(torch.float64)
            w = m.to(torch.float64)
            shape = [1] * t.dim()
            shape[seq_dim - 1], shape[seq_dim] = w.shape
            weighted = pad((t * w.reshape(shape)), seq_dim - 1).sum(seq_dim - 1, keepdim=True)
            total = weighted if total is None else total + weighted
        shape = [1] * total.dim()
        shape[seq_dim] = seq
        return (total / counts.reshape(shape)).to(get(records[0]).dtype)

    n_layers = len(records[0].attn_in)
    # heads are (B, H, T, e): move T next to B for the shared code path, then back
    heads = [
        mean(lambda r, i=i: r.heads[i].transpose(1, 2), 1).transpose(1, 2) for i in range(n_layers)
    ]
    return Record(
        embeds=mean(lambda r: r.embeds, 2),
        attn_in=[mean(lambda r, i=i: r.attn_in[i], 1) for i in range(n_layers)],
        heads=heads,
        mlp_in=[mean(lambda r, i=i: r.mlp_in[i], 1) for i in range(n_layers)],
        mlp_out=[mean(lambda r, i=i: r.mlp_out[i], 1) for i in range(n_layers)],
        final=mean(lambda r: r.final, 1),
    )


def expand_record(record: Record, batch: int, seq: int) -> Record:
    """Broadcast a batch-1 record (zero or mean ablation) to (batch, seq), without copying."""

    def rows(t: torch.Tensor) -> torch.Tensor:  # (1, T, d) -> (batch, seq, d)
        return t[:, :seq].expand(batch, -1, -1)

    return Record(
        embeds=record.embeds[:, :, :seq].expand(-1, batch, -1, -1),
        attn_in=[rows(t) for t in record.attn_in],
        heads=[h[:, :, :seq].expand(batch, -1, -1, -1) for h in record.heads],
        mlp_in=[rows(t) for t in record.mlp_in],
        mlp_out=[rows(t) for t in record.mlp_out],
        final=rows(record.final),
    )


# ----- the delta stack ---------------------------------------------------------------------------------------
@dataclass
class _Group:
    """Writers pushed together: the embeddings, a layer's heads, or a layer's MLP."""

    start: int  # first row in the stack
    n: int
    out_weight: torch.Tensor | None  # heads: (H, head_dim, d), their gradient is kept in head space
    grad_start: int | None  # first row in its gradient buffer; None when its deltas need no gradient


class DeltaStack:
    """One preallocated stack of writer deltas, shared by every reader, with gradients accumulated per writer.

    Autograd sees two operations: `push` (a writer group's deltas enter the stack; returns a token) and `mix`
    (a reader group's inputs from its mask block and the tokens of its upstream writers). Passing the tokens makes
    autograd run a push's backward only after every mix that read it, when its gradient is complete.

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
        self.tokens: list[torch.Tensor] = []
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
        self.tokens.append(_Push.apply(delta, self, len(self.groups) - 1))
        self.filled += n

    def _with_grad(self, heads: bool, n_up: int | None = None) -> list[_Group]:
        """The groups with gradient rows in the heads' buffer (heads) or the dense one, of the first n_up writers."""
        return [g for g in self.groups if g.grad_start is not None and (g.out_weight is not None) == heads
                and (n_up is None or g.start < n_up)]

    def mix(self, masks: torch.Tensor, tokens: list[torch.Tensor] | None = None, rows: slice = slice(None),
            base: torch.Tensor | None = None) -> torch.Tensor:
        """Reader inputs for batch rows `rows`: base (b, T, d), the ablated residual (None: 0), plus masks (R, W_up),
        or per example (b, R, W_up), against the first W_up writers -> (R, b, T, d). `tokens` are those of the
        groups read (default: all so far)."""
        tokens = self.tokens if tokens is None else tokens
        n_up = sum(g.n for g in self.groups[: len(tokens)])
        if masks.shape[-1] != n_up:
            raise RuntimeError(f"mask block reads {masks.shape[-1]} writers but {n_up} are upstream")
        return _Mix.apply(masks, base, self, rows, *tokens)

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
        ctx.set_materialize_grads(False)  # the token's gradient is always None: nothing to build
        return delta.new_empty(0)

    @staticmethod
    def backward(ctx, _token_grad):
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
    def forward(ctx, masks, base, stack: DeltaStack, rows: slice, *tokens):
        n_up = masks.shape[-1]
        ctx.stack, ctx.rows, ctx.n_tokens = stack, rows, len(tokens)
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
        # The tokens carry no gradient (None: nothing to allocate or for autograd to sum): they only order the
        # pushes' backward after this one.
        return (grad_masks, grad_base, None, None, *[None] * ctx.n_tokens)


def masked_run(
    adapter: Adapter,
    input_ids: torch.Tensor,
    ablated: Record,
    edge_mask: torch.Tensor,
    node_mask: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    checkpoint: bool = False,
    positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits of the model with every edge scaled by its mask and every writer by its node mask.

    checkpoint: recompute each layer's activations in the backward instead of keeping them (large models).
    positions: (B, T) bool, the positions a loss reads: the unembedding then runs on those rows only and the
    result is `logits[positions]`, (P, V) in row-major order (a loss at the last token of a 50k-word vocabulary
    skips nearly all of the unembedding and its backward).

    edge_mask: (num_edges,) in edge order, or (B, num_edges) for one mask per example (training samples an
    independent mask for every example); node_mask: (num_writers,), (B, num_writers) or None; ablated: a Record
    with the same batch shape as input_ids.
    """
    graph = adapter.graph
    batch, seq = input_ids.shape
    if edge_mask.shape not in ((graph.num_edges,), (batch, graph.num_edges)):
        raise EpverifyError(
            f"edge mask has shape {tuple(edge_mask.shape)}, expected ({graph.num_edges},): one value per edge"
            f" (or ({batch}, {graph.num_edges}): one mask per example)"
        )
    if ablated.final.shape[:2] != input_ids.shape:
        raise EpverifyError(
            f"ablated run has batch shape {tuple(ablated.final.shape[:2])} but the input is {tuple(input_ids.shape)}"
            ": clean and corrupted batches must have the same shape"
        )
    lead = edge_mask.shape[:-1]  # () for one mask shared by the batch, (B,) for one mask per example

    def block(group) -> torch.Tensor:  # ([B,] R, W_up) masks of a reader group, node masks folded in
        z = edge_mask[..., group.edge_start : group.edge_start + group.n_edges]
        z = z.reshape(*lead, len(group.readers), group.n_writers)
        if node_mask is not None:
            z = z * node_mask[..., None, : group.n_writers]
        return z

    nq, nkv = adapter.n_heads, adapter.n_kv_heads
    # The attention readers are mixed, normed and attended a chunk of batch rows at a time (each chunk
    # recomputed in the backward when checkpointing), so only one chunk's reader inputs are alive at once.
    n_readers = nq + 2 * nkv
    row_bytes = n_readers * seq * adapter.d_model * 4  # one example's reader inputs, in float32 (norms upcast)
    rows_per_chunk = max(1, min(batch, READER_CHUNK_BYTES // row_bytes))
    # The backward folds reader gradients into the writers' in intermediates no larger than one chunk's reader
    # inputs: memory every layer's working set already holds, and frees before its readers' gradients are folded.
    stack = DeltaStack(len(graph.writers), (batch, seq, adapter.d_model), adapter.dtype, adapter.device,
                       fold_bytes=rows_per_chunk * row_bytes)
    stack.push(adapter.embed(input_ids) - ablated.embeds)

    def attention_rows(layer, rows, z, *tokens):  # -> head deltas before projection (b, H, T, head_dim)
        x = stack.mix(z, list(tokens), rows, base=ablated.attn_in[layer][rows])  # (H + 2 Hkv, b, T, d)
        q, k, v = adapter.attention_qkv(layer, *x.split([nq, nkv, nkv]))
        mask = None if attention_mask is None else attention_mask[rows]
        return adapter.attention(layer, q, k, v, mask) - ablated.heads[layer][rows]

    def attention_block(layer, z):  # z: ([B,] H + 2 Hkv, W_up) -> (B, H, T, head_dim)
        pieces = []
        for start in range(0, batch, rows_per_chunk):
            rows = slice(start, min(batch, start + rows_per_chunk))
            pieces.append(run(attention_rows, layer, rows, z[rows] if z.dim() == 3 else z, *stack.tokens))
        return torch.cat(pieces) if len(pieces) > 1 else pieces[0]

    def mlp_block(layer, z, *tokens):  # -> MLP delta (1, B, T, d)
        x = stack.mix(z, list(tokens), base=ablated.mlp_in[layer]).squeeze(0)
        return (adapter.mlp(layer, x) - ablated.mlp_out[layer])[None]

    def run(fn, *args):
        if checkpoint and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    for layer in range(adapter.n_layers):
        head_delta = attention_block(layer, block(graph.attn_group(layer)))
        if adapter.parallel_mlp:  # the MLP reads the layer's input: it does not see this layer's heads
            mlp_delta = run(mlp_block, layer, block(graph.mlp_group(layer)), *stack.tokens)
            stack.push_heads(head_delta, adapter.head_out_weight(layer))
        else:
            stack.push_heads(head_delta, adapter.head_out_weight(layer))
            mlp_delta = run(mlp_block, layer, block(graph.mlp_group(layer)), *stack.tokens)
        stack.push(mlp_delta)
    x = stack.mix(block(graph.out_group), base=ablated.final).squeeze(0)  # (B, T, d)
    # The autograd nodes hold the stack; the stack must not hold them back (through its tokens), or a forward
    # that never runs its backward would leave a reference cycle that keeps the stack and activations alive.
    stack.tokens = []
    needs_backward = edge_mask.requires_grad or (node_mask is not None and node_mask.requires_grad)
    if not torch.is_grad_enabled() or not needs_backward:
        stack.release()  # nothing will run backward through it
    if positions is not None:
        if positions.shape != input_ids.shape or positions.dtype != torch.bool:
            raise EpverifyError(
                f"positions are {positions.dtype} of shape {tuple(positions.shape)}, expected torch.bool of shape"
                f" {tuple(input_ids.shape)}: one flag per input token"
            )
        x = x[positions.to(x.device)]  # (P, d)
    return adapter.unembed(x)


def ablated_record(
    adapter: Adapter,
    ablation: str,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    corrupted_ids: torch.Tensor | None = None,
    mean: Record | None = None,
    clean: Record | None = None,
) -> Record:
    """The ablated run a masked run needs for this batch."""
    batch, seq = input_ids.shape
    if ablation == "interchange":
        if corrupted_ids is None:
            raise EpverifyError("interchange ablation needs corrupted inputs: pass corrupted_ids")
        if corrupted_ids.shape != input_ids.shape:
            raise EpverifyError(
                f"clean batch is {tuple(input_ids.shape)} but corrupted batch is {tuple(corrupted_ids.shape)}:"
                " each corrupted input must have the same length as its clean input"
            )
        return full_run(adapter, corrupted_ids, attention_mask)
    if ablation == "zero":
        return zero_record(adapter, batch, seq)
    if ablation == "mean":
        if mean is None:
            raise EpverifyError("mean ablation needs a reference mean: build one with engine.mean_record")
        return expand_record(mean, batch, seq)
    if ablation == "resample":
        if batch < 2:
            raise EpverifyError("resample ablation needs a batch of at least 2 examples")
        rec = clean if clean is not None else full_run(adapter, input_ids, attention_mask)
        return rec.select(torch.roll(torch.arange(batch, device=input_ids.device), 1))
    raise EpverifyError(f"unknown ablation {ablation!r}: choose one of {', '.join(ABLATIONS)}")
