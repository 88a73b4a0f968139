"""Device and dtype are resolved in one place (`epverify.scale.device`): auto takes the GPU only when torch sees
one, explicit requests are checked against the machine and the launch, and the dtype rule is the documented one.
torch.cuda is stubbed where a test needs a GPU to be visible, so these run the same on every machine."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from epverify import wrap_pretrained
from epverify.errors import EpverifyError
from epverify.scale import device as placement
from epverify.scale.distributed import LaunchSettings, setup


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


def test_auto_is_the_cpu_without_a_gpu(no_gpu):
    assert placement.resolve_device("auto") == torch.device("cpu")
    assert placement.resolve_device(None) == torch.device("cpu")


def test_auto_is_the_gpu_when_one_is_visible(two_gpus):
    assert placement.resolve_device("auto") == torch.device("cuda", 0)
    assert placement.resolve_device("cuda") == torch.device("cuda", 0)
    assert placement.resolve_device("cuda:1") == torch.device("cuda", 1)


@pytest.mark.parametrize("request_", ["cuda", "cuda:0", "CUDA:1"])
def test_a_gpu_that_is_not_there_is_one_clear_error(no_gpu, request_):
    with pytest.raises(EpverifyError, match="torch sees no GPU here.*--device cpu"):
        placement.resolve_device(request_)


def test_a_gpu_index_past_the_machine_is_refused(two_gpus):
    with pytest.raises(EpverifyError, match="has 2 GPU"):
        placement.resolve_device("cuda:2")


def test_under_a_launch_auto_is_the_process_device_and_another_is_refused(two_gpus):
    launched = torch.device("cuda", 1)
    assert placement.resolve_device("auto", launched) == launched
    assert placement.resolve_device("cuda:1", launched) == launched
    with pytest.raises(EpverifyError, match="conflicts with the launch"):
        placement.resolve_device("cuda:0", launched)
    with pytest.raises(EpverifyError, match="conflicts with the launch"):
        placement.resolve_device("cpu", launched)


def test_setup_uses_the_launch_device_and_refuses_a_conflicting_one(no_gpu):
    launched_on_cpu = LaunchSettings(launched=True, use_cpu=True)
    assert setup(launched_on_cpu).device == torch.device("cpu")
    with pytest.raises(EpverifyError, match="torch sees no GPU"):
        setup(launched_on_cpu, device="cuda")


@pytest.mark.parametrize(("request_", "where", "stored", "expected"), [
    ("auto", "cpu", torch.bfloat16, torch.float32),
    ("auto", "cpu", None, torch.float32),
    ("auto", "cuda", torch.bfloat16, torch.bfloat16),
    ("auto", "cuda", torch.float16, torch.bfloat16),
    ("auto", "cuda", torch.float32, torch.float32),
    ("auto", "cuda", None, torch.float32),
    ("bfloat16", "cpu", torch.float32, torch.bfloat16),
    ("float16", "cuda", torch.float32, torch.float16),
    (torch.float64, "cpu", None, torch.float64),
])
def test_the_dtype_rule(request_, where, stored, expected):
    assert placement.resolve_dtype(request_, where, stored) == expected


def test_an_unknown_dtype_names_the_choices():
    with pytest.raises(EpverifyError, match="give one of auto, float32, bfloat16, float16"):
        placement.resolve_dtype("half-ish")


@pytest.fixture(scope="module")
def bf16_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("bf16")
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=20, n_positions=8, n_embd=16, n_layer=1, n_head=2)).to(
        torch.bfloat16).save_pretrained(path)
    return path


def test_the_stored_dtype_is_read_from_the_config(bf16_checkpoint):
    assert placement.stored_dtype(bf16_checkpoint) == torch.bfloat16
    assert placement.stored_dtype(bf16_checkpoint / "nope") is None


def test_wrap_pretrained_follows_the_rule_on_the_cpu(no_gpu, bf16_checkpoint):
    masked = wrap_pretrained(bf16_checkpoint)  # auto on the CPU: float32 whatever the checkpoint's dtype
    assert masked.adapter.device == torch.device("cpu") and masked.adapter.dtype == torch.float32
    kept = wrap_pretrained(bf16_checkpoint, dtype="bfloat16", device="cpu")
    assert kept.adapter.dtype == torch.bfloat16
    with pytest.raises(EpverifyError, match="torch sees no GPU"):
        wrap_pretrained(bf16_checkpoint, device="cuda")
