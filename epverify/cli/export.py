"""`epverify export CIRCUIT.json --to graphml|eap-ig|mib|epverify --out PATH`: a circuit file for other tools."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import EpverifyError

TARGETS = ("graphml", "eap-ig", "mib", "epverify")


def cmd_export(args) -> int:
    from ..io import export

    missing = [f"--{name}" for name in ("to", "out") if getattr(args, name) is None]
    if missing:
        raise EpverifyError(f"missing {', '.join(missing)}: e.g. epverify export circuit.json --to eap-ig"
                            " --out circuit.eap.json")
    circuit = export.load_circuit(args.circuit)
    if args.to == "graphml":
        path = export.write_graphml(circuit, args.out)
    elif args.to == "eap-ig":
        path = export.write_eap_ig(circuit, args.out)
    elif args.to == "epverify":
        path = circuit.to_json(args.out)
    else:
        if not args.task:
            raise EpverifyError("--to mib needs --task: MIB names each submission folder {task}_{model}, e.g."
                                " --task ioi")
        model_name = args.model_name or Path(str(circuit.model.get("path", ""))).name.lower()
        if not model_name:
            raise EpverifyError("--to mib needs --model-name (e.g. gpt2): the circuit does not record its model's"
                                " path")
        if not circuit.scores:
            print("epverify: warning: the circuit has no edge scores; MIB's importances get 1.0 on its edges and 0.0"
                  " elsewhere, so every sparsity MIB sweeps sees the same edges", file=sys.stderr)
        path = export.write_mib(circuit, args.out, args.task, model_name)
    print(f"wrote {path} ({len(circuit.edges)} of {circuit.total_edges} edges)")
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="convert a circuit file: GraphML, EAP-IG Graph JSON, MIB submission, or epverify JSON",
        description="Write a circuit for other tools: GraphML (networkx; q/k/v inputs as nodes), EAP-IG's Graph "
                    "JSON (loads with eap.graph.Graph.from_json), MIB's edge-importance submission "
                    "(OUT/{task}_{model}/importances.json) or epverify's own circuit JSON (e.g. from an EAP-IG "
                    "file). Reads epverify's circuit JSON or an EAP-IG Graph JSON.")
    p.add_argument("circuit", help="circuit file: epverify's circuit.json or an EAP-IG Graph JSON")
    p.add_argument("--to", choices=TARGETS, help="output format")
    p.add_argument("--out", metavar="PATH", help="output file (for mib: the submission directory)")
    p.add_argument("--task", help="mib only: the task's name in MIB's folder name, e.g. ioi")
    p.add_argument("--model-name", help="mib only: the model's name in MIB's folder name (default: the"
                                        " circuit's model directory name), e.g. gpt2")
    p.set_defaults(func=cmd_export)
