"""The masked forward: every reader gets its own residual input, mixed from the writers by the edge masks.

For reader r with upstream writers w (docs/design.md, "The method"):

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
from .delta_stack import DeltaStack

ABLATIONS = ("interchange", "zero", "mean", "resample")
READER_CHUNK_BYTES = 512 * 2**20  # attention readers are mixed and normed in batch chunks of about this size


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

    @staticmethod
    def cat(parts: list[Record]) -> Record:
        """Records of consecutive batches as one (the embeddings carry the batch in dimension 1)."""
        first = parts[0]
        layers = {name: [torch.cat([getattr(p, name)[i] for p in parts]) for i in range(len(getattr(first, name)))]
                  for name in ("attn_in", "heads", "mlp_in", "mlp_out")}
        logits = None if first.logits is None else torch.cat([p.logits for p in parts])
        return Record(torch.cat([p.embeds for p in parts], dim=1), final=torch.cat([p.final for p in parts]),
                      logits=logits, **layers)

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


def _full_run(adapter: Adapter, input_ids, attention_mask, positions=None) -> Record:
    embeds = adapter.embed(input_ids)  # (E, B, T, d)
    x = embeds.sum(0)
    attn_in, heads, mlp_in, mlp_out = [], [], [], []
    for layer in range(adapter.n_layers):
        attn_in.append(x)
        if adapter.silent(layer):  # its heads output 0 whatever they read
            a = x.new_zeros(x.shape[0], adapter.n_heads, x.shape[1], adapter.head_dim)
        else:
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
    logits = adapter.unembed(x if positions is None else x[positions.to(x.device)])
    return Record(embeds, attn_in, heads, mlp_in, mlp_out, x, logits)


def forward(adapter: Adapter, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
            positions: torch.Tensor | None = None) -> torch.Tensor:
    """Plain logits of the unmasked model (differentiable; the reference the masks are compared to). positions:
    (B, T) bool, as for `masked_run`: only those rows are unembedded, returned as (P, V)."""
    return _full_run(adapter, input_ids, attention_mask, positions).logits


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
    _check_inputs(adapter.graph, input_ids, ablated, edge_mask, positions)
    run = _MaskedRun(adapter, input_ids, ablated, _MaskBlocks(edge_mask, node_mask), attention_mask, checkpoint)
    for layer in range(adapter.n_layers):
        run.layer(layer)
    x = run.output()  # (B, T, d)
    if positions is not None:
        x = x[positions.to(x.device)]  # (P, d)
    return adapter.unembed(x)


def _check_inputs(graph, input_ids, ablated: Record, edge_mask, positions) -> None:
    batch = input_ids.shape[0]
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
    if positions is not None and (positions.shape != input_ids.shape or positions.dtype != torch.bool):
        raise EpverifyError(
            f"positions are {positions.dtype} of shape {tuple(positions.shape)}, expected torch.bool of shape"
            f" {tuple(input_ids.shape)}: one flag per input token"
        )


@dataclass
class _MaskBlocks:
    """The edge masks of each reader group as one ([B,] readers, upstream writers) block, node masks folded in."""

    edge_mask: torch.Tensor  # (E,) or (B, E)
    node_mask: torch.Tensor | None  # (W,), (B, W) or None

    def __call__(self, group) -> torch.Tensor:
        lead = self.edge_mask.shape[:-1]  # () for one mask shared by the batch, (B,) for one mask per example
        z = self.edge_mask[..., group.edge_start : group.edge_start + group.n_edges]
        z = z.reshape(*lead, len(group.readers), group.n_writers)
        if self.node_mask is not None:
            z = z * self.node_mask[..., None, : group.n_writers]
        return z

    @property
    def need_grad(self) -> bool:
        return self.edge_mask.requires_grad or (self.node_mask is not None and self.node_mask.requires_grad)


class _MaskedRun:
    """One masked forward, layer by layer: the writers' deltas go into one stack, every reader group mixes its
    inputs from it (`DeltaStack`)."""

    def __init__(self, adapter: Adapter, input_ids, ablated: Record, blocks: _MaskBlocks, attention_mask,
                 checkpoint: bool):
        self.adapter, self.ablated, self.blocks = adapter, ablated, blocks
        self.attention_mask, self.checkpoint = attention_mask, checkpoint
        self.batch, self.seq = input_ids.shape
        # The attention readers are mixed, normed and attended a chunk of batch rows at a time (each chunk
        # recomputed in the backward when checkpointing), so only one chunk's reader inputs are alive at once.
        n_readers = adapter.n_heads + 2 * adapter.n_kv_heads
        row_bytes = n_readers * self.seq * adapter.d_model * 4  # one example's reader inputs, in float32 (norms upcast)
        self.rows_per_chunk = max(1, min(self.batch, READER_CHUNK_BYTES // row_bytes))
        # The backward folds reader gradients into the writers' in intermediates no larger than one chunk's reader
        # inputs: memory every layer's working set already holds, and frees before its readers' gradients are
        # folded.
        self.stack = DeltaStack(len(adapter.graph.writers), (self.batch, self.seq, adapter.d_model), adapter.dtype,
                                adapter.device, fold_bytes=self.rows_per_chunk * row_bytes)
        self.stack.push(adapter.embed(input_ids) - ablated.embeds)

    def layer(self, layer: int) -> None:
        """Push one layer's writers: its heads, then its MLP (which reads them, unless it runs in parallel)."""
        adapter, graph, stack = self.adapter, self.adapter.graph, self.stack
        head_delta = self._attention(layer, self.blocks(graph.attn_group(layer)))
        if adapter.parallel_mlp:  # the MLP reads the layer's input: it does not see this layer's heads
            mlp_delta = self._call(self._mlp, layer, self.blocks(graph.mlp_group(layer)), *stack.handles)
            stack.push_heads(head_delta, adapter.head_out_weight(layer))
        else:
            stack.push_heads(head_delta, adapter.head_out_weight(layer))
            mlp_delta = self._call(self._mlp, layer, self.blocks(graph.mlp_group(layer)), *stack.handles)
        stack.push(mlp_delta)

    def output(self) -> torch.Tensor:
        """The output reader's input (B, T, d); the stack is let go of when no backward will need it."""
        x = self.stack.mix(self.blocks(self.adapter.graph.out_group), base=self.ablated.final).squeeze(0)
        # The autograd nodes hold the stack; the stack must not hold them back (through its handles), or a forward
        # that never runs its backward would leave a reference cycle that keeps the stack and activations alive.
        self.stack.handles = []
        if not torch.is_grad_enabled() or not self.blocks.need_grad:
            self.stack.release()  # nothing will run backward through it
        return x

    def _attention(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        """Head deltas before projection (B, H, T, head_dim) from the layer's mask block ([B,] H + 2 Hkv, W_up)."""
        adapter = self.adapter
        if adapter.silent(layer):  # its heads output 0 in the clean run and the ablated one alike: nothing to read
            return torch.zeros(self.batch, adapter.n_heads, self.seq, adapter.head_dim, dtype=adapter.dtype,
                               device=adapter.device)
        pieces = []
        for start in range(0, self.batch, self.rows_per_chunk):
            rows = slice(start, min(self.batch, start + self.rows_per_chunk))
            chunk_z = z[rows] if z.dim() == 3 else z
            pieces.append(self._call(self._attention_rows, layer, rows, chunk_z, *self.stack.handles))
        return torch.cat(pieces) if len(pieces) > 1 else pieces[0]

    def _attention_rows(self, layer: int, rows: slice, z, *handles) -> torch.Tensor:
        nq, nkv = self.adapter.n_heads, self.adapter.n_kv_heads
        x = self.stack.mix(z, list(handles), rows, base=self.ablated.attn_in[layer][rows])  # (H + 2 Hkv, b, T, d)
        q, k, v = self.adapter.attention_qkv(layer, *x.split([nq, nkv, nkv]))
        mask = None if self.attention_mask is None else self.attention_mask[rows]
        return self.adapter.attention(layer, q, k, v, mask) - self.ablated.heads[layer][rows]

    def _mlp(self, layer: int, z, *handles) -> torch.Tensor:  # -> MLP delta (1, B, T, d)
        x = self.stack.mix(z, list(handles), base=self.ablated.mlp_in[layer]).squeeze(0)
        return (self.adapter.mlp(layer, x) - self.ablated.mlp_out[layer])[None]

    def _call(self, fn, *args):
        if self.checkpoint and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)


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
