"""`epverify draw CIRCUIT.json`: a picture of a circuit file (epverify's own or an EAP-IG Graph JSON)."""

from __future__ import annotations

from pathlib import Path

from ..errors import EpverifyError
from ..io.outputs import check_not_input
from .command import Command
from .options import CIRCUIT_FILE, Option


def cmd_draw(settings) -> int:
    from ..io.draw import draw_circuit
    from ..io.export import load_circuit

    circuit = load_circuit(settings.circuit)
    path = Path(settings.circuit)
    prefix = Path(settings.out) if settings.out else path.with_suffix("") if path.suffix == ".json" else path
    formats = [f for f in str(settings.format).split(",") if f.strip()]
    if not formats:
        raise EpverifyError("--format is empty: give png, svg or pdf, comma-separated")
    for fmt in formats:
        check_not_input(f"{prefix}.{fmt.strip()}", settings.circuit)
    written = draw_circuit(circuit, prefix, formats)
    print(f"drew {len(circuit.edges)} of {circuit.total_edges} edges: " + ", ".join(map(str, written)))
    return 0


COMMAND = Command(
    "draw", "draw a circuit file as PNG and SVG (embeddings at the bottom, output at the top)",
    "Draw a circuit: embeddings on the bottom row, each layer's heads and MLP above, the output on top; edges"
    " coloured by the input they enter (query, key, value, MLP, output). Reads epverify's circuit JSON or an EAP-IG"
    " Graph JSON.",
    (CIRCUIT_FILE,
     Option("out", "output path without suffix (default: the circuit file's path without .json)", metavar="PREFIX"),
     Option("format", "comma-separated formats: png, svg, pdf", "png,svg")),
    cmd_draw,
)
