"""Checks on a circuit before it is handed to the user: what must be reported, never returned silently: an empty
circuit, and a run whose sparsity ended far from a target below 1.

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


SPARSITY_TOLERANCE = 0.05  # a final sparsity further than this from a target below 1 is warned about


def sparsity_messages(circuit: Circuit, history: list[dict], target: float) -> list[str]:
    """Why the run's sparsity does not mean what it seems, for a target below 1 (targets of 1 and above are never
    reached by design): the circuit's sparsity far from the target, and the Lagrangian not at its target at the
    end (the expected sparsity of the last step)."""
    if target >= 1.0 or not history:
        return []
    out = []
    if abs(circuit.sparsity - target) > SPARSITY_TOLERANCE:
        out.append(f"the circuit's sparsity is {circuit.sparsity:.3f}, {abs(circuit.sparsity - target):.3f} from"
                   f" the target {target:g}: its {len(circuit.edges):,} edges are not the circuit at that target")
    last = history[-1]
    if abs(last["sparsity"] - last["target"]) > SPARSITY_TOLERANCE:
        out.append(f"training did not converge: the expected sparsity ended at {last['sparsity']:.3f} against the"
                   f" target {last['target']:g}; train longer (--steps), or raise --lambda-lr")
    return out


def flag_sparsity(circuit: Circuit, history: list[dict], target: float, context: str = "") -> bool:
    """Set `circuit.metrics["converged"]` and log a warning per message of `sparsity_messages`; returns whether
    the run met its target."""
    messages = sparsity_messages(circuit, history, target)
    circuit.metrics["converged"] = not messages
    for message in messages:
        logger.warning("warning: %s%s", f"{context}: " if context else "", message)
    return not messages
