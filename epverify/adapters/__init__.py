"""Wrap a model for edge-level runs: Hugging Face causal LMs of the registered families and Tracr models.

from epverify.adapters import wrap, wrap_pretrained
masked = wrap(model)                    # an in-memory model: copies no weights, puts it in eval mode
masked = wrap_pretrained("path/to/dir")  # a local checkpoint directory
logits = masked.run(ids, mask, corrupted_ids=corrupted, edges=[["a0.h1", "m0"], ...])
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..core.masked import MaskedModel
from ..errors import EpverifyError
from .base import Adapter
from .registry import family_of, supported_text

WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt")


def adapter_class(model_type: str):
    """The adapter class of a supported Hugging Face `model_type` (the registry, `registry.py`)."""
    return family_of(model_type).adapter


def adapter_for(model) -> Adapter:
    """The adapter of a model: a Hugging Face causal LM of a supported family, or a Tracr CompiledModel."""
    from ..tracr.model import CompiledModel

    if isinstance(model, Adapter) or getattr(model, "wraps_adapter", False):  # e.g. scale's ShardedAdapter
        return model
    if isinstance(model, CompiledModel):
        from .tracr import TracrAdapter

        return TracrAdapter(model)
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type is None:
        raise EpverifyError(f"cannot wrap a {type(model).__name__}: supported are {supported_text()}")
    family = family_of(model_type)
    output = getattr(model, "get_output_embeddings", None)
    if output is None or output() is None:
        raise EpverifyError(
            f"{type(model).__name__} has no lm_head: load the causal LM class (AutoModelForCausalLM),"
            " not the base model"
        )
    return family.adapter(model)


def wrap(model) -> MaskedModel:
    """A MaskedModel over `model` (a supported Hugging Face causal LM or a Tracr CompiledModel), no copies."""
    if isinstance(model, MaskedModel):
        return model
    return MaskedModel(adapter_for(model))


def wrap_pretrained(
    path: str | Path, dtype: str | torch.dtype | None = "auto", device: str | torch.device | None = "auto"
) -> MaskedModel:
    """Load a causal LM from a local directory (`AutoModelForCausalLM.from_pretrained`) and wrap it.

    device: "auto" (the GPU when one is visible), "cpu", "cuda" or "cuda:N"; dtype: "auto" (bfloat16 on a GPU for
    a checkpoint stored in 16 bits, else float32), "float32", "bfloat16", "float16" or a torch dtype
    (`epverify.scale.device`; None means auto).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    from ..scale.device import placement

    path = Path(path)
    if not path.is_dir():
        raise EpverifyError(
            f"no model directory at {str(path)!r}: pass a local directory written by save_pretrained"
        )
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise EpverifyError(f"cannot read a model config in {str(path)!r}: {e}") from None
    family_of(config.model_type, where=f" in {str(path)!r}")
    device, dtype = placement(path, device, dtype)
    kwargs = {"local_files_only": True, "dtype": dtype}
    if not any(next(path.glob(pattern), None) for pattern in WEIGHT_FILES):
        raise EpverifyError(f"no weights in {path}: expected model.safetensors (or pytorch_model.bin, or their shards)"
                            " beside config.json; save the model with model.save_pretrained(path)")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a loading bar on stderr would bury epverify's one-line errors
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except Exception as err:  # safetensors, torch and transformers raise many kinds for a broken file
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise EpverifyError(f"cannot read the weights in {path} ({type(err).__name__}: {reason}): the file is"
                            " incomplete or corrupt; save the model again with save_pretrained") from None
    return wrap(model.to(device))


__all__ = ["MaskedModel", "adapter_for", "wrap", "wrap_pretrained"]
