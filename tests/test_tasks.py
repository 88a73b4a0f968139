"""Tests for epverify.tasks: generation, encoding with local tokenizers, metrics and input errors."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from epverify import PruneData
from epverify.errors import EpverifyError
from epverify.eval.metrics import answer_choice, kl_per_position, logit_diff_per_position
from epverify.tasks import TASKS, Example, Task, TaskError, get_task
from epverify.tasks.base import target_positions
from epverify.tasks.boolean_expressions import paren_depth
from epverify.tasks.gendered_pronouns import FEMALE_NAMES, MALE_NAMES
from epverify.tasks.greater_than import greater_mask
from epverify.tasks.ioi import NAMES, TEMPLATES
from epverify.tasks.tokenizer import build_word_tokenizer

GENERATED = [
    ("ioi", {}),
    ("greater-than", {}),
    ("gendered-pronouns", {}),
    ("boolean-expressions", {"prompt": "instruction"}),
    ("boolean-expressions", {"prompt": "few-shot"}),
]
IDS = ["ioi", "greater-than", "gp", "boolean-instruction", "boolean-few-shot"]

_tokenizers: dict[str, PreTrainedTokenizerFast] = {}


def word_tokenizer(task: Task) -> PreTrainedTokenizerFast:
    """One word-level tokenizer per task, built once."""
    key = f"{task.name}:{getattr(task, 'prompt', '')}"
    if key not in _tokenizers:
        _tokenizers[key] = build_word_tokenizer(task.vocabulary())
    return _tokenizers[key]


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def pair(clean: str, corrupted: str, target: str = " b", distractor: str = " c") -> dict:
    return {"clean": clean, "corrupted": corrupted, "target": target, "distractor": distractor}


def make_batch(target_ids, distractor_ids, positions, width, **extra) -> PruneData:
    """A hand-made batch: real tokens up to each target position, the loss only there."""
    n = len(target_ids)
    positions = torch.tensor(positions)
    mask = (torch.arange(width)[None, :] <= positions[:, None]).long()
    loss_mask = torch.zeros(n, width, dtype=torch.bool)
    loss_mask[torch.arange(n), positions] = True
    ids = torch.zeros(n, width, dtype=torch.long)
    return PruneData(ids, mask, loss_mask, ids.clone(), target_ids=torch.tensor(target_ids),
                     distractor_ids=torch.tensor(distractor_ids), **extra)


def metrics(task, logits, full_logits, data: PruneData) -> dict[str, float]:
    """The evaluator's metrics for a circuit's and the full model's logits (N, T, V) or (N, V), composed from the
    formulas it uses (`epverify.eval.metrics`) and the task's own (`Task.score`): one loss position per row."""
    rows = torch.arange(len(data))
    at = target_positions(data)
    circuit = logits[rows, at] if logits.dim() == 3 else logits
    full = full_logits[rows, at] if full_logits.dim() == 3 else full_logits
    circuit, full = circuit.float(), full.float()
    out = {
        "kl": kl_per_position(torch.log_softmax(full, -1), torch.log_softmax(circuit, -1)),
        "logit_diff": logit_diff_per_position(circuit, data.target_ids, data.distractor_ids),
        "exact_match": (circuit.argmax(-1) == full.argmax(-1)).float(),
        "accuracy": (answer_choice(circuit, data.answer_ids) == data.target_ids).float(),
        **task.score(circuit, data, rows),
    }
    return {k: float(v.float().mean()) for k, v in out.items()}


# ------------------------------------------------------------------------------------------------------------
# Registry
# ------------------------------------------------------------------------------------------------------------


def test_registry_names_and_aliases():
    assert set(TASKS) == {"ioi", "greater-than", "gendered-pronouns", "boolean-expressions", "jsonl"}
    assert get_task("gp").name == "gendered-pronouns"
    assert get_task("boolean").name == "boolean-expressions"


def test_unknown_task_lists_known_names():
    with pytest.raises(TaskError) as info:
        get_task("nope")
    message = str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, EpverifyError)
    assert "\n" not in message and "'nope'" in message
    for name in TASKS:
        assert name in message


