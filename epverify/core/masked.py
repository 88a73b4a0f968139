"""MaskedModel: a wrapped model that runs with any set of edges kept and the rest ablated.

A thin user-facing shell over an adapter and the engine: names (writers, readers, edges) come from the
component graph, runs go through `engine.forward` (every edge kept, nothing to ablate) or `engine.masked_run`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..adapters.base import Adapter
from ..errors import EpverifyError
from . import engine
from .graph import ComponentGraph


class MaskedModel:
    """A model wrapped for edge-level interventions; build one with `epverify.adapters.wrap`."""

    def __init__(self, adapter: Adapter):
        self.adapter = adapter

    def __repr__(self) -> str:
        g = self.graph
        return (
            f"MaskedModel({self.adapter.summary().get('family', type(self.adapter).__name__)}, "
            f"{g.n_layers} layers, {g.n_heads} heads, {self.num_edges} edges)"
        )

    # ----- names --------------------------------------------------------------------------------------------
    @property
    def graph(self) -> ComponentGraph:
        return self.adapter.graph

    @property
    def num_edges(self) -> int:
        return self.graph.num_edges

    @property
    def writers(self) -> list[str]:
        return list(self.graph.writers)

    @property
    def readers(self) -> list[str]:
        return list(self.graph.readers)

    @property
    def edges(self) -> list[list[str]]:
        """Every edge as [writer, reader], in edge-index order."""
        return [list(e) for e in self.graph.edges]

    def edge_mask(self, edges: Iterable) -> torch.Tensor:
        """Binary mask (num_edges,) in the adapter's dtype: 1 for every [writer, reader] pair in `edges`."""
        pairs = []
        for edge in edges:
            if isinstance(edge, str) or len(edge) != 2:
                raise EpverifyError(f"an edge is a [writer, reader] pair, got {edge!r}")
            pairs.append((edge[0], edge[1]))
        index = self.graph.index_of(pairs)
        mask = torch.zeros(self.num_edges, dtype=self.adapter.dtype, device=self.adapter.device)
        mask[torch.tensor(index, dtype=torch.long, device=mask.device)] = 1
        return mask

    # ----- running ------------------------------------------------------------------------------------------
    def run(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        corrupted_ids: torch.Tensor | None = None,
        edges: Iterable | None = None,
        ablation: str = "interchange",
        *,
        edge_mask: torch.Tensor | None = None,
        node_mask: torch.Tensor | None = None,
        mean: engine.Record | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, V) keeping `edges` (or weighting every edge by `edge_mask`), the rest ablated.

        input_ids, attention_mask, corrupted_ids: (B, T). edges: [writer, reader] pairs, or None to keep
        every edge; edge_mask: (num_edges,) instead of edges. With every edge kept and no corrupted input
        this is the plain model (`engine.forward`). `mean` is the reference Record that mean ablation needs
        (`engine.mean_record`). Gradients flow only when a given mask requires them.
        """
        if edges is not None and edge_mask is not None:
            raise EpverifyError("pass either edges or edge_mask, not both")
        input_ids = self._as_batch(input_ids, "input_ids")
        attention_mask = None if attention_mask is None else self._as_batch(attention_mask, "attention_mask")
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise EpverifyError(
                f"attention_mask has shape {tuple(attention_mask.shape)}"
                f" but input_ids has {tuple(input_ids.shape)}"
            )
        corrupted_ids = None if corrupted_ids is None else self._as_batch(corrupted_ids, "corrupted_ids")

        wants_grad = any(m is not None and m.requires_grad for m in (edge_mask, node_mask))
        with torch.set_grad_enabled(wants_grad):
            if edges is None and edge_mask is None and node_mask is None and corrupted_ids is None:
                return engine.forward(self.adapter, input_ids, attention_mask)
            if edges is not None:
                edge_mask = self.edge_mask(edges)
            elif edge_mask is None:
                edge_mask = torch.ones(self.num_edges, dtype=self.adapter.dtype, device=self.adapter.device)
            ablated = engine.ablated_record(
                self.adapter, ablation, input_ids, attention_mask, corrupted_ids=corrupted_ids, mean=mean
            )
            if node_mask is not None:
                node_mask = node_mask.to(self.adapter.device)
            return engine.masked_run(
                self.adapter, input_ids, ablated, edge_mask.to(self.adapter.device), node_mask, attention_mask
            )

    def _as_batch(self, ids: torch.Tensor, name: str) -> torch.Tensor:
        """A (B, T) tensor on the model's device; a single sequence (T,) becomes a batch of one."""
        ids = torch.as_tensor(ids)
        if ids.dim() == 1:
            ids = ids[None]
        if ids.dim() != 2:
            raise EpverifyError(f"{name} must have shape (batch, seq), got {tuple(ids.shape)}")
        return ids.to(self.adapter.device)
