"""`epverify export CIRCUIT.json --to graphml|eap-ig|mib|epverify --out PATH`: a circuit file for other tools."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import EpverifyError
from ..io.outputs import check_not_input
from .command import Command
from .options import CIRCUIT_FILE, Option

TARGETS = ("graphml", "eap-ig", "mib", "epverify")


def cmd_export(settings) -> int:
    from ..io import export

    missing = [f"--{name}" for name in ("to", "out") if getattr(settings, name) is None]
    if missing:
        raise EpverifyError(f"missing {', '.join(missing)}: e.g. epverify export circuit.json --to eap-ig"
                            " --out circuit.eap.json")
    check_not_input(settings.out, settings.circuit)
    circuit = export.load_circuit(settings.circuit)
    if settings.to == "graphml":
        path = export.write_graphml(circuit, settings.out)
    elif settings.to == "eap-ig":
        path = export.write_eap_ig(circuit, settings.out)
    elif settings.to == "epverify":
        path = circuit.to_json(settings.out)
    else:
        if not settings.task:
            raise EpverifyError("--to mib needs --task: MIB names each submission folder {task}_{model}, e.g."
                                " --task ioi")
        model_name = settings.model_name or Path(str(circuit.model.get("path", ""))).name.lower()
        if not model_name:
            raise EpverifyError("--to mib needs --model-name (e.g. gpt2): the circuit does not record its model's"
                                " path")
        if not circuit.scores:
            print("epverify: warning: the circuit has no edge scores; MIB's importances get 1.0 on its edges and 0.0"
                  " elsewhere, so every sparsity MIB sweeps sees the same edges", file=sys.stderr)
        path = export.write_mib(circuit, settings.out, settings.task, model_name)
    print(f"wrote {path} ({len(circuit.edges)} of {circuit.total_edges} edges)")
    return 0


COMMAND = Command(
    "export", "convert a circuit file: GraphML, EAP-IG Graph JSON, MIB submission, or epverify JSON",
    "Write a circuit for other tools: GraphML (networkx; q/k/v inputs as nodes), EAP-IG's Graph JSON (loads with"
    " eap.graph.Graph.from_json), MIB's edge-importance submission (OUT/{task}_{model}/importances.json) or"
    " epverify's own circuit JSON (e.g. from an EAP-IG file). Reads epverify's circuit JSON or an EAP-IG Graph JSON.",
    (CIRCUIT_FILE,
     Option("to", "output format", choices=TARGETS),
     Option("out", "output file (for mib: the submission directory)", metavar="PATH"),
     Option("task", "mib only: the task's name in MIB's folder name, e.g. ioi"),
     Option("model_name", "mib only: the model's name in MIB's folder name (default: the circuit's model directory"
                          " name), e.g. gpt2")),
    cmd_export,
)
