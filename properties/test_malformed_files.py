"""Readers of user files fail in one line: for any malformed JSONL data file, TOML config file or circuit file, the
reader either returns or raises an EpverifyError whose message is a single line, never another exception, and it
leaves the file as it was."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from epverify.cli.config import config_values, read_toml
from epverify.cli.prune import COMMAND as PRUNE
from epverify.errors import EpverifyError
from epverify.io.export import read_circuit_file
from epverify.tasks.jsonl import load_jsonl
from epverify.testing.gate import load_config

texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)
values = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=True) | texts,
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
                      max_leaves=6)


def _reads_in_one_line(content: bytes, suffix: str, read) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"file{suffix}"
        path.write_bytes(content)
        try:
            read(path)
        except EpverifyError as err:
            assert "\n" not in str(err), str(err)
        assert path.read_bytes() == content


def _cut(text: str, data) -> bytes:
    """The text, possibly cut short (an interrupted write) or with a byte that is no UTF-8."""
    raw = text.encode()
    cut = data.draw(st.integers(0, len(raw)), label="cut at")
    tail = data.draw(st.sampled_from([b"", b"\xff", b"\x00"]), label="tail")
    return raw[:cut] + tail if data.draw(st.booleans(), label="damage") else raw


KEYS = ("clean", "corrupted", "target", "distractor")
records = st.dictionaries(st.sampled_from(KEYS) | texts, values, max_size=6)


@given(st.lists(records | texts, max_size=4), st.data())
def test_malformed_jsonl_data_is_one_line(lines, data):
    """A JSONL file of any records (missing keys, wrong types, other keys) or text lines, possibly cut short."""
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    _reads_in_one_line(_cut(text, data), ".jsonl", load_jsonl)


SETTINGS = [o.name for o in PRUNE.options] + ["stepz", "score"]
toml_values = st.one_of(st.integers(-3, 10**4), st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
                        texts.map(json.dumps), st.just("[1, 2"), st.just("{a = 1}"), st.just(""))


@given(st.lists(st.tuples(st.sampled_from(SETTINGS), toml_values), max_size=5), st.data())
def test_malformed_config_files_are_one_line(pairs, data):
    """A TOML config of known and unknown keys with values of any type (and broken syntax), for prune and gate."""
    text = "\n".join(f"{key.replace('_', data.draw(st.sampled_from(['_', '-'])))} = {value}" for key, value in pairs)
    content = _cut(text, data)

    def read(path):
        config_values(read_toml(path), list(PRUNE.options), path, "prune")

    _reads_in_one_line(content, ".toml", read)
    _reads_in_one_line(content, ".toml", load_config)


CIRCUIT = {"format": "epverify.circuit/1", "model": {"n_layers": 1, "n_heads": 1, "n_kv_heads": 1,
                                                      "embed_names": ["embeds"], "parallel_mlp": False},
           "ablation": "interchange", "edges": [["embeds", "a0.h0.q"], ["a0.h0", "m0"], ["m0", "resid_post"]],
           "total_edges": 9, "metrics": {}}


@given(st.dictionaries(st.sampled_from([*CIRCUIT, "scores", "cfg", "nodes"]), values, max_size=4), st.data())
def test_malformed_circuit_files_are_one_line(changes, data):
    """epverify's circuit JSON with any of its fields replaced (or an EAP-IG-looking file), possibly cut short."""
    record = {**CIRCUIT, **changes}
    if data.draw(st.booleans(), label="drop a field"):
        record.pop(data.draw(st.sampled_from(sorted(record))), None)
    _reads_in_one_line(_cut(json.dumps(record), data), ".json", read_circuit_file)
