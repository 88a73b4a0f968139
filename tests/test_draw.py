"""Drawings: the circuit (PNG and SVG, small and 10k-edge graphs, empty), the training plot, and the draw and
export subcommands."""

import json
import random

import pytest

from epverify.cli import main
from epverify.core.graph import ComponentGraph
from epverify.errors import EpverifyError
from epverify.io import draw, export
from epverify.io.circuit import Circuit

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _circuit(graph, fraction, seed=0):
    rng = random.Random(seed)
    edges = [e for e in graph.edges if rng.random() < fraction]
    return Circuit(edges, graph.num_edges, model={**graph.summary(), "d_model": 8, "family": "test"})


def test_draws_png_and_svg_at_the_prefix(tmp_path):
    graph = ComponentGraph(3, 4, 2, ("tok_embeds", "pos_embeds"))
    written = draw.draw_circuit(_circuit(graph, 0.2), tmp_path / "circuit")
    assert written == [tmp_path / "circuit.png", tmp_path / "circuit.svg"]
    assert written[0].read_bytes().startswith(PNG_MAGIC)
    svg = written[1].read_text()
    assert "<svg" in svg and "query (q)" in svg and "key (k)" in svg and "value (v)" in svg  # the legend
    assert not list(tmp_path.glob("*.tmp"))


def test_layout_puts_embeddings_at_the_bottom_and_the_output_on_top():
    graph = ComponentGraph(2, 3, 3, ("tok_embeds", "pos_embeds"))
    pos = draw.positions(graph, graph.writers + ("resid_post",))
    assert {pos[e][1] for e in graph.embed_names} == {0.0}
    assert pos["a0.h0"][1] < pos["m0"][1] < pos["a1.h2"][1] < pos["m1"][1] < pos["resid_post"][1]
    assert pos["a1.h0"][0] < pos["a1.h1"][0] < pos["a1.h2"][0]


def test_large_and_empty_circuits_draw(tmp_path):
    big = ComponentGraph(8, 10, 10, ("embeds",))  # ~10,000 edges: thin straight lines, rasterised, no labels
    assert big.num_edges > draw.RASTER_LIMIT
    assert draw.draw_circuit(_circuit(big, 1.0), tmp_path / "big")[0].stat().st_size > 0
    empty = Circuit([], big.num_edges, model=big.summary())
    assert draw.draw_circuit(empty, tmp_path / "empty", formats=["svg"])[0].name == "empty.svg"


def test_unknown_format_is_refused(tmp_path):
    graph = ComponentGraph(1, 1, 1, ("embeds",))
    with pytest.raises(EpverifyError, match="gif"):
        draw.draw_circuit(_circuit(graph, 1.0), tmp_path / "c", formats=["gif"])


def test_training_plot(tmp_path):
    history = [{"step": s + 1, "loss": 1.0 / (s + 1), "faithfulness": 2.0 / (s + 1), "sparsity": min(0.9, s / 40),
                "target": min(0.9, s / 30), "lambda1": 0.1, "lambda2": 0.01} for s in range(60)]
    path = draw.plot_history(history, tmp_path / "training.png")
    assert path.read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(EpverifyError, match="no training history"):
        draw.plot_history([], tmp_path / "t.png")


def test_draw_and_export_commands(tmp_path, capsys):
    graph = ComponentGraph(2, 2, 2, ("tok_embeds", "pos_embeds"))
    path = _circuit(graph, 0.4).to_json(tmp_path / "run" / "circuit.json")
    assert main(["draw", str(path)]) == 0
    assert (tmp_path / "run" / "circuit.png").is_file() and (tmp_path / "run" / "circuit.svg").is_file()
    assert main(["draw", str(path), "--out", str(tmp_path / "pic"), "--format", "svg"]) == 0
    assert (tmp_path / "pic.svg").is_file() and not (tmp_path / "pic.png").exists()

    eap = tmp_path / "c.eap.json"
    assert main(["export", str(path), "--to", "eap-ig", "--out", str(eap)]) == 0
    assert main(["draw", str(eap), "--format", "png"]) == 0 and (tmp_path / "c.eap.png").is_file()
    assert main(["export", str(eap), "--to", "epverify", "--out", str(tmp_path / "back.json")]) == 0
    assert json.loads((tmp_path / "back.json").read_text())["edges"] == json.loads(path.read_text())["edges"]
    assert main(["export", str(path), "--to", "graphml", "--out", str(tmp_path / "c.graphml")]) == 0
    assert main(["export", str(path), "--to", "mib", "--task", "ioi", "--model-name", "gpt2", "--out",
                 str(tmp_path / "mib")]) == 0
    assert export.is_eap_ig(json.loads((tmp_path / "mib" / "ioi_gpt2" / "importances.json").read_text()))
    capsys.readouterr()

    assert main(["export", str(path), "--to", "mib", "--out", str(tmp_path / "mib2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--task" in err[0]
    assert main(["draw", str(tmp_path / "nope.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