def test_unknown_option_and_bad_prompt_style():
    with pytest.raises(TaskError, match="does not take option"):
        get_task("ioi", path="x")
    with pytest.raises(TaskError, match="instruction, few-shot"):
        get_task("boolean", prompt="chain-of-thought")
    with pytest.raises(TaskError, match="path="):
        get_task("jsonl")


# ------------------------------------------------------------------------------------------------------------
# Every generated task
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "options"), GENERATED, ids=IDS)
def test_examples_are_deterministic_and_corrupted_differs(name, options):
    task = get_task(name, **options)
    first, again, other = task.examples(30, seed=3), task.examples(30, seed=3), task.examples(30, seed=4)
    assert first == again
    assert first != other
    assert len(first) == 30 and task.examples(0, seed=0) == []
    for example in first:
        assert isinstance(example, Example)
        assert example.clean != example.corrupted
        assert example.target != example.distractor
    with pytest.raises(TaskError, match="non-negative"):
        task.examples(-1, seed=0)


@pytest.mark.parametrize(("name", "options"), GENERATED, ids=IDS)
def test_encode_with_word_tokenizer(name, options):
    task = get_task(name, **options)
    tokenizer = word_tokenizer(task)
    examples = task.examples(40, seed=0)
    encoded = task.encode(tokenizer, examples)
    batch = encoded.data
    # The word-level tokenizer covers the vocabulary and names are one word each: nothing is dropped.
    assert encoded.dropped == 0 and encoded.dropped_reasons == [] and encoded.notes == []
    assert encoded.examples == examples
    n, width = batch.input_ids.shape
    assert n == 40
    for tensor in (batch.corrupted_ids, batch.attention_mask, batch.loss_mask):
        assert tensor.shape == (n, width)
    for tensor in (target_positions(batch), batch.target_ids, batch.distractor_ids):
        assert tensor.shape == (n,) and tensor.dtype == torch.long
    assert batch.input_ids.dtype == batch.corrupted_ids.dtype == batch.attention_mask.dtype == torch.long
    assert batch.loss_mask.dtype == torch.bool
    assert (batch.input_ids != batch.corrupted_ids).any(dim=1).all()
    assert tokenizer.unk_token_id not in batch.input_ids.tolist()

    for i, example in enumerate(examples):
        ids = tokenizer.encode(example.clean)
        pos = target_positions(batch)[i].item()
        assert pos == len(ids) - 1
        assert batch.input_ids[i, : len(ids)].tolist() == ids
        assert batch.attention_mask[i, : pos + 1].all() and not batch.attention_mask[i, pos + 1 :].any()
        assert (batch.input_ids[i, pos + 1 :] == tokenizer.pad_token_id).all()
        assert batch.loss_mask[i].nonzero().flatten().tolist() == [pos]
        assert tokenizer.convert_ids_to_tokens(batch.target_ids[i].item()) == example.target.strip()
        assert tokenizer.convert_ids_to_tokens(batch.distractor_ids[i].item()) == example.distractor.strip()

    picked = batch.select([3, 0])
    assert len(picked) == 2
    assert torch.equal(picked.input_ids, batch.input_ids[[3, 0]])
    assert torch.equal(target_positions(picked), target_positions(batch)[[3, 0]])
    assert len(batch.select(slice(0, 5))) == 5
    assert len(batch.select(torch.tensor([1]))) == 1


@pytest.mark.parametrize(("name", "options"), GENERATED, ids=IDS)
def test_metrics_on_real_batch(name, options):
    task = get_task(name, **options)
    tokenizer = word_tokenizer(task)
    batch = task.encode(tokenizer, task.examples(12, seed=1)).data
    n, width = batch.input_ids.shape
    logits = torch.zeros(n, width, len(tokenizer))
    logits[torch.arange(n), target_positions(batch), batch.target_ids] = 6.0
    logits[torch.arange(n), target_positions(batch), batch.distractor_ids] = 2.0
    result = metrics(task, logits, logits.clone(), batch)
    assert result["accuracy"] == 1.0
    assert result["logit_diff"] == pytest.approx(4.0)
    assert result["exact_match"] == 1.0
    assert result["kl"] == pytest.approx(0.0, abs=1e-6)
    flipped = metrics(task, -logits, logits, batch)
    assert flipped["logit_diff"] == pytest.approx(-4.0)
    assert flipped["kl"] > 0.1
    if name == "greater-than":
        assert result["prob_diff"] > 0


