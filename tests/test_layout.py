"""The package's layout holds: every module imports on its own, the import graph has no cycle, no function runs
over 60 lines and no module over 400, and the README's layout table names the folders there are."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "epverify"


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph() -> nx.DiGraph:
    """Module -> the package's modules it imports, at the top or inside a function."""
    mods = modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(mods)
    for name, path in mods.items():
        base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                prefix = base[: len(base) - node.level + 1] if node.level else []
                target = ".".join(prefix + ([node.module] if node.module else []))
                submodules = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in mods]
                # `from . import x` of submodules only does not import the package's own names
                needs_target = len(submodules) < len(node.names)
                for candidate in submodules + ([target] if needs_target else []):
                    if candidate in mods and candidate != name:
                        graph.add_edge(name, candidate)
            elif isinstance(node, ast.Import):
                graph.add_edges_from((name, a.name) for a in node.names if a.name in mods and a.name != name)
    return graph


def test_the_import_graph_has_no_cycle():
    cycles = list(nx.simple_cycles(import_graph()))
    assert not cycles, f"import cycles: {cycles[:5]}"


def test_every_module_imports_on_its_own():
    """Each module is imported first in a process that has loaded no epverify module (forked from one that has
    loaded the heavy dependencies only), so a module that works only after another was imported fails here."""
    script = (
        "import importlib, os, sys, traceback\n"
        "import torch, numpy, transformers, safetensors, networkx, hypothesis, tqdm, matplotlib\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        try:\n"
        "            importlib.import_module(name)\n"
        "        except BaseException:\n"
        "            traceback.print_exc()\n"
        "            os._exit(1)\n"
        "        os._exit(0)\n"
        "    if os.waitpid(pid, 0)[1] != 0:\n"
        "        failed.append(name)\n"
        "print('FAILED', *failed)\n"
        "sys.exit(1 if failed else 0)\n"
    )
    names = [m for m in modules() if m != "epverify.__main__"]
    done = subprocess.run([sys.executable, "-c", script, *names], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]


def test_functions_and_modules_stay_small():
    long_functions, big_modules = [], []
    for name, path in modules().items():
        text = path.read_text()
        if len(text.splitlines()) > 400:
            big_modules.append(name)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno - node.lineno >= 60:
                long_functions.append(f"{name}.{node.name}")
    assert not long_functions and not big_modules, (long_functions, big_modules)


def test_the_readme_layout_table_names_the_folders():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## How it is laid out"):]
    named = set(re.findall(r"`(epverify/[\w./]*)`", table))
    for path in named:
        assert (ROOT / path).exists(), f"README's layout table names {path}, which does not exist"
    folders = {f"epverify/{p.name}/" for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders <= named, f"folders missing from README's layout table: {sorted(folders - named)}"
