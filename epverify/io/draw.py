"""Pictures of a run: the circuit as a layered graph, and the training curves.

    draw_circuit(circuit, out / "circuit")           # writes circuit.png and circuit.svg
    plot_history(result.history, out / "training.png")

The circuit is drawn bottom-up: the embeddings on the bottom row, then per layer a row of attention heads and a
row for the MLP, the output (`resid_post`) on top, so every edge runs upward. Edges are coloured by the input
they enter: a head's query, key or value, an MLP, or the output (a legend says which); the three inputs of one
head are bent apart so that parallel q/k/v edges stay visible. Only the components the circuit touches are drawn
(the embeddings and the output always). Large circuits are drawn with thin translucent edges and without node
labels; edges go in one collection (rasterised in SVG beyond a few thousand), so 30,000 edges draw in seconds.

Rendering uses matplotlib's object API (a `Figure`, no pyplot state, no display): PNG through Agg, SVG through
matplotlib's SVG writer. Files are written atomically (a temporary file, then a rename).
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

from ..core.graph import OUTPUT, ComponentGraph
from ..errors import EpverifyError
from . import atomic
from .circuit import Circuit, graph_of, reader_kind

FORMATS = ("png", "svg", "pdf")
EDGE_STYLE = {  # reader kind -> (colour, bend, legend label)
    "q": ("#1f77b4", 0.18, "query (q)"),
    "k": ("#2ca02c", 0.0, "key (k)"),
    "v": ("#d62728", -0.18, "value (v)"),
    "mlp": ("#7f7f7f", 0.08, "MLP input"),
    "output": ("#111111", 0.0, "output"),
}
NODE_STYLE = {  # node kind -> (face colour, marker, legend label)
    "embed": ("#c7e9c0", "s", "embedding"),
    "head": ("#c6dbef", "o", "attention head"),
    "mlp": ("#fdd0a2", "s", "MLP"),
    "output": ("#dadaeb", "D", "output"),
}
LABEL_LIMIT = 150  # nodes; beyond this no node labels
CURVE_LIMIT = 3000  # edges; beyond this straight thin lines
RASTER_LIMIT = 5000  # edges; beyond this the edges are rasterised in SVG and PDF
PNG_DPI = 150


# ----- layout ---------------------------------------------------------------------------------------------------
def _row(graph: ComponentGraph, node: str) -> int:
    """Row of a node: 0 embeddings, 2L+1 layer L's heads, 2L+2 its MLP, 2n+1 the output."""
    if node in graph.embed_names:
        return 0
    if node == OUTPUT:
        return 2 * graph.n_layers + 1
    if node.startswith("m"):
        return 2 * int(node[1:]) + 2
    return 2 * int(node.split(".")[0][1:]) + 1


def _column(graph: ComponentGraph, node: str) -> float:
    """Horizontal place: heads spread by index around 0, embeddings spread likewise, MLPs and the output at 0."""
    if node in graph.embed_names:
        i, n = graph.embed_names.index(node), len(graph.embed_names)
        spread = max(graph.n_heads - 1, 1) / max(n, 1)
        return (i - (n - 1) / 2) * spread
    if node == OUTPUT or node.startswith("m"):
        return 0.0
    head = int(node.split(".")[1][1:])
    return head - (graph.n_heads - 1) / 2


def positions(graph: ComponentGraph, nodes) -> dict[str, tuple[float, float]]:
    """(x, y) of each node in the drawing."""
    return {n: (_column(graph, n), float(_row(graph, n))) for n in nodes}


def _drawn_edges(circuit: Circuit, graph: ComponentGraph) -> list[tuple[str, str, str]]:
    """(writer, fed node, reader kind) per drawn edge: a reader feeds its head(s), its MLP or the output."""
    out = []
    for w, r in circuit.edges:
        kind = reader_kind(r)
        for target in graph.reader_nodes(r) or (OUTPUT,):
            out.append((w, target, kind))
    return out