# ------------------------------------------------------------------------------------------------------------
# Task-specific content
# ------------------------------------------------------------------------------------------------------------


def test_ioi_content():
    assert len(TEMPLATES) >= 15
    examples = get_task("ioi").examples(200, seed=0)
    assert {e.extras["order"] for e in examples} == {"ABBA", "BABA"}
    for e in examples:
        io, s = e.target.strip(), e.distractor.strip()
        clean_names = re.findall(r"\w+", e.clean)
        assert clean_names.count(io) == 1 and clean_names.count(s) == 2
        first = [w for w in clean_names if w in NAMES][:2]
        assert first == ([io, s] if e.extras["order"] == "ABBA" else [s, io])
        corrupted_names = [w for w in re.findall(r"\w+", e.corrupted) if w in NAMES]
        assert len(corrupted_names) == 3 and len(set(corrupted_names)) == 3
        assert not set(corrupted_names) & {io, s}
        # Same template: removing the names leaves the same text.
        strip = lambda text: " ".join(w for w in re.findall(r"\w+|\S", text) if w not in NAMES)  # noqa: E731
        assert strip(e.clean) == strip(e.corrupted)


def test_gendered_pronouns_content():
    for e in get_task("gp").examples(100, seed=0):
        name = e.extras["name"]
        expected = " he" if name in MALE_NAMES else " she"
        assert e.target == expected and e.distractor == ({" he", " she"} - {expected}).pop()
        swapped = [w for w in re.findall(r"\w+", e.corrupted) if w in MALE_NAMES + FEMALE_NAMES]
        assert len(swapped) == 1
        assert (swapped[0] in MALE_NAMES) != (name in MALE_NAMES)
        assert e.extras["corrupted_target"] == e.distractor


@pytest.mark.parametrize("prompt", ["instruction", "few-shot"])
def test_boolean_values_and_corruption(prompt):
    examples = get_task("boolean", prompt=prompt).examples(300, seed=0)
    values = []
    for e in examples:
        expression, corrupted = e.extras["expression"], e.extras["corrupted_expression"]
        value = eval(expression, {"__builtins__": {}}, {})  # independent check with Python itself
        values.append(value)
        assert e.target == f" {value}" and e.distractor == f" {not value}"
        assert eval(corrupted, {"__builtins__": {}}, {}) is (not value)
        literals = re.findall(r"True|False", expression)
        assert 3 <= len(literals) <= 6
        assert paren_depth(expression) <= 3
        # Same shape: only literals change.
        assert re.sub(r"True|False", "L", expression) == re.sub(r"True|False", "L", corrupted)
        assert e.clean.endswith(f"Q: {expression} is\nA:") and e.corrupted.endswith(f"Q: {corrupted} is\nA:")
        if prompt == "few-shot":
            shots = re.findall(r"Q: (.*?) is\nA: (True|False)\n\n", e.clean)
            assert len(shots) == 3
            for shot, answer in shots:
                assert str(eval(shot, {"__builtins__": {}}, {})) == answer
            assert e.clean.split("Q: ")[:4] == e.corrupted.split("Q: ")[:4]
        else:
            assert e.clean.count("Q:") == 1 and e.clean.startswith("Evaluate")
    assert 0.3 < sum(values) / len(values) < 0.7
    assert any(paren_depth(e.extras["expression"]) >= 2 for e in examples)


def test_boolean_accuracy_is_restricted_to_true_false():
    task = get_task("boolean")
    tokenizer = word_tokenizer(task)
    batch = task.encode(tokenizer, task.examples(8, seed=0)).data
    assert sorted(batch.answer_ids.tolist()) == sorted(tokenizer.convert_tokens_to_ids(["True", "False"]))
    n, width = batch.input_ids.shape
    logits = torch.zeros(n, width, len(tokenizer))
    logits[torch.arange(n), target_positions(batch), batch.target_ids] = 1.0
    logits[:, :, tokenizer.convert_tokens_to_ids("(")] = 10.0  # a non-answer token wins the full argmax
    assert metrics(task, logits, logits, batch)["accuracy"] == 1.0


