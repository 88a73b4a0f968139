"""MIB conformance: CPR and CMD as epverify computes them equal a hand-written transcription of the MIB circuit
track's scoring, read in hannamw/MIB-circuit-track at commit bfcce7b5019a618cccb31fc2c16b786afc6cffdb
(`evaluate_graph.py`: `evaluate_area_under_curve`, `evaluate_baseline`) and b7056015f428e274a9801d5cf0e7f15700836834
(`graph.py`: `Graph.from_model`, `apply_topn`):

- the grid: 0.1%, 0.2%, 0.5%, 1%, 2%, 5%, 10%, 20%, 50%, 100% of the edges, int(pct * n_edges) edges at each;
- the edges kept: the n of largest |score|, by a stable sort of the graph's edges in the order `from_model` adds
  them (so ties go to the earlier edge in that order);
- the normalisation: f = (m(C) - m(empty)) / (m(model) - m(empty)) of the mean logit difference, the empty
  circuit being `apply_topn(0)` and the model's own value `evaluate_baseline`;
- CPR = sum of trapezoids (x2 - x1) * (f1 + f2) / 2 over the grid's fractions (linear in x), CMD the same of
  |1 - f|.

The metric values come from epverify's evaluator in both (the engine is checked against the models elsewhere);
what is compared is the scoring. Graphs where EAP-IG and epverify name the same edges (one embedding writer, no
grouped KV heads), scores with many ties.
"""

import pytest
import torch

from epverify.adapters import wrap
from epverify.adapters.registry import Sizes, family
from epverify.eval.curves import faithfulness_curve
from epverify.eval.evaluator import Evaluator
from epverify.io.eap_ig import eap_edge_groups
from epverify.tasks import get_task
from epverify.tasks.tokenizer import build_word_tokenizer

GRID = (.001, .002, .005, .01, .02, .05, .1, .2, .5, 1)


def _from_model_names(n_layers: int, n_heads: int, parallel: bool) -> list[str]:
    """EAP-IG's Graph.from_model, edge by edge, transcribed."""
    names, residual = [], ["input"]
    for layer in range(n_layers):
        heads = [f"a{layer}.h{h}" for h in range(n_heads)]
        if parallel:
            for node in residual:
                for head in heads:
                    for letter in "qkv":
                        names.append(f"{node}->{head}<{letter}>")
                names.append(f"{node}->m{layer}")
            residual = residual + heads + [f"m{layer}"]
        else:
            for node in residual:
                for head in heads:
                    for letter in "qkv":
                        names.append(f"{node}->{head}<{letter}>")
            residual = residual + heads
            for node in residual:
                names.append(f"{node}->m{layer}")
            residual = residual + [f"m{layer}"]
    return names + [f"{node}->logits" for node in residual]


def _mib_cpr_cmd(names: list[str], score: dict[str, float], logit_diff) -> tuple[float, float]:
    """evaluate_area_under_curve, transcribed: `logit_diff(kept names)` is the mean logit difference."""
    baseline = logit_diff(names)
    corrupted = logit_diff([])
    faithfulnesses = []
    for pct in GRID:
        n = int(pct * len(names))
        kept = sorted(names, key=lambda name: abs(score[name]), reverse=True)[:n]
        faithfulnesses.append((logit_diff(kept) - corrupted) / (baseline - corrupted))
    area_under = area_from_100 = 0.0
    for i in range(len(faithfulnesses) - 1):
        width = GRID[i + 1] - GRID[i]
        area_from_100 += width * ((abs(1.0 - faithfulnesses[i]) + abs(1.0 - faithfulnesses[i + 1])) / 2)
        area_under += width * ((faithfulnesses[i] + faithfulnesses[i + 1]) / 2)
    return area_under, area_from_100


@pytest.fixture(scope="module")
def tokenizer():
    return build_word_tokenizer(get_task("ioi").vocabulary())


@pytest.mark.parametrize("name, layers, parallel", [("llama", 2, False), ("gpt_neox", 2, True),
                                                     ("llama", 3, False)])
@pytest.mark.parametrize("ties", [True, False])
def test_cpr_and_cmd_equal_mibs_scoring(tokenizer, name, layers, parallel, ties):
    options = {"use_parallel_residual": parallel} if name == "gpt_neox" else {}
    model = family(name).tiny_model(Sizes(n_layers=layers, n_heads=3, n_kv_heads=3, head_dim=8, d_model=24,
                                          vocab=len(tokenizer)), seed=layers, **options)
    adapter = wrap(model).adapter
    graph = adapter.graph
    task = get_task("ioi")
    data = task.encode(tokenizer, task.examples(24, seed=1)).data
    ev = Evaluator(adapter, data, "interchange", task=task)
    groups = eap_edge_groups(graph)
    names = _from_model_names(graph.n_layers, graph.n_heads, graph.parallel_mlp)
    assert sorted(names) == sorted(groups) and all(len(edges) == 1 for edges in groups.values())
    gen = torch.Generator().manual_seed(layers)
    raw = torch.rand(graph.num_edges, generator=gen, dtype=torch.float64)
    scores = (raw * 4).floor() / 4 if ties else raw  # four distinct values: ties everywhere
    by_name = {n: float(scores[graph.edge_index[groups[n][0]]]) for n in names}

    def logit_diff(kept: list[str]) -> float:
        mask = torch.zeros(graph.num_edges)
        for n in kept:
            mask[graph.edge_index[groups[n][0]]] = 1.0
        return ev.evaluate(mask, ("logit_diff",))["logit_diff"]

    cpr, cmd = _mib_cpr_cmd(names, by_name, logit_diff)
    curve = faithfulness_curve(ev, scores, metrics=("logit_diff",))
    assert curve.counts == [int(p * graph.num_edges) for p in GRID]
    assert curve.cpr() == pytest.approx(cpr, abs=1e-9) and curve.cmd() == pytest.approx(cmd, abs=1e-9)


def test_where_the_normalisation_is_undefined_mib_divides_by_zero_and_epverify_reports_zero(tokenizer):
    """A model whose logit difference does not move (zero unembedding): MIB's scoring raises, epverify's f is 0."""
    model = family("llama").tiny_model(Sizes(n_layers=1, n_heads=2, n_kv_heads=2, head_dim=8, d_model=16,
                                             vocab=len(tokenizer)))
    with torch.no_grad():
        model.lm_head.weight.zero_()
    adapter = wrap(model).adapter
    task = get_task("ioi")
    ev = Evaluator(adapter, task.encode(tokenizer, task.examples(8, seed=1)).data, "interchange", task=task)
    graph = adapter.graph
    groups = eap_edge_groups(graph)
    names = _from_model_names(graph.n_layers, graph.n_heads, graph.parallel_mlp)
    scores = torch.rand(graph.num_edges, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def logit_diff(kept):
        mask = torch.zeros(graph.num_edges)
        for n in kept:
            mask[graph.edge_index[groups[n][0]]] = 1.0
        return ev.evaluate(mask, ("logit_diff",))["logit_diff"]

    with pytest.raises(ZeroDivisionError):
        _mib_cpr_cmd(names, {n: float(scores[graph.edge_index[groups[n][0]]]) for n in names}, logit_diff)
    curve = faithfulness_curve(ev, scores, metrics=("logit_diff",))
    assert curve.normalized() == [0.0] * len(GRID) and curve.cpr() == 0.0 and curve.cmd() == pytest.approx(0.999)
