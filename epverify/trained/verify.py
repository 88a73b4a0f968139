"""Is the circuit of a trained model true on its weights? The checks a model must pass to be shipped.

Measured on the program's whole dataset (every input of the domain: the recipes enumerate them), with the model
frozen and run through the masked engine as `epverify prune` runs it (docs/ground_truth.md, "Trained models"):

- `accuracy`: the model's decisions (argmax of its next-token logits over the output tokens) against the
  program's, at every position after BOS (>= 0.99);
- `iia[component]`: interchange-intervention accuracy of every aligned component: the fraction of positions where
  the model with that component's output taken from a source input decides as the program does with its
  counterpart's taken from the same source (>= 0.95);
- per ablation, for the circuit (the program's circuit mapped through the alignment, less the edges the weights do
  not use: `unused_edges`): `kl`, the circuit alone's
  KL to the full model (mean per position, <= 0.01 nats); `accuracy`, its decisions against the program's
  (>= 0.99); `min_truth_edge` (the smallest loss increase from removing any one of its edges) and
  `max_other_edge` (the largest change from adding back any one other edge), the first at least 10x the second.

None of it uses a recovery result: the rule would otherwise certify what it is meant to test.
"""

from __future__ import annotations

import torch

from ..eval.evaluator import Evaluator
from .card import CHECKED_ABLATIONS, Vocabulary
from .runner import mixed_run, out_edges

BARS = {"accuracy": 0.99, "iia": 0.95, "kl": 0.01, "circuit_accuracy": 0.99, "separation": 10.0}
UNUSED = 1e-3  # nats per position: a mapped edge whose removal changes the circuit's loss by less is not used


