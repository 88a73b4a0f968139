"""The progress display of a pruning run: every figure a researcher watches, in a log and on a terminal."""

import io

from epverify.io.progress import TrainingProgress


def _record(step):
    return {"step": step, "loss": 1.5 / step, "faithfulness": 0.25 / step, "sparsity": step / 100, "target": 0.5,
            "lambda1": -0.1 * step, "lambda2": 0.05 * step}


def test_log_lines_carry_step_loss_kl_sparsity_target_lambdas_and_eta():
    stream = io.StringIO()
    progress = TrainingProgress(40, stream=stream, bar=False)
    for step in range(1, 41):
        progress(_record(step))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 20  # every total // 20 steps
    assert lines[0].startswith("step      2/40  loss 0.7500  kl 0.1250  sparsity 0.0200 / 0.5000")
    assert "lambda -0.200 +0.100" in lines[0] and " eta " in lines[0]
    assert lines[-1].startswith("step     40/40") and lines[-1].endswith("eta 0:00")


def test_a_resumed_run_counts_from_where_it_resumed():
    stream = io.StringIO()
    progress = TrainingProgress(40, stream=stream, bar=False, every=10)
    for step in range(31, 41):
        progress(_record(step))
    assert [line.split()[1] for line in stream.getvalue().splitlines()] == ["40/40"]


def test_terminal_bar_shows_the_figures_as_its_postfix():
    stream = io.StringIO()
    progress = TrainingProgress(10, stream=stream, bar=True)
    for step in range(1, 11):
        progress(_record(step))
    text = stream.getvalue()
    assert "10/10" in text and "kl 0.0250" in text and "sparsity 0.1000 / 0.5000" in text
