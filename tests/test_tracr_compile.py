"""The torch model of a compiled program reproduces tracr's own model, and compiling rejects bad input clearly."""

import numpy as np
import pytest
import torch

from epverify.adapters.tracr import TracrAdapter
from epverify.core import engine
from epverify.core.oracle import run_with_edges
from epverify.errors import EpverifyError
from epverify.tracr import load
from epverify.tracr.compile import compile_rasp
from epverify.tracr.data import clean_inputs, corrupted_partners
from epverify.tracr.model import BOS, PAD, CompiledModel
from epverify.tracr.zoo import ZOO

jax = pytest.importorskip("jax")
rasp = pytest.importorskip("tracr.rasp.rasp")
compiling = pytest.importorskip("tracr.compiler.compiling")


def _in_basis_of(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """tracr's residual with its dimensions in our order. tracr names unnamed expressions from a process-wide
    counter and orders the residual basis by those names, so a program compiled after other RASP programs in the
    same process (another test) gets an equivalent basis in another order. Each of our dimensions is paired with
    the unused tracr dimension whose values over the whole batch are closest; the identity when the orders agree."""
    a = ours.reshape(-1, ours.shape[-1]).T
    b = theirs.reshape(-1, theirs.shape[-1]).T
    order, used = [], set()
    for column in a:
        row = np.abs(b - column).max(-1)  # distance to every tracr dimension
        pick = min((d, j) for j, d in enumerate(row) if j not in used)[1]
        used.add(pick)
        order.append(pick)
    return theirs[..., order]


@pytest.mark.parametrize("entry", ZOO, ids=lambda e: e.name)
def test_torch_model_equals_tracr_on_every_input(entry):
    """Decoded outputs are identical and residuals agree to float32 rounding, on the program's whole dataset,
    run as one padded batch (so padding keys must be masked) against tracr's model run length by length."""
    shipped = load(entry.name)
    reference = compiling.compile_rasp_to_model(entry.make(), set(entry.vocab), entry.max_seq_len,
                                                causal=entry.causal, compiler_bos=BOS, compiler_pad=PAD)
    inputs = clean_inputs(shipped.dataset)
    ids, mask = shipped.encode(inputs)
    record = engine.full_run(TracrAdapter(shipped), ids, mask)
    decoded = shipped.decode(record.logits, mask)
    forward = jax.jit(reference.forward)
    for length in sorted({len(s) for s in inputs}):
        rows = [i for i, s in enumerate(inputs) if len(s) == length]
        out = forward(reference.params, np.asarray(ids[rows, : length + 1]))
        ours = record.final[rows, : length + 1].numpy()
        residual = _in_basis_of(ours, np.asarray(out.transformer_output.output))
        np.testing.assert_allclose(ours, residual, atol=1e-4, rtol=1e-5)
        theirs = np.asarray(out.unembedded_output)[:, 1:]
        raw = residual[:, 1:] @ shipped.weights["unembed"].numpy()
        for row, i in enumerate(rows):
            if shipped.categorical:  # where no output direction is set, RASP's value is None
                expected = [reference.output_encoder.decode([int(v)])[0] if r.max() >= 0.5 else None
                            for v, r in zip(theirs[row], raw[row])]
                assert decoded[i] == expected, inputs[i]
            else:
                np.testing.assert_allclose(decoded[i], theirs[row], atol=1e-3)


def test_save_and_load_round_trip(tmp_path):
    model = load("xproportion")
    model.save(tmp_path / "copy")
    again = CompiledModel.load(tmp_path / "copy")
    assert again.metadata() == model.metadata()
    for key, value in model.weights.items():
        assert torch.equal(again.weights[key], value)


def test_compile_rasp_returns_a_runnable_model():
    program = rasp.numerical(rasp.Aggregate(rasp.Select(rasp.indices, rasp.indices, rasp.Comparison.LEQ),
                                            rasp.numerical(rasp.Map(lambda x: 1 if x == "a" else 0, rasp.tokens)),
                                            default=0))
    model = compile_rasp(program, {"a", "b"}, 4, causal=True)
    ids, mask = model.encode([["a", "b", "a"], ["b"]])
    out = model.decode(engine.forward(TracrAdapter(model), ids, mask), mask)
    assert out == [[1.0, 0.5, 0.6667], [0.0]]


def test_uncompilable_program_names_the_expression():
    bad = rasp.Aggregate(rasp.Select(rasp.tokens, rasp.tokens, rasp.Comparison.EQ),
                         rasp.Map(lambda x: x, rasp.tokens), default=0)  # categorical aggregate, non-zero default
    with pytest.raises(EpverifyError, match=r"tracr c(an|ould) ?n[o']?t compile .*aggregate"):
        compile_rasp(bad.named("aggregate_bad"), {1, 2}, 3)


@pytest.mark.parametrize("special", [BOS, PAD])
def test_vocab_with_reserved_token_is_rejected(special):
    with pytest.raises(EpverifyError, match="reserves"):
        compile_rasp(rasp.Map(lambda x: x, rasp.tokens), {"a", special}, 3)


def test_input_outside_vocab_and_too_long_are_rejected():
    model = load("reverse")
    with pytest.raises(EpverifyError, match="not in the vocabulary"):
        model.encode([[1, 7]])
    with pytest.raises(EpverifyError, match="longer than max_seq_len 5"):
        model.encode([[1, 2, 3, 1, 2, 3]])


def test_skipping_tracrs_padding_changes_no_bit(monkeypatch):
    """Tracr pads every MLP to the widest and fills layers with heads that read nothing; the adapter drops the
    hidden units that cannot contribute and skips those layers' attention, and the residual stream stays bit for
    bit what the padded weights give."""
    import epverify.adapters.tracr as tracr_adapter

    model = load("shuffle_dyck2")
    ids, mask = model.encode(clean_inputs(model.dataset)[:200])
    lean = TracrAdapter(model)
    assert any(layer["silent"] for layer in lean.layers)
    assert sum(layer["w1"].shape[1] for layer in lean.layers) < sum(
        model.weights[f"layers.{i}.mlp1_w"].shape[1] for i in range(model.n_layers))
    monkeypatch.setattr(tracr_adapter, "_live_hidden_units", lambda w1, b1, w2: (w1, b1, w2))
    padded = TracrAdapter(model)
    for layer in padded.layers:
        layer["silent"] = False
    assert torch.equal(engine.full_run(lean, ids, mask).final, engine.full_run(padded, ids, mask).final)
    # masked runs (the engine, one random mask per row; the oracle, a random edge set) skip reading a silent
    # layer's inputs, with the same outputs as reading them
    corrupted, _ = model.encode(corrupted_partners(clean_inputs(model.dataset)[:200], model.dataset))
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(len(ids), lean.graph.num_edges, generator=g)
    edges = [e for e, keep in zip(lean.graph.edges, torch.rand(lean.graph.num_edges, generator=g) < 0.5) if keep]
    monkeypatch.undo()
    reading = TracrAdapter(model)  # unpadded, reading every layer
    for layer in reading.layers:
        layer["silent"] = False
    for ablation in ("zero", "interchange"):
        runs = []
        for adapter in (lean, reading):
            ablated = engine.ablated_record(adapter, ablation, ids, mask, corrupted_ids=corrupted)
            runs.append((engine.masked_run(adapter, ids, ablated, masks, None, mask),
                         run_with_edges(adapter, ids, edges, ablation, mask, corrupted)))
        assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
