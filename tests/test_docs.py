"""Every example in README.md and docs/ runs: each fenced `sh` and `python` block, in the order of its document,
in a workspace with tiny stand-ins for the checkpoints the examples name (`path/to/checkpoint`, a GPT-2;
`path/to/CodeLlama-13b-Instruct-hf`, a Llama) and the repository's ci/, configs/, bench/ and scripts/ beside them.
A command that cannot run here (a GPU, eight processes, a benchmark of many minutes) is listed with its reason in
the one table of docs/examples.md; every entry of that table must match a documented command. Code must be fenced:
an indented block that starts like a command fails the test, so no example escapes it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PAGES = DOCS[1:]  # docs/*.md: tests/test_docs_pages.py runs theirs, beside README's (they share no outputs)
COMMAND_WORDS = ("python", "epverify", "make", "accelerate", "bash", "time ", "pytest", "for ", "PYTORCH", "CI=")
SHELL = ("sh", "shell", "bash", "console")


def blocks(path: Path) -> list[tuple[int, str, str]]:
    """(line, language, text) of every fenced block, and of every indented block (language "indented")."""
    lines, out, i = path.read_text().split("\n"), [], 0
    previous_blank = True
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            out.append((i + 1, line[3:].strip(), "\n".join(lines[i + 1 : end])))
            i, previous_blank = end + 1, False
            continue
        if line.startswith("    ") and line.strip() and previous_blank and not line.lstrip().startswith(("|", "-")):
            out.append((i + 1, "indented", line.strip()))
        previous_blank = not line.strip()
        i += 1
    return out


def commands(text: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments dropped, a `for ... done` loop whole."""
    out, pending = [], ""
    for raw in text.split("\n"):
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if not line and not pending:
            continue
        pending = (pending + " " + line.strip()).strip() if pending else line.strip()
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        if pending.startswith("for ") and not re.search(r"\bdone$", pending):
            pending += ";" if not pending.endswith((";", "do")) else ""
            continue
        out.append(" ".join(pending.split()))
        pending = ""
    return out


def exceptions() -> dict[str, str]:
    """docs/examples.md's table: command prefix -> why it does not run in the suite."""
    table = {}
    for line in (ROOT / "docs" / "examples.md").read_text().split("\n"):
        match = re.match(r"^\| `(.+?)` \| (.+) \|$", line)
        if match:
            table[" ".join(match.group(1).split())] = match.group(2)
    return table


def excepted(command: str, table: dict[str, str]) -> bool:
    return any(command.startswith(prefix) for prefix in table)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A directory to run the examples in, with the stand-in checkpoints and the repository's folders."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    from epverify.tasks import get_task
    from epverify.tasks.tokenizer import build_word_tokenizer

    root = tmp_path_factory.mktemp("docs")
    torch.manual_seed(0)
    ioi = build_word_tokenizer(get_task("ioi").vocabulary())
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(ioi), n_positions=64, n_embd=32, n_layer=2, n_head=2))
    gpt2.save_pretrained(root / "path/to/checkpoint")
    ioi.save_pretrained(root / "path/to/checkpoint")
    boolean = build_word_tokenizer(get_task("boolean-expressions").vocabulary(), add_bos=True)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=len(boolean), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=256))
    llama.save_pretrained(root / "path/to/CodeLlama-13b-Instruct-hf")
    boolean.save_pretrained(root / "path/to/CodeLlama-13b-Instruct-hf")
    for name in ("ci", "configs", "bench", "scripts", "trained_models", "compiled_models"):
        (root / name).symlink_to(ROOT / name)
    (root / "docs" / "measurements").mkdir(parents=True)
    (root / "my_prog.py").write_text("from tracr.compiler import lib\nfrom tracr.rasp import rasp\n\n\n"
                                     "def make_program():\n    return lib.make_length()\n")
    return root


def _run(argv, cwd: Path, where: str) -> None:
    # one torch thread, as the rest of the suite (conftest.py): a second one only spins against the other jobs
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "OMP_NUM_THREADS": os.environ.get("EPVERIFY_TEST_THREADS", "1")}
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if os.environ.get("EPVERIFY_DOCS_TIMES"):
        with open(os.environ["EPVERIFY_DOCS_TIMES"], "a") as fh:
            fh.write(f"{time.perf_counter() - started:8.1f}s  {where}\n")
    assert done.returncode == 0, f"{where}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


RAN: set[str] = set()  # a command documented twice runs once


def test_every_readme_example_runs(workspace):
    run_examples(ROOT / "README.md", workspace)


def run_examples(doc: Path, workspace: Path) -> None:
    """Every example of one document, in order, in `workspace`."""
    table = exceptions()
    for line, language, text in blocks(doc):
        where = f"{doc.relative_to(ROOT)}:{line}"
        if language == "indented":
            assert not text.startswith(COMMAND_WORDS), f"{where}: fence this example as ```sh so that it is tested"
        elif language in SHELL:
            for command in commands(text):
                if excepted(command, table) or command in RAN:
                    continue
                RAN.add(command)
                _run(["bash", "-c", command], workspace, f"{where}: {command}")
        elif language == "python":
            script = workspace / f"example_{doc.stem}_{line}.py"
            script.write_text(text + "\n")
            if re.search(r"^def test_", text, re.M):
                _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", script.name], workspace, where)
            else:
                _run([sys.executable, script.name], workspace, where)


def test_every_exception_names_a_documented_command():
    documented = [c for doc in DOCS for _, lang, text in blocks(doc) if lang in SHELL for c in commands(text)]
    for prefix, reason in exceptions().items():
        assert any(c.startswith(prefix) for c in documented), f"docs/examples.md lists {prefix!r}, which no doc has"
        assert reason.strip(), prefix


def test_the_command_parser_joins_continuations_and_drops_comments():
    text = "epverify prune --model a \\\n    --out b   # a comment\n# only a comment\nfor i in 1 2; do echo $i\n" \
           "  echo again; done\n"
    assert commands(text) == ["epverify prune --model a --out b", "for i in 1 2; do echo $i; echo again; done"]