def program_decisions(high, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        _, logits = mixed_run(high, ids, mask, torch.ones(high.graph.num_edges), None)
    return high.decide(logits)


def _choices(outputs: torch.Tensor, vocab: Vocabulary) -> torch.Tensor:
    """Output value index per row (the last index, len(values), standing for None)."""
    return outputs[..., torch.tensor(vocab.output_tokens)].argmax(-1)


def _agreement(choices: torch.Tensor, decisions: torch.Tensor, n_values: int) -> float:
    return float((choices == decisions.clamp(min=-1) % (n_values + 1)).float().mean())


def unused_edges(evaluator: Evaluator, mapped: list) -> tuple[list, list[dict]]:
    """The mapped circuit without the edges these weights do not use: repeatedly drop the edge whose removal
    changes the circuit's loss least, while that change is below `UNUSED`. A dense model need not use every edge
    its program does (under zero ablation a compiled head reads a constant direction the trained one has no use
    for). Returns (kept edges, [{edge, change}] in drop order)."""
    graph, kept, dropped = evaluator.graph, list(mapped), []
    while kept:
        mask = torch.zeros(graph.num_edges)
        mask[graph.index_of(kept)] = 1.0
        base = evaluator.mean_loss(mask)
        changes = []
        for edge in kept:
            mask[graph.edge_index[edge]] = 0.0
            changes.append((abs(evaluator.mean_loss(mask) - base), edge))
            mask[graph.edge_index[edge]] = 1.0
        change, edge = min(changes)
        if change >= UNUSED:
            break
        kept.remove(edge)
        dropped.append({"edge": list(edge), "change": change})
    return kept, dropped


def circuit_checks(evaluator: Evaluator, truth: list, decisions: torch.Tensor, vocab: Vocabulary,
                   edges_checked: bool = True) -> dict:
    """The per-ablation checks of one circuit; `decisions` are the program's at the loss positions, example-major
    (the order of `Evaluator.run`)."""
    graph = evaluator.graph
    mask = torch.zeros(graph.num_edges)
    mask[graph.index_of(truth)] = 1.0
    loss = evaluator.mean_loss(mask)
    with torch.no_grad():
        outputs = torch.cat([evaluator.run(mask, b) for b in range(len(evaluator))])
    n_values = len(vocab.output_tokens) - 1
    out = {"edges": [list(e) for e in truth], "kl": loss,
           "accuracy": _agreement(_choices(outputs, vocab), decisions, n_values)}
    if edges_checked:
        removed = []
        for e in graph.index_of(truth):
            mask[e] = 0.0
            removed.append(evaluator.mean_loss(mask) - loss)
            mask[e] = 1.0
        added = []
        for e in torch.nonzero(mask == 0).flatten().tolist():
            mask[e] = 1.0
            added.append(abs(evaluator.mean_loss(mask) - loss))
            mask[e] = 0.0
        out["min_truth_edge"] = min(removed) if removed else None
        out["max_other_edge"] = max(added) if added else 0.0
    return out


def interchange_accuracy(high, low, alignment: dict, ids_high, ids_low, mask, vocab: Vocabulary,
                         gen: torch.Generator) -> dict[str, float]:
    """IIA of every aligned writer over base rows with a random source row of the same length each."""
    lengths = mask.sum(1)
    source = torch.empty(len(lengths), dtype=torch.long)
    for n in lengths.unique():
        rows = torch.nonzero(lengths == n).flatten()
        source[rows] = rows[torch.randint(len(rows), (len(rows),), generator=gen)]
    where = mask.bool().clone()
    where[:, 0] = False
    with torch.no_grad():
        high_sources, _ = mixed_run(high, ids_high[source], mask, torch.ones(high.graph.num_edges), None)
        low_sources, _ = mixed_run(low, ids_low[source], mask, torch.ones(low.graph.num_edges), None)
    out = {}
    for node in high.graph.writers:
        if node not in alignment:
            continue
        keep = torch.ones(high.graph.num_edges)
        keep[out_edges(high.graph, node)] = 0.0
        low_keep = torch.ones(low.graph.num_edges)
        low_keep[out_edges(low.graph, alignment[node])] = 0.0
        with torch.no_grad():
            target = high.decide(mixed_run(high, ids_high, mask, keep, high_sources)[1])
            outputs = mixed_run(low, ids_low, mask, low_keep, low_sources)[1]
        out[node] = _agreement(_choices(outputs[where], vocab), target[where], len(vocab.output_tokens) - 1)
    return out


def check_model(low, high, vocab: Vocabulary, alignment: dict, truths: dict, data, edges_checked: bool = True,
                seed: int = 0) -> dict:
    """Every check of the module docstring for a frozen trained model `low` (an adapter) against its program
    `high`; `truths`: ablation -> the model's circuit; `data`: the card's PruneData."""
    ids_high, _ = _program_ids(high, data, vocab)
    decisions = program_decisions(high, ids_high, data.attention_mask)
    where = data.loss_mask
    with torch.no_grad():
        full = mixed_run(low, data.input_ids, data.attention_mask, torch.ones(low.graph.num_edges), None)[1]
    n_values = len(vocab.output_tokens) - 1
    checks = {"accuracy": _agreement(_choices(full[where], vocab), decisions[where], n_values)}
    checks["iia"] = interchange_accuracy(high, low, alignment, ids_high, data.input_ids, data.attention_mask,
                                         vocab, torch.Generator().manual_seed(seed))
    checks["ground_truth"] = {}
    for ablation in CHECKED_ABLATIONS:
        evaluator = Evaluator(low, data, ablation)
        kept, dropped = unused_edges(evaluator, truths[ablation])
        checks["ground_truth"][ablation] = {
            **circuit_checks(evaluator, kept, decisions[where], vocab, edges_checked),
            "mapped_from_program": len(truths[ablation]), "unused": dropped}
    return checks


def _program_ids(high, data, vocab: Vocabulary) -> tuple[torch.Tensor, torch.Tensor]:
    """The program's own token ids for the model's inputs (the inverse of `Vocabulary.encode`)."""
    compiled = high.model
    table = {vocab.bos: compiled.input_encoding["compiler_bos"], vocab.pad: compiled.input_encoding["compiler_pad"]}
    table.update({token: compiled.input_encoding[value] for value, token in vocab.token_of_input.items()})
    lookup = torch.zeros(max(table) + 1, dtype=torch.long)
    for token, index in table.items():
        lookup[token] = index
    return lookup[data.input_ids], data.attention_mask


def passes(checks: dict) -> list[str]:
    """What falls short of the shipping bars (empty: the model may ship)."""
    short = []
    if checks["accuracy"] < BARS["accuracy"]:
        short.append(f"accuracy {checks['accuracy']:.4f} < {BARS['accuracy']}")
    for node, value in checks["iia"].items():
        if value < BARS["iia"]:
            short.append(f"IIA of {node} {value:.4f} < {BARS['iia']}")
    for ablation in CHECKED_ABLATIONS:
        c = checks["ground_truth"][ablation]
        if not c["edges"]:
            short.append(f"{ablation}: the circuit is empty (every mapped edge unused)")
        if c["kl"] > BARS["kl"]:
            short.append(f"{ablation}: circuit KL {c['kl']:.2e} > {BARS['kl']}")
        if c["accuracy"] < BARS["circuit_accuracy"]:
            short.append(f"{ablation}: circuit accuracy {c['accuracy']:.4f} < {BARS['circuit_accuracy']}")
        if c.get("min_truth_edge") is not None and c["min_truth_edge"] < BARS["separation"] * c["max_other_edge"]:
            short.append(f"{ablation}: the least truth edge ({c['min_truth_edge']:.2e}) is not 10x the largest other"
                         f" edge ({c['max_other_edge']:.2e})")
    return short