def test_greater_than_content_and_mask():
    task = get_task("greater-than")
    examples = task.examples(100, seed=0)
    for e in examples:
        yy, xx = e.extras["yy"], e.extras["xx"]
        assert f"from the year {xx}{yy:02d} to the year {xx}" in e.clean
        assert e.clean.endswith(f"to the year {xx}")
        assert e.corrupted == e.clean.replace(f"{xx}{yy:02d}", f"{xx}01")
        assert 2 <= yy <= 98 and int(e.target) > yy and e.distractor == f"{yy:02d}"
    tokenizer = word_tokenizer(task)
    batch = task.encode(tokenizer, examples).data
    assert tokenizer.convert_ids_to_tokens(batch.shared_info["year_ids"].tolist()) == [f"{k:02d}" for k in range(100)]
    assert batch.row_info["thresholds"].tolist() == [e.extras["yy"] for e in examples]
    mask = greater_mask(batch.row_info["thresholds"])
    assert mask.shape == (100, 100)
    for i, e in enumerate(examples):
        assert mask[i].nonzero().flatten().tolist() == list(range(e.extras["yy"] + 1, 100))
    sub = batch.select([5, 7])
    assert sub.row_info["thresholds"].tolist() == [examples[5].extras["yy"], examples[7].extras["yy"]]
    assert torch.equal(sub.shared_info["year_ids"], batch.shared_info["year_ids"])


def test_greater_than_needs_every_year_token():
    task = get_task("greater-than")
    tokenizer = build_word_tokenizer([w for w in task.vocabulary() if w != "07"])
    with pytest.raises(TaskError, match="no token for the year '07'"):
        task.encode(tokenizer, task.examples(3, seed=0))


def test_greater_than_prob_diff_known_values():
    task = get_task("greater-than")
    year_ids = torch.arange(100) + 10  # token 10 + k is the year k
    batch = make_batch([60, 70], [40, 50], [2, 3], 5, shared_info={"year_ids": year_ids},
                       row_info={"thresholds": torch.tensor([30, 40])})
    logits = torch.full((2, 5, 120), -1e4)
    logits[0, 2, 10 + 31] = 0.0  # all mass on 31 > 30
    logits[1, 3, 10 + 40] = 0.0  # all mass on 40 == YY, not greater
    result = metrics(task, logits, logits, batch)
    assert result["prob_diff"] == pytest.approx(0.0, abs=1e-6)  # (+1 - 1) / 2
    assert result["accuracy"] == 0.5
    # Half the mass on greater years, half off the year tokens: prob_diff 0.5 for the first row.
    logits[0, 2, 0] = 0.0
    first = metrics(task, logits[:1], logits[:1], batch.select([0]))
    assert first["prob_diff"] == pytest.approx(0.5, abs=1e-6)


# ------------------------------------------------------------------------------------------------------------
# Metrics on hand-made logits
# ------------------------------------------------------------------------------------------------------------


def test_metrics_known_values():
    task = get_task("ioi")
    batch = make_batch([1, 2], [2, 1], [1, 2], 4)
    logits = torch.zeros(2, 4, 3)
    logits[0, 1] = torch.tensor([0.0, 3.0, 1.0])  # target 1 wins by 2
    logits[1, 2] = torch.tensor([5.0, 0.0, 1.0])  # token 0 wins; target 2 beats distractor 1 by 1
    full = logits.clone()
    full[1, 2] = torch.tensor([0.0, 0.0, 1.0])  # full model picks token 2
    result = metrics(task, logits, full, batch)
    assert result["logit_diff"] == pytest.approx(1.5)
    assert result["accuracy"] == 0.5
    assert result["exact_match"] == 0.5
    p = torch.softmax(full[1, 2], -1)
    q = torch.softmax(logits[1, 2], -1)
    expected_kl = (p * (p.log() - q.log())).sum().item() / 2  # row 0 contributes 0
    assert result["kl"] == pytest.approx(expected_kl, rel=1e-5)
    # Positions outside the loss mask do not count.
    noisy = logits.clone()
    noisy[:, 0] = torch.randn(2, 3)
    assert metrics(task, noisy, full, batch)["kl"] == pytest.approx(expected_kl, rel=1e-5)


