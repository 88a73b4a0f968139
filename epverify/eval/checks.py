"""Checks on a circuit before it is handed to the user: what must be reported, never returned silently.

An empty circuit (no edge left after extraction: every log-alpha <= 0, or every kept edge dangling) means
every output is the ablated model's output. A target sparsity that is too high produces one; it is almost
never what the user wanted, yet it is a valid circuit file. So wherever a circuit is made from trained masks
it goes through `flag_empty`: the circuit's metrics get `"empty": true` and a warning is logged on the
`epverify` logger. With no logging configured (the CLI), Python prints the message as one line on stderr:

    warning: ioi on gpt2/: the circuit is empty at target sparsity 1.5: no edge of 32,936 has log-alpha > 0;
"""

from __future__ import annotations

import logging

from ..io.circuit import Circuit

logger = logging.getLogger("epverify")


def empty_circuit_message(circuit: Circuit, target_sparsity: float | None = None) -> str | None:
    """None when the circuit has edges; else one line saying why it is empty and what to do."""
    if circuit.edges:
        return None
    passed = circuit.dropped_dangling
    if passed:
        which = "the one edge with log-alpha > 0 dangles" if passed == 1 else \
            f"all {passed:,} edges with log-alpha > 0 dangle"
        why = f"{which} (on no path from the input to the output), so extraction dropped them"
    else:
        why = f"no edge of {circuit.total_edges:,} has log-alpha > 0"
    target = f" at target sparsity {target_sparsity:g}" if target_sparsity is not None else ""
    return (f"the circuit is empty{target}: {why}; every output is the ablated model's. Lower the target "
            "sparsity (or train longer with a smaller one) to keep the edges the task needs.")


def flag_empty(circuit: Circuit, target_sparsity: float | None = None, context: str = "") -> bool:
    """Set `circuit.metrics["empty"]` and log a warning when the circuit is empty; returns whether it is."""
    message = empty_circuit_message(circuit, target_sparsity)
    circuit.metrics["empty"] = message is not None
    if message is not None:
        logger.warning("warning: %s%s", f"{context}: " if context else "", message)
    return message is not None