# ----- the circuit ----------------------------------------------------------------------------------------------
def draw_circuit(circuit: Circuit, prefix: str | Path, formats: Sequence[str] = ("png", "svg"),
                 graph: ComponentGraph | None = None, title: str | None = None) -> list[Path]:
    """Draw `circuit` to `prefix`.png and `prefix`.svg (or the given formats); returns the paths written."""
    formats = [f.strip().lower().lstrip(".") for f in formats if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise EpverifyError(f"cannot draw to format {', '.join(unknown) or '(none)'}: choose from"
                            f" {', '.join(FORMATS)}")
    graph = graph or graph_of(circuit)
    fig = _circuit_figure(circuit, graph, title)
    prefix = Path(prefix)
    dpi = 100 if len(circuit.edges) > RASTER_LIMIT else None  # huge circuits: fewer pixels to fill
    return [_save(fig, prefix.with_name(prefix.name + "." + fmt), fmt, dpi) for fmt in formats]


def _circuit_figure(circuit: Circuit, graph: ComponentGraph, title: str | None):
    import networkx as nx
    from matplotlib.figure import Figure

    edges = _drawn_edges(circuit, graph)
    g = nx.DiGraph()
    g.add_nodes_from(graph.embed_names)
    g.add_node(OUTPUT)
    for w, target, kind in edges:
        g.add_edge(w, target, kind=kind)
    pos = positions(graph, g.nodes)
    rows = 2 * graph.n_layers + 2
    width = min(max(6.0, 1.5 + 0.4 * graph.n_heads), 24.0)
    height = min(max(4.0, 1.0 + 0.45 * rows), 30.0)
    fig = Figure(figsize=(width, height))
    ax = fig.subplots()
    handles = _draw_edges(ax, circuit, edges, pos) + _draw_nodes(ax, g, graph, pos)
    _axes(ax, graph, pos, rows)
    name = circuit.model.get("program") or Path(str(circuit.model.get("path", ""))).name or \
        circuit.model.get("family", "circuit")
    title = title or (f"{name}: {len(circuit.edges)} of {circuit.total_edges} edges (sparsity"
                      f" {circuit.sparsity:.4f}), {circuit.ablation} ablation")
    fig.suptitle(textwrap.fill(title, width=int(width * 13)), x=0.02, ha="left", fontsize=10)
    if not circuit.edges:
        ax.text(0.5, 0.5, "empty circuit: no edge kept", transform=ax.transAxes, ha="center", color="#aa0000")
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    # fixed margins (inches) rather than tight_layout, which would render every edge once more
    fig.subplots_adjust(left=1.0 / width, right=1 - 2.0 / width, bottom=0.3 / height, top=1 - 0.7 / height)
    return fig


def _draw_edges(ax, circuit: Circuit, edges, pos) -> list:
    """One collection of edges per reader kind, quadratic Beziers bent by kind (straight lines when there are
    many); returns the legend handles."""
    from matplotlib.collections import LineCollection, PathCollection
    from matplotlib.lines import Line2D
    from matplotlib.path import Path as MplPath

    n_edges = len(edges)
    curved = n_edges <= CURVE_LIMIT
    line_width, alpha = (1.3, 0.85) if n_edges <= 300 else (0.6, 0.5) if curved else (0.15, 0.25)
    by_kind: dict[str, list] = {}
    for w, target, kind in edges:
        (x0, y0), (x1, y1) = pos[w], pos[target]
        if curved:
            bend = EDGE_STYLE[kind][1]
            cx, cy = (x0 + x1) / 2 - bend * (y1 - y0), (y0 + y1) / 2 + bend * (x1 - x0)
            by_kind.setdefault(kind, []).append(
                MplPath([(x0, y0), (cx, cy), (x1, y1)], [MplPath.MOVETO, MplPath.CURVE3, MplPath.CURVE3]))
        else:
            by_kind.setdefault(kind, []).append([(x0, y0), (x1, y1)])
    kept_by_kind: dict[str, int] = {}
    for _, r in circuit.edges:
        kept_by_kind[reader_kind(r)] = kept_by_kind.get(reader_kind(r), 0) + 1
    handles = []
    for kind, (colour, _, label) in EDGE_STYLE.items():
        if kind not in by_kind:
            continue
        style = {"edgecolors" if curved else "colors": colour, "linewidths": line_width, "alpha": alpha,
                 "zorder": 1}
        coll = PathCollection(by_kind[kind], facecolors="none", **style) if curved else \
            LineCollection(by_kind[kind], **style)
        coll.set_rasterized(n_edges > RASTER_LIMIT)
        coll.set_in_layout(False)
        ax.add_collection(coll)
        handles.append(Line2D([], [], color=colour, lw=2, label=f"{label}: {kept_by_kind[kind]}"))
    return handles


def _draw_nodes(ax, g, graph: ComponentGraph, pos) -> list:
    """The nodes by kind, labelled unless there are many; returns the legend handles."""
    import networkx as nx
    from matplotlib.lines import Line2D

    n_nodes = g.number_of_nodes()
    size = 420 if n_nodes <= 60 else 160 if n_nodes <= LABEL_LIMIT else 25
    kinds: dict[str, list[str]] = {}
    for node in g.nodes:
        kind = "embed" if node in graph.embed_names else "output" if node == OUTPUT else (
            "mlp" if node.startswith("m") else "head")
        kinds.setdefault(kind, []).append(node)
    handles = []
    for kind, nodes in kinds.items():
        colour, marker, label = NODE_STYLE[kind]
        nx.draw_networkx_nodes(g, pos, nodelist=nodes, node_color=colour, node_shape=marker, node_size=size,
                               edgecolors="#333333", linewidths=0.6, ax=ax).set_zorder(2)
        handles.append(Line2D([], [], marker=marker, ls="", markerfacecolor=colour, markeredgecolor="#333333",
                              markersize=8, label=label))
    if n_nodes <= LABEL_LIMIT:
        font = 7 if n_nodes <= 60 else 5
        labels = {n: n.replace("_embeds", "").replace("resid_post", "out") for n in g.nodes}
        for text in nx.draw_networkx_labels(g, pos, labels=labels, font_size=font, ax=ax).values():
            text.set_zorder(3)
    return handles


def _axes(ax, graph: ComponentGraph, pos, rows: int) -> None:
    """Limits, layer labels on the left, no frame."""
    ax.tick_params(left=False, labelleft=True)  # networkx switched the tick labels off
    xs = [x for x, _ in pos.values()] + [-(graph.n_heads - 1) / 2, (graph.n_heads - 1) / 2]
    ax.set_xlim(min(xs) - 1, max(xs) + 1)
    ax.set_ylim(-0.7, rows - 0.3)
    step = max(1, math.ceil(graph.n_layers / 16))
    ticks = [0] + [2 * layer + 1 for layer in range(0, graph.n_layers, step)] + [rows - 1]
    labels = ["embeddings"] + [f"layer {layer}" for layer in range(0, graph.n_layers, step)] + ["output"]
    ax.set_yticks(ticks, labels, fontsize=8)
    ax.set_xticks([])
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)