def test_kl_two_token_closed_form():
    batch = make_batch([0], [1], [0], 1)
    full = torch.log(torch.tensor([[[0.5, 0.5]]]))
    circuit = torch.log(torch.tensor([[[0.25, 0.75]]]))
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert metrics(get_task("gp"), circuit, full, batch)["kl"] == pytest.approx(expected, rel=1e-5)


# ------------------------------------------------------------------------------------------------------------
# JSONL task and encoding edge cases
# ------------------------------------------------------------------------------------------------------------


def test_jsonl_examples_and_dropped_pairs(tmp_path):
    records = [
        pair("a a b a", "c c b a", " b", " a"),
        pair("a b", "a b c", " c", " a"),  # different lengths: dropped
        pair("c a", "b a", "b", "c"),
        {**pair("a c", "b c", " a", " b"), "note": "kept"},
    ]
    path = write_jsonl(tmp_path / "pairs.jsonl", records)
    task = get_task("jsonl", path=path)
    examples = task.examples(10, seed=0)
    assert len(examples) == 4 and task.examples(2, seed=5) == examples[:2]
    assert examples[3].extras == {"note": "kept"}
    tokenizer = build_word_tokenizer(task.vocabulary())
    encoded = task.encode(tokenizer, examples)
    assert encoded.dropped == 1 and len(encoded.dropped_reasons) == 1
    assert "example 1" in encoded.dropped_reasons[0] and "2 tokens" in encoded.dropped_reasons[0]
    assert encoded.examples == [examples[0], examples[2], examples[3]]
    batch = encoded.data
    assert batch.input_ids.shape == (3, 4)
    assert target_positions(batch).tolist() == [3, 1, 1]
    assert tokenizer.convert_ids_to_tokens(batch.target_ids.tolist()) == ["b", "b", "a"]


def test_jsonl_nothing_survives(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [pair("a b", "a b c"), pair("a", "a b")])
    task = get_task("jsonl", path=path)
    tokenizer = build_word_tokenizer(task.vocabulary())
    with pytest.raises(TaskError, match="none of the 2 pairs survived"):
        task.encode(tokenizer, task.examples(2, seed=0))


def test_unknown_target_is_dropped(tmp_path):
    records = [pair("a b", "c b", " a", " c"), pair("a b", "c b", " zzz", " c")]
    path = write_jsonl(tmp_path / "p.jsonl", records)
    task = get_task("jsonl", path=path)
    tokenizer = build_word_tokenizer(["a", "b", "c"])
    encoded = task.encode(tokenizer, task.examples(2, seed=0))
    assert encoded.dropped == 1 and "'zzz'" not in encoded.dropped_reasons[0]
    assert "unknown token" in encoded.dropped_reasons[0]


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("", "has no examples"),
        ("\n  \n", "has no examples"),
        (json.dumps(pair("a", "b")) + "\n{not json\n", r":2: not valid JSON"),
        (json.dumps({"clean": "a", "corrupted": "b", "target": "c"}) + "\n", r":1: missing key\(s\) distr"),
        ("[1, 2]\n", r":1: expected a JSON object"),
        (json.dumps({**pair("a", "b"), "target": 3}) + "\n", r":1: key\(s\) target must be strings"),
    ],
)
def test_jsonl_bad_files(tmp_path, content, pattern):
    path = tmp_path / "f.jsonl"
    path.write_text(content)
    with pytest.raises(TaskError, match=pattern) as info:
        get_task("jsonl", path=str(path))
    assert "\n" not in str(info.value)


def test_jsonl_missing_file(tmp_path):
    with pytest.raises(TaskError, match="file not found"):
        get_task("jsonl", path=str(tmp_path / "absent.jsonl"))


