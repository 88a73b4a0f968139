"""`epverify draw CIRCUIT.json`: a picture of a circuit file (epverify's own or an EAP-IG Graph JSON)."""

from __future__ import annotations

from pathlib import Path

from ..errors import EpverifyError


def cmd_draw(args) -> int:
    from ..io.draw import draw_circuit
    from ..io.export import load_circuit

    circuit = load_circuit(args.circuit)
    path = Path(args.circuit)
    prefix = Path(args.out) if args.out else path.with_suffix("") if path.suffix == ".json" else path
    formats = [f for f in str(args.format).split(",") if f.strip()]
    if not formats:
        raise EpverifyError("--format is empty: give png, svg or pdf, comma-separated")
    written = draw_circuit(circuit, prefix, formats)
    print(f"drew {len(circuit.edges)} of {circuit.total_edges} edges: " + ", ".join(map(str, written)))
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "draw", help="draw a circuit file as PNG and SVG (embeddings at the bottom, output at the top)",
        description="Draw a circuit: embeddings on the bottom row, each layer's heads and MLP above, the output on "
                    "top; edges coloured by the input they enter (query, key, value, MLP, output). Reads "
                    "epverify's circuit JSON or an EAP-IG Graph JSON.")
    p.add_argument("circuit", help="circuit file: epverify's circuit.json or an EAP-IG Graph JSON")
    p.add_argument("--out", metavar="PREFIX",
                   help="output path without suffix (default: the circuit file's path without .json)")
    p.add_argument("--format", default="png,svg", help="comma-separated formats: png, svg, pdf")
    p.set_defaults(func=cmd_draw)
