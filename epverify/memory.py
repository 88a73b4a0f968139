"""Predict the peak memory of one Edge Pruning step, from a model config and a batch shape.

The memory plan (what the engine does, and so what this counts):
- frozen weights in the model's dtype; no gradients or optimizer state for them;
- one stack of writer deltas (writers x B x T x d, model dtype); its gradients accumulate per writer group in
  float32, heads in their own head_dim space (folded through the output projection), so the gradient side is
  about 1/H of the stack;
- the ablated (corrupted) run's record, kept under no_grad: per layer the residuals the readers read and the
  per-head outputs before projection;
- masks, lambdas and their Adam state in float32, one set per edge;
- logits at full vocabulary for the batch;
- the working set of one layer: with per-layer checkpointing only the layer being (re)computed holds its reader
  inputs, attention scores and MLP activations; without it every layer keeps them until the backward.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .graph import count_edges


@dataclass
class Shape:
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    head_dim: int
    d_mlp: int
    vocab: int
    n_embeds: int
    gated_mlp: bool
    tied: bool
    parallel_mlp: bool = False


@dataclass
class Estimate:
    total: int
    parts: dict[str, int] = field(default_factory=dict)


def shape_of(config) -> Shape:
    """Read the sizes the estimate needs from a Hugging Face config (GPT-2, Llama, GPT-NeoX, Qwen2)."""
    kind = getattr(config, "model_type", "")
    if kind == "gpt2":
        d = config.n_embd
        return Shape(config.n_layer, config.n_head, config.n_head, d, d // config.n_head,
                     config.n_inner or 4 * d, config.vocab_size, 2, False, True)
    d = config.hidden_size
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    tied = bool(getattr(config, "tie_word_embeddings", False))
    parallel = kind == "gpt_neox" and getattr(config, "use_parallel_residual", True)
    return Shape(config.num_hidden_layers, heads, kv, d, head_dim, config.intermediate_size, config.vocab_size, 1,
                 kind != "gpt_neox", tied, parallel)


def parameter_count(s: Shape) -> int:
    attn = s.d_model * s.head_dim * (2 * s.n_heads + 2 * s.n_kv_heads)
    mlp = (3 if s.gated_mlp else 2) * s.d_model * s.d_mlp
    embeds = s.vocab * s.d_model * (1 if s.tied else 2)
    return s.n_layers * (attn + mlp) + embeds


def estimate(config, batch: int, seq_len: int, dtype: torch.dtype = torch.float32,
             checkpoint: bool = True) -> Estimate:
    """Predicted peak bytes of one pruning step (interchange ablation) and its parts."""
    s = config if isinstance(config, Shape) else shape_of(config)
    width = torch.empty((), dtype=dtype).element_size()
    tokens = batch * seq_len
    writers = s.n_embeds + s.n_layers * (s.n_heads + 1)
    readers_per_layer = s.n_heads + 2 * s.n_kv_heads
    edges = count_edges(s.n_layers, s.n_heads, s.n_kv_heads, s.n_embeds, s.parallel_mlp)
    residual = tokens * s.d_model

    layer_work = (
        4 * readers_per_layer * residual * width  # reader inputs, their norms, and the gradients of both
        + 3 * batch * s.n_heads * seq_len * seq_len * 4  # attention scores, softmax (float32) and its gradient
        + 4 * tokens * s.d_mlp * width  # MLP hidden activations and gradients
        + 6 * tokens * s.n_heads * s.head_dim * width  # q, k, v and their gradients
    )
    parts = {
        "weights": parameter_count(s) * width,
        "delta_stack": writers * residual * width,
        "stack_gradients": 4 * (s.n_layers * tokens * s.n_heads * s.head_dim + (s.n_embeds + s.n_layers) * residual),
        "ablated_run": ((s.n_embeds + 3 * s.n_layers + 1) * residual + s.n_layers * tokens * s.n_heads * s.head_dim)
        * width,
        "masks_and_optimizer": 6 * edges * 4,
        "logits": 3 * tokens * s.vocab * 4,
        "layer_working_set": layer_work * (1 if checkpoint else s.n_layers),
    }
    return Estimate(sum(parts.values()), parts)