# ----- training curves ------------------------------------------------------------------------------------------
def plot_history(history: Sequence[dict], path: str | Path) -> Path:
    """Plot the trainer's history records (step, faithfulness, sparsity, target, ...) to `path` (PNG, or the
    format its suffix names): the faithfulness loss (KL) above, the edge sparsity against its target below."""
    from matplotlib.figure import Figure

    if not history:
        raise EpverifyError("no training history to plot: the run recorded no steps")
    missing = sorted({"step", "faithfulness", "sparsity", "target"} - set(history[0]))
    if missing:
        raise EpverifyError(f"history records lack {', '.join(missing)}: pass the trainer's history")
    steps = [r["step"] for r in history]
    kl = [r["faithfulness"] for r in history]
    fig = Figure(figsize=(7.5, 5.5))
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(steps, kl, color="#1f77b4", lw=1.2, label="faithfulness loss (KL)")
    if all(v > 0 for v in kl) and max(kl) / min(kl) > 50:
        top.set_yscale("log")
    top.set_ylabel("KL(full || circuit)")
    top.grid(alpha=0.3)
    top.legend(loc="upper right", fontsize=8)
    bottom.plot(steps, [r["sparsity"] for r in history], color="#d62728", lw=1.2, label="edge sparsity")
    bottom.plot(steps, [r["target"] for r in history], color="#333333", lw=1.0, ls="--", label="target")
    bottom.set_ylabel("sparsity")
    bottom.set_xlabel("step")
    bottom.set_ylim(min(0.0, min(r["sparsity"] for r in history)) - 0.02,
                    max(1.0, max(r["target"] for r in history)) + 0.02)
    bottom.grid(alpha=0.3)
    bottom.legend(loc="lower right", fontsize=8)
    last = history[-1]
    top.set_title(f"{len(history)} steps: final KL {last['faithfulness']:.4g}, sparsity {last['sparsity']:.4f}"
                  f" (target {last['target']:.4f})", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    if fmt not in FORMATS:
        raise EpverifyError(f"cannot plot to {path}: the suffix must be one of {', '.join(FORMATS)}")
    return _save(fig, path, fmt)


def _save(fig, path: Path, fmt: str, dpi: int | None = None) -> Path:
    return atomic.write_file(path, lambda tmp: fig.savefig(tmp, format=fmt,
                                                            dpi=dpi or (PNG_DPI if fmt == "png" else None)))


def plot_sweep(rows: Sequence[dict], knee_target: float, path: str | Path) -> Path:
    """Plot a sweep's runs (`epverify sweep`: dicts with target, seed, edges, kl and the task's metrics) to `path`:
    KL against kept edges above, the task metric (logit difference, else accuracy) below, a line per seed, the
    knee's runs circled."""
    from matplotlib.figure import Figure

    metric = next((m for m in ("logit_diff", "accuracy") if m in rows[0]), None)
    fig = Figure(figsize=(7.5, 5.5 if metric else 3.5))
    axes = fig.subplots(2 if metric else 1, 1, sharex=True, squeeze=False)[:, 0]
    for key, ax, label in zip(("kl", metric), axes, ("KL(full || circuit)", metric)):
        for seed in sorted({r["seed"] for r in rows}):
            mine = sorted((r for r in rows if r["seed"] == seed), key=lambda r: r["edges"])
            ax.plot([r["edges"] for r in mine], [r.get(key, 0.0) for r in mine], marker="o", lw=1.2,
                    label=f"seed {seed}")
        knee = [r for r in rows if r["target"] == knee_target]
        ax.scatter([r["edges"] for r in knee], [r.get(key, 0.0) for r in knee], s=140, facecolors="none",
                   edgecolors="#d62728", lw=1.5, label=f"knee: target {knee_target:g}", zorder=3)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("edges kept")
    axes[0].set_title("faithfulness against circuit size, one line per seed", fontsize=10)
    fig.tight_layout()
    return _save(fig, Path(path), "png")


def plot_compare(report: dict, path: str | Path) -> Path:
    """Plot `epverify compare`'s faithfulness curves to `path`: each method's normalised logit difference (MIB's
    faithfulness, 1 = the full model) of its top-k edges against k, Edge Pruning's circuit size marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.subplots()
    for row in report["rows"]:
        ax.plot(row["curve"]["counts"], row["curve"]["logit_diff"], marker=".", lw=1.2, label=row["method"])
    ax.axvline(report["k"], color="#888888", ls="--", lw=1, label=f"k = {report['k']} (Edge Pruning's circuit)")
    ax.axhline(1.0, color="#cccccc", lw=0.8)
    ax.set_xscale("symlog", linthresh=max(1, report["k"] // 4))
    ax.set_xlim(left=0)
    ax.set_xlabel("edges kept (each method's top k)")
    ax.set_ylabel("faithfulness (normalised logit difference)")
    ax.set_title(f"{report['model']}: {report['ablation']} ablation", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, Path(path), "png")