def test_max_length_error():
    task = get_task("ioi")
    tokenizer = word_tokenizer(task)
    examples = task.examples(4, seed=0)
    longest = max(len(tokenizer.encode(e.clean)) for e in examples)
    assert task.encode(tokenizer, examples, max_length=longest).data.input_ids.shape[1] == longest
    with pytest.raises(TaskError, match=rf"is \d+ tokens, longer than the {longest - 1} positions"):
        task.encode(tokenizer, examples, max_length=longest - 1)


def test_empty_examples_error():
    task = get_task("ioi")
    with pytest.raises(TaskError, match="no examples"):
        task.encode(word_tokenizer(task), [])


# ------------------------------------------------------------------------------------------------------------
# Other tokenizer conventions
# ------------------------------------------------------------------------------------------------------------


def test_leading_bos_kept_and_trailing_eos_removed(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [pair("a b a", "c b a", " c", " b")])
    task = get_task("jsonl", path=path)
    with_bos = build_word_tokenizer(["a", "b", "c"], add_bos=True)
    batch = task.encode(with_bos, task.examples(1, seed=0)).data
    assert batch.input_ids[0].tolist() == with_bos.convert_tokens_to_ids(["[BOS]", "a", "b", "a"])
    assert target_positions(batch).tolist() == [3]

    backend = Tokenizer.from_str(with_bos.backend_tokenizer.to_str())
    backend.post_processor = processors.TemplateProcessing(
        single="$A [EOS]", special_tokens=[("[EOS]", with_bos.convert_tokens_to_ids("[EOS]"))]
    )
    with_eos = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", eos_token="[EOS]")
    assert with_eos.encode("a b a")[-1] == with_eos.eos_token_id
    assert with_eos.pad_token_id is None
    batch = task.encode(with_eos, task.examples(1, seed=0)).data
    assert batch.input_ids[0].tolist() == with_eos.convert_tokens_to_ids(["a", "b", "a"])


def test_pad_falls_back_to_eos(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [pair("a b a", "c b a", " c", " b"), pair("a", "b", " c", " b")])
    task = get_task("jsonl", path=path)
    words = build_word_tokenizer(["a", "b", "c"])
    no_pad = PreTrainedTokenizerFast(
        tokenizer_object=words.backend_tokenizer, unk_token="[UNK]", eos_token="[EOS]"
    )
    assert no_pad.pad_token_id is None
    batch = task.encode(no_pad, task.examples(2, seed=0)).data
    assert batch.input_ids[1, 1:].tolist() == [no_pad.eos_token_id] * 2


def gpt2_style_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (GPT-2's conventions: " he" is one token with a leading-space marker)."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")


@pytest.mark.parametrize(("name", "options"), GENERATED, ids=IDS)
def test_gpt2_style_tokenizer(name, options):
    task = get_task(name, **options)
    examples = task.examples(60, seed=0)
    texts = [
        text
        for e in examples
        for text in (e.clean + e.target, e.corrupted + e.distractor, e.clean + e.distractor)
    ]
    texts += [f"{k:02d}" for k in range(100)] * 3
    tokenizer = gpt2_style_tokenizer(texts)
    encoded = task.encode(tokenizer, examples)
    batch = encoded.data
    assert encoded.dropped + len(batch) == len(examples)
    assert len(encoded.dropped_reasons) == encoded.dropped
    # Padding uses EOS when there is no pad token.
    assert (batch.input_ids[batch.attention_mask == 0] == tokenizer.eos_token_id).all()
    for i, example in enumerate(encoded.examples):
        target = tokenizer.decode([batch.target_ids[i].item()])
        distractor = tokenizer.decode([batch.distractor_ids[i].item()])
        # The continuation token starts the target text, leading space included where the task writes one.
        assert example.target.startswith(target) and target.strip()
        assert example.distractor.startswith(distractor) and distractor.strip()
        assert target_positions(batch)[i].item() == len(tokenizer.encode(example.clean)) - 1
    if name != "greater-than":
        assert all(tokenizer.decode([t]).startswith(" ") for t in batch.target_ids.tolist())
