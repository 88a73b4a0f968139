"""Predict the peak memory of one Edge Pruning step, from a model config and a batch shape.

The memory plan (what the engine does, and so what this counts):
- frozen weights in the model's dtype; no gradients or optimizer state for them;
- one stack of writer deltas (writers x B x T x d, model dtype); its gradients accumulate in float32, heads in
  their own head_dim space (folded through the output projection), so the gradient side is about 1/H of the
  stack, and the embeddings (upstream of every mask) need none; the folding's intermediates stay under one
  attention chunk's reader inputs, which each layer's working set already counts;
- the ablated (corrupted) run's record, kept under no_grad: per layer the residuals the readers read and the
  per-head outputs before projection;
- masks, lambdas and their Adam state in float32, one set per edge;
- logits at full vocabulary at the loss positions (and at every position in the ablated record);
- the working set of one layer: with per-layer checkpointing only the layer being (re)computed holds its reader
  inputs (a chunk of batch rows at a time), attention scores and MLP activations; without it every layer keeps
  them until the backward.

`estimate` is checked against measurement: on the CPU the allocator's peak (`measure_cpu_peak`, small configs,
bench/memory_check.py, tests/test_memory_and_scale.py), on a GPU torch.cuda.max_memory_allocated (bench/scale.py,
CodeLlama-13B's shape). docs/benchmarks.md has the figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..core.graph import count_edges


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
    # OLMo 2's q/k norm spans every head's projection: each head's queries and keys come from a full projection
    # of that head's own input (docs/method.md), so the attention working set holds H + Hkv full projections.
    full_qk_norm: bool = False


@dataclass
class Estimate:
    total: int
    parts: dict[str, int] = field(default_factory=dict)


def shape_of(config) -> Shape:
    """Read the sizes the estimate needs from a Hugging Face config, as its family declares them (the registry,
    `epverify.adapters.registry`; most families use `standard_shape`)."""
    from ..adapters.registry import family_of

    fam = family_of(getattr(config, "model_type", None))
    return fam.shape(config) if fam.shape is not None else standard_shape(config)


def standard_shape(config, gated_mlp: bool = True, parallel_mlp: bool = False, full_qk_norm: bool = False) -> Shape:
    """The Shape of a config that uses the usual names (hidden_size, num_attention_heads, ...): one embedding
    writer, a gated MLP unless said otherwise."""
    d = config.hidden_size
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    tied = bool(getattr(config, "tie_word_embeddings", False))
    return Shape(config.num_hidden_layers, heads, kv, d, head_dim, config.intermediate_size, config.vocab_size, 1,
                 gated_mlp, tied, parallel_mlp, full_qk_norm)


def parameter_count(s: Shape) -> int:
    return s.n_layers * (sharded_layer_parameters(s) + s.d_model * s.head_dim * s.n_heads) + \
        s.vocab * s.d_model * (1 if s.tied else 2)


def sharded_layer_parameters(s: Shape) -> int:
    """A decoder layer's parameters that FSDP sharding splits (epverify.scale.distributed): all but the attention
    output projection, which stays replicated (norms neglected)."""
    qkv = s.d_model * s.head_dim * (s.n_heads + 2 * s.n_kv_heads)
    return qkv + (3 if s.gated_mlp else 2) * s.d_model * s.d_mlp


def estimate(config, batch: int, seq_len: int, dtype: torch.dtype = torch.float32,
             checkpoint: bool = True, examples: int | None = None, shards: int = 1,
             micro_batch: int = 0) -> Estimate:
    """Predicted peak bytes of one pruning step (interchange ablation) in one process, and its parts.

    `batch`: the rows this process runs (under `accelerate launch`, its share of the global batch).
    `examples`: rows in the dataset (None: the batch is the whole dataset, as in bench/scale.py); it decides
    whether the trainer caches the corrupted runs of the whole dataset (then a batch's rows are a second copy).
    `shards`: processes the decoder layers are sharded over (FSDP, epverify.scale.distributed): each holds 1/shards
    of them and one layer gathered at a time; embeddings, unembedding and output projections stay whole.
    `micro_batch`: rows run in one pass (`PruneConfig.micro_batch_size`; 0: the whole batch): every activation
    term is then that of a micro-batch, since each part's activations are freed before the next part runs.
    Checked against measurement in tests/test_memory_and_scale.py and docs/benchmarks.md.
    """
    s = config if isinstance(config, Shape) else shape_of(config)
    examples = batch if examples is None else examples  # the cache of ablated runs covers them all
    batch = min(batch, micro_batch) if micro_batch > 0 else batch
    width = torch.empty((), dtype=dtype).element_size()
    residual = batch * seq_len * s.d_model
    head_outputs = batch * seq_len * s.n_heads * s.head_dim
    parts = {
        "weights": _weight_bytes(s, width, shards),
        "delta_stack": (s.n_embeds + s.n_layers * (s.n_heads + 1)) * residual * width,
        "stack_gradients": 4 * s.n_layers * (head_outputs + residual),
        "ablated_run": _ablated_bytes(s, batch, seq_len, width, examples),
        "masks_and_optimizer": 6 * count_edges(s.n_layers, s.n_heads, s.n_kv_heads, s.n_embeds, s.parallel_mlp) * 4,
        # the masked run unembeds the loss positions only (one per example): logits, float32 log-softmax, gradient
        "logits": 3 * batch * s.vocab * 4,
        "layer_working_set": _working_set(s, batch, seq_len, width, checkpoint),
    }
    return Estimate(sum(parts.values()), parts)


def _weight_bytes(s: Shape, width: int, shards: int) -> int:
    weights = parameter_count(s) * width
    if shards > 1:
        layers = s.n_layers * sharded_layer_parameters(s) * width
        weights += layers // shards - layers + sharded_layer_parameters(s) * width
    return weights


def _ablated_bytes(s: Shape, batch: int, seq_len: int, width: int, examples: int | None) -> int:
    """The ablated run's record: per layer the residuals its readers read and the heads' outputs, and the logits.
    The evaluator keeps the whole dataset's when that fits in CACHE_BYTES, and then copies out each batch's rows."""
    from ..eval.evaluator import CACHE_BYTES

    record_row = (seq_len * ((s.n_embeds + 3 * s.n_layers + 1) * s.d_model + s.n_layers * s.n_heads * s.head_dim
                             + s.vocab)) * width
    n = batch if examples is None else examples
    cached = n * seq_len * (s.d_model * (s.n_embeds + 4 * s.n_layers + 2)
                            + s.n_layers * s.n_heads * s.head_dim) * 4 <= CACHE_BYTES
    return record_row * (batch + (n if cached else 0))


def _working_set(s: Shape, batch: int, seq_len: int, width: int, checkpoint: bool) -> int:
    """One layer's working set with per-layer checkpointing. The attention readers are mixed a chunk of batch rows
    at a time (engine): in the backward a chunk's reader-input gradients (two) and one q/k/v group's norm
    gradients (float32), the chunk's attention scores and softmax (float32), q/k/v and their gradients. The MLP:
    hidden activations and their gradients, its input and norm and their gradients. The larger of the two is the
    peak. Without checkpointing autograd keeps every layer's activations until the backward, and the peak is where
    the backward begins (each layer's backward then frees about what it allocates): per layer the reader inputs,
    the softmax output (float32) and the weights the product with v keeps, the MLP's hidden activations, q/k/v and
    the rotated q and k."""
    from ..core.engine import READER_CHUNK_BYTES

    tokens = batch * seq_len
    readers_per_layer = s.n_heads + 2 * s.n_kv_heads
    if not checkpoint:
        return s.n_layers * (readers_per_layer * tokens * s.d_model * width + 2 * batch * s.n_heads * seq_len**2 * 4
                             + 4 * tokens * s.d_mlp * width + 4 * tokens * s.n_heads * s.head_dim * width)
    rows = max(1, min(batch, READER_CHUNK_BYTES // (readers_per_layer * seq_len * s.d_model * 4)))
    chunk = rows * seq_len * s.d_model
    attention_work = ((2 * readers_per_layer + 4 * s.n_heads) * chunk * 4
                      + 3 * rows * s.n_heads * seq_len**2 * 4
                      + 6 * rows * seq_len * s.n_heads * s.head_dim * width)
    if s.full_qk_norm:  # each query and key head's own full projection, kept for the norm's backward (float32)
        attention_work += rows * seq_len * s.head_dim * (s.n_heads**2 + s.n_kv_heads**2) * 4
    mlp_work = 6 * tokens * s.d_mlp * width + 4 * tokens * s.d_model * width
    return max(attention_work, mlp_work)


def measure_cpu_peak(fn) -> tuple[object, int]:
    """Run fn() on the CPU and return (its result, the peak bytes torch's CPU allocator held during it beyond
    what was allocated before): the CPU counterpart of torch.cuda.max_memory_allocated.

    The allocator's accounting comes from torch.profiler (profile_memory=True), which reports the allocator's
    running total at every allocation and free. The process's RSS is no measure of this: glibc malloc keeps
    freed blocks, so a step's RSS shows about twice its live tensors.
    """
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    peak, stack = 0, list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        if event.tag == _EventType.Allocation and event.extra_fields.device.type == "cpu":
            peak = max(peak, event.extra_fields.total_allocated)
        stack.extend(event.children)
    return result, peak
