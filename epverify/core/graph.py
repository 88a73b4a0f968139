"""The component graph: which writers feed which readers, and how edges are numbered.

Writers, in forward order: the embedding nodes, then per layer the heads `a{l}.h{i}` and the MLP `m{l}`.
Readers, in forward order: per layer the query inputs `a{l}.h{i}.q` of every head and the key and value inputs
`a{l}.h{j}.k`, `a{l}.h{j}.v` of every key/value head (j counts KV heads: under grouped-query attention one k and
one v reader serve a group of query heads), then the MLP input `m{l}`; last the model output `resid_post`.

Every writer upstream of a reader feeds it, so the readers of one group (a layer's attention inputs, a layer's MLP
input, the output) all read the same prefix of the writer order. Edges are numbered group by group, reader by
reader, writer by writer: a group's edge masks are one contiguous block that reshapes to (readers, writers).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ..errors import EpverifyError

OUTPUT = "resid_post"


@dataclass(frozen=True)
class ReaderGroup:
    """Readers that share their upstream writers: the first `n_writers` writers in writer order."""

    kind: str  # "attn", "mlp" or "out"
    layer: int  # -1 for the output
    readers: tuple[str, ...]
    n_writers: int
    edge_start: int

    @property
    def n_edges(self) -> int:
        return len(self.readers) * self.n_writers


@dataclass(frozen=True)
class ComponentGraph:
    """Writers, readers and edges of a transformer with `n_layers` layers of attention then MLP."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    embed_names: tuple[str, ...]
    parallel_mlp: bool = False  # GPT-NeoX: the MLP reads the layer's input, not its attention output

    def __post_init__(self) -> None:
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")

    # ----- writers -------------------------------------------------------------------------------------------
    @cached_property
    def writers(self) -> tuple[str, ...]:
        names = list(self.embed_names)
        for layer in range(self.n_layers):
            names += [f"a{layer}.h{h}" for h in range(self.n_heads)]
            names.append(f"m{layer}")
        return tuple(names)

    @cached_property
    def writer_index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.writers)}

    def head_writer_start(self, layer: int) -> int:
        """Index of writer `a{layer}.h0`."""
        return len(self.embed_names) + layer * (self.n_heads + 1)

    def mlp_writer(self, layer: int) -> int:
        return self.head_writer_start(layer) + self.n_heads

    # ----- readers -------------------------------------------------------------------------------------------
    @cached_property
    def groups(self) -> tuple[ReaderGroup, ...]:
        groups: list[ReaderGroup] = []
        start = 0
        for layer in range(self.n_layers):
            readers = tuple(
                [f"a{layer}.h{h}.q" for h in range(self.n_heads)]
                + [f"a{layer}.h{j}.k" for j in range(self.n_kv_heads)]
                + [f"a{layer}.h{j}.v" for j in range(self.n_kv_heads)]
            )
            group = ReaderGroup("attn", layer, readers, self.head_writer_start(layer), start)
            groups.append(group)
            start += group.n_edges
            mlp_writers = self.head_writer_start(layer) + (0 if self.parallel_mlp else self.n_heads)
            group = ReaderGroup("mlp", layer, (f"m{layer}",), mlp_writers, start)
            groups.append(group)
            start += group.n_edges
        groups.append(ReaderGroup("out", -1, (OUTPUT,), len(self.writers), start))
        return tuple(groups)

    def attn_group(self, layer: int) -> ReaderGroup:
        return self.groups[2 * layer]

    def mlp_group(self, layer: int) -> ReaderGroup:
        return self.groups[2 * layer + 1]

    @property
    def out_group(self) -> ReaderGroup:
        return self.groups[-1]

    @cached_property
    def readers(self) -> tuple[str, ...]:
        return tuple(r for g in self.groups for r in g.readers)

    def reader_nodes(self, reader: str) -> tuple[str, ...]:
        """The writers whose computation a reader feeds (empty for the output)."""
        if reader == OUTPUT:
            return ()
        if reader.startswith("m"):
            return (reader,)
        head, part = reader.rsplit(".", 1)
        if part == "q":
            return (head,)
        layer, index = head[1:].split(".h")
        group = self.n_heads // self.n_kv_heads
        return tuple(f"a{layer}.h{h}" for h in range(int(index) * group, (int(index) + 1) * group))

    # ----- edges ---------------------------------------------------------------------------------------------
    @property
    def num_edges(self) -> int:
        return self.groups[-1].edge_start + self.groups[-1].n_edges

    @cached_property
    def edges(self) -> tuple[tuple[str, str], ...]:
        """Every edge as (writer, reader), in edge-index order."""
        out = []
        for group in self.groups:
            for reader in group.readers:
                out += [(w, reader) for w in self.writers[: group.n_writers]]
        return tuple(out)

    @cached_property
    def edge_index(self) -> dict[tuple[str, str], int]:
        return {edge: i for i, edge in enumerate(self.edges)}

    @cached_property
    def edge_writer(self) -> list[int]:
        """Writer index of every edge, in edge order."""
        return [self.writer_index[w] for w, _ in self.edges]

    def index_of(self, edges) -> list[int]:
        """Edge indices of `[writer, reader]` pairs; an unknown edge is reported by name."""
        out = []
        for w, r in edges:
            try:
                out.append(self.edge_index[(w, r)])
            except KeyError:
                raise EpverifyError(
                    f"edge [{w!r}, {r!r}] is not in this model's graph "
                    f"({self.n_layers} layers, {self.n_heads} heads): was the circuit made for another model?"
                ) from None
        return out

    def summary(self) -> dict:
        return {
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "embed_names": list(self.embed_names),
            "parallel_mlp": self.parallel_mlp,
            "num_edges": self.num_edges,
        }


def count_edges(n_layers: int, n_heads: int, n_kv_heads: int, n_embeds: int, parallel_mlp: bool = False) -> int:
    """Closed form of the edge count (the graph enumerates them; this checks the enumeration)."""
    total = 0
    per_layer_writers = n_heads + 1
    for layer in range(n_layers):
        upstream = n_embeds + layer * per_layer_writers
        total += (n_heads + 2 * n_kv_heads) * upstream
        total += upstream + (0 if parallel_mlp else n_heads)
    return total + n_embeds + n_layers * per_layer_writers
