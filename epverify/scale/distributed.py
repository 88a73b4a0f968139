"""One pruning run over several processes, launched with `accelerate launch` (or torchrun).

    accelerate launch --config_file configs/fsdp.yaml -m epverify prune --model DIR --task TASK --out OUT

Masks are replicated, data is split. Every process holds the same log-alphas, lambdas and Adam state, draws the
same global batch and the same mask noise from the same seeded generator, runs the masked model on its own
share of the batch's rows, and the mask and lambda gradients are averaged across processes before every
optimizer step. So the masks are identical in every process after every step, and equal, up to the order of
floating-point sums, to those of one process running the whole global batch. Only process 0 prints and writes.

Frozen weights. Under an FSDP config (`distributed_type: FSDP`, any sharding strategy but NO_SHARD) every decoder
layer is sharded with torch's FSDP2 (`fully_shard`, `LayerShards`): each process keeps 1/N of each layer's frozen
weights; the engine calls the adapter one layer at a time, and the first call for a layer unshards it (an
all-gather), which stays until a call for another layer reshards it. Sharded training recomputes each layer in
the backward (per-layer checkpointing), gathering it again, so about one layer's full weights are alive at any
time, as with FULL_SHARD. Replicated in every process: the embeddings, the final norm and the unembedding, and
each layer's attention output projection (and its bias), which the delta stack keeps for the whole step to fold
the heads' gradients. Nothing is trained in the model, so there are no weight gradients or optimizer state to
shard. See docs/scale.md.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import EpverifyError

# FSDP1 sharding strategies as `accelerate launch` exports them (by name or by the enum's value)
_NO_SHARD = ("NO_SHARD", "3")


def _env_flag(env, name: str) -> bool:
    return env.get(name, "false").strip().lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class LaunchSettings:
    """What `accelerate launch` (or torchrun) says about this process and the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launched: bool = False  # started by accelerate launch or torchrun: place the model on this process's GPU
    use_cpu: bool = False  # accelerate launch --cpu
    fsdp: bool = False  # distributed_type FSDP
    shard: bool = False  # FSDP with a sharding strategy other than NO_SHARD
    offload: bool = False  # fsdp_offload_params: shards live in host memory, copied to the GPU to be gathered
    checkpoint_layers: bool = False  # fsdp_activation_checkpointing
    layer_classes: tuple[str, ...] = ()  # fsdp_transformer_layer_cls_to_wrap
    dtype: torch.dtype | None = None  # mixed_precision bf16 / fp16: the frozen weights' dtype

    @classmethod
    def from_env(cls, env=None) -> LaunchSettings:
        env = os.environ if env is None else env
        fsdp = _env_flag(env, "ACCELERATE_USE_FSDP")
        strategy = env.get("FSDP_SHARDING_STRATEGY", "FULL_SHARD").strip().upper()
        precision = env.get("ACCELERATE_MIXED_PRECISION", "no").strip().lower()
        classes = env.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "")
        return cls(
            rank=int(env.get("RANK", 0)),
            world_size=int(env.get("WORLD_SIZE", 1)),
            local_rank=int(env.get("LOCAL_RANK", 0)),
            launched="LOCAL_RANK" in env or "ACCELERATE_MIXED_PRECISION" in env,
            use_cpu=_env_flag(env, "ACCELERATE_USE_CPU"),
            fsdp=fsdp,
            shard=fsdp and strategy not in _NO_SHARD,
            offload=fsdp and _env_flag(env, "FSDP_OFFLOAD_PARAMS"),
            checkpoint_layers=fsdp and _env_flag(env, "FSDP_ACTIVATION_CHECKPOINTING"),
            layer_classes=tuple(c.strip() for c in classes.split(",") if c.strip()),
            dtype={"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision),
        )


def is_main_process() -> bool:
    """True in process 0 of a launched run, and in a plain single process."""
    return int(os.environ.get("RANK", 0)) == 0


def quiet_unless_main() -> None:
    """In every process but process 0, send standard output to nowhere: process 0 speaks for the run. Errors
    (standard error) still come from the process that has them."""
    if not is_main_process():
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)


@dataclass
class Parallel:
    """This process's place in the run, and the few collective steps the trainer needs.

    One process (the default, `Parallel()`) runs the whole batch and every method is the identity."""

    settings: LaunchSettings = field(default_factory=LaunchSettings)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    group: object = None  # the process group, when this object created it

    @property
    def rank(self) -> int:
        return self.settings.rank

    @property
    def world_size(self) -> int:
        return self.settings.world_size

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.settings.shard and self.world_size > 1

    def adjust(self, config):
        """The prune config as this launch runs it: sharded layers, and the FSDP config's activation
        checkpointing, turn on per-layer checkpointing (the backward then regathers each layer; without it a
        resharded layer's weights would be gone when the backward needs them)."""
        if (self.settings.checkpoint_layers or self.sharded) and not config.checkpoint_layers:
            from dataclasses import replace

            return replace(config, checkpoint_layers=True)
        return config

    def check(self, config) -> None:
        """Raise an EpverifyError for a prune config this run cannot split across processes."""
        if self.world_size == 1:
            return
        if config.estimator != "pathwise":
            raise EpverifyError(f"the {config.estimator} estimator runs in one process only: launch with "
                                "--num_processes 1, or use the pathwise estimator")
        if config.batch_size < self.world_size:
            raise EpverifyError(f"the batch ({config.batch_size}) is smaller than the number of processes "
                                f"({self.world_size}): give --batch-size of at least {self.world_size}")

    # ----- the training step -------------------------------------------------------------------------------
    def rows(self, n: int) -> slice:
        """This process's contiguous share of a global batch of n rows (the first n % N processes get one more)."""
        if n < self.world_size:
            raise EpverifyError(f"a batch of {n} rows cannot be split over {self.world_size} processes: give at "
                                f"least {self.world_size} examples and --batch-size {self.world_size}")
        base, extra = divmod(n, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def share_size(self, n: int) -> int:
        """The most rows any process runs of a batch of n: the batch size to use where every process must run
        every example (evaluation with sharded weights) without holding more than in training."""
        return -(-n // self.world_size)

    def local_objective(self, faithfulness: torch.Tensor) -> torch.Tensor:
        """The faithfulness term to backpropagate here: this process's share of the global batch's loss, scaled
        so that averaging the gradients over processes gives the gradient of the whole batch's loss while the
        sparsity terms (the same in every process) keep theirs."""
        return faithfulness if self.world_size == 1 else faithfulness * self.world_size

    def any(self, flag: bool) -> bool:
        """Whether any process has `flag` set (one all-reduce when several run): they stop at the same step."""
        if self.world_size == 1:
            return flag
        import torch.distributed as dist

        value = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def average_gradients(self, params: list[torch.Tensor], faithfulness: torch.Tensor) -> torch.Tensor:
        """Average the parameters' gradients over processes (one all-reduce); returns the global batch's
        faithfulness, the sum of every process's share."""
        if self.world_size == 1:
            return faithfulness
        import torch.distributed as dist

        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads] + [faithfulness.detach().reshape(1).to(grads[0].dtype)])
        dist.all_reduce(flat)  # sum
        offset = 0
        for p in params:
            p.grad = (flat[offset : offset + p.numel()] / self.world_size).view_as(p)
            offset += p.numel()
        return flat[-1]

    # ----- the model ---------------------------------------------------------------------------------------
    def wrap_pretrained(self, path: str | Path, dtype="auto"):
        """Load a local checkpoint (dtype: as `epverify.scale.device` resolves it on this process's device; the
        launch's mixed precision when auto), shard its decoder layers (FSDP) and put it on this process's device;
        a MaskedModel as `epverify.adapters.wrap_pretrained` returns."""
        from ..adapters import wrap_pretrained
        from ..core.masked import MaskedModel
        from .device import resolve_dtype, stored_dtype

        if dtype in (None, "auto") and self.settings.dtype is not None:
            dtype = self.settings.dtype
        dtype = resolve_dtype(dtype, self.device, stored_dtype(path))
        masked = wrap_pretrained(path, dtype=dtype, device="cpu")  # host memory first: only shards move
        if self.sharded:
            shards = LayerShards(masked.adapter, self)
            place_replicated(masked.adapter.model, self.device)  # the shards are FSDP's
            masked = MaskedModel(ShardedAdapter(masked.adapter, shards))
        elif self.device.type != "cpu":
            masked.adapter.model.to(self.device)
        if self.world_size > 1 and self.is_main:
            print(self.describe(masked), flush=True)
        return masked

    def describe(self, masked) -> str:
        """One line on how the run is split: processes, device, and what each process holds of the weights."""
        mib = 2**20
        total = sum(p.numel() * p.element_size() for p in masked.adapter.model.parameters())
        head = f"{self.world_size} processes on {self.device.type}, each running its share of every batch"
        adapter = masked.adapter
        if not isinstance(adapter, ShardedAdapter):
            return f"{head}; weights replicated: {total / mib:,.1f} MiB per process"
        s = adapter.shards
        offload = " (in host memory)" if self.settings.offload else ""
        return (f"{head}; FSDP: decoder layers sharded, {s.sharded_bytes / self.world_size / mib:,.1f} of "
                f"{s.sharded_bytes / mib:,.1f} MiB per process{offload}; replicated: {total / mib:,.1f} MiB "
                "(embeddings, unembedding, final norm, attention output projections)")

    def close(self) -> None:
        if self.group is not None:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.group = None


def setup(settings: LaunchSettings | None = None, device="auto") -> Parallel:
    """This process's Parallel on the device asked for (`epverify.scale.device.resolve_device`: under a launch,
    the process's own), joining the process group when launched with several processes."""
    from .device import resolve_device

    settings = LaunchSettings.from_env() if settings is None else settings
    launched = None
    if settings.launched:
        use_gpu = not settings.use_cpu and torch.cuda.is_available()
        launched = torch.device("cuda", settings.local_rank) if use_gpu else torch.device("cpu")
    device = resolve_device(device, launched)
    use_gpu = device.type == "cuda"
    parallel = Parallel(settings, device)
    if settings.world_size > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            if use_gpu:
                torch.cuda.set_device(device)
            dist.init_process_group("nccl" if use_gpu else "gloo")
            parallel.group = dist.group.WORLD
            atexit.register(parallel.close)
        if not parallel.is_main:
            logging.getLogger("epverify").setLevel(logging.ERROR)  # warnings once, from process 0
    return parallel


# ----- sharded frozen weights ------------------------------------------------------------------------------------
def _layer_modules(adapter) -> list[nn.Module]:
    modules = getattr(adapter, "layers", None)
    if modules is None or len(modules) != adapter.n_layers:
        raise EpverifyError(f"{type(adapter).__name__} has no per-layer modules to shard: FSDP sharding needs a "
                            "Hugging Face model of a registered family; use a config without FSDP")
    return list(modules)


def _layer_class(adapter) -> str:
    """The decoder layer class FSDP wraps: the family's, from the registry (`epverify.adapters.registry`)."""
    from ..adapters.registry import family

    return family(adapter.family).layer_class


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """a and b are the same weights (b possibly a reshaped view of a)."""
    return a.data_ptr() == b.data_ptr() and a.numel() == b.numel()


class LayerShards:
    """Each process's 1/N of every decoder layer's frozen weights, through torch's FSDP2 (`fully_shard`), and the
    one layer gathered at a time.

    Every decoder layer is a `fully_shard` module: at rest its parameters are DTensors holding this process's
    shard (in host memory under FSDP's CPU offload policy). `gather(l)` reshards the layer gathered before and
    unshards layer l (`FSDPModule.unshard`, an all-gather), so its modules hold the full weights while the engine
    calls the adapter for that layer. The engine never calls a layer's own forward, so FSDP's hooks do not run;
    every process calls `gather` in the same order (same layers, same steps), as collectives need. A layer's
    attention output projection (and its bias) is left out of the sharding (`ignored_params`): the delta stack
    keeps it for the whole step. Training with sharded layers recomputes each layer in the backward (per-layer
    checkpointing, which `Parallel.adjust` turns on), so no saved activation refers to a resharded weight.
    """

    def __init__(self, adapter, parallel: Parallel):
        from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard

        self.parallel = parallel
        self.device = parallel.device
        self.layers = _layer_modules(adapter)
        wanted = parallel.settings.layer_classes
        kind = _layer_class(adapter)
        if wanted and kind not in wanted:
            raise EpverifyError(f"the FSDP config wraps {', '.join(wanted)} but this model's decoder layers are "
                                f"{kind}: set fsdp_transformer_layer_cls_to_wrap: {kind}")
        offload = parallel.settings.offload
        policy = CPUOffloadPolicy(pin_memory=self.device.type == "cuda") if offload else OffloadPolicy()
        mesh = None
        if self.device.type == "cuda":
            from torch.distributed.device_mesh import init_device_mesh

            mesh = init_device_mesh("cuda", (parallel.world_size,))
        self.sharded_bytes = 0
        for layer, module in enumerate(self.layers):
            kept = [k for k in (adapter.head_out_weight(layer), adapter.attention_bias(layer)) if k is not None]
            ignored = {p for p in module.parameters() if any(_same_tensor(p, k) for k in kept)}
            sharded = [p for p in module.parameters() if p not in ignored]
            dtypes = {p.dtype for p in sharded}
            if len(dtypes) != 1:
                raise EpverifyError(f"layer {layer} mixes parameter dtypes {sorted(map(str, dtypes))}: load the "
                                    "model in one dtype to shard it")
            self.sharded_bytes += sum(p.numel() * p.element_size() for p in sharded)
            fully_shard(module, mesh=mesh, offload_policy=policy, ignored_params=ignored)
        self.current: int | None = None
        self.gathers = 0  # all-gathers so far

    def gather(self, layer: int) -> None:
        """Make layer `layer`'s full weights available to its modules (a collective the first time in a row)."""
        if layer == self.current:
            return
        if self.current is not None:
            self.layers[self.current].reshard()
        self.layers[layer].unshard()
        self.current = layer
        self.gathers += 1

    def release(self) -> None:
        """Reshard the layer gathered last (between steps every layer is at rest)."""
        if self.current is not None:
            self.layers[self.current].reshard()
            self.current = None


def place_replicated(model: nn.Module, device: torch.device) -> None:
    """Move every parameter and buffer that FSDP does not hold (no DTensor) to `device`: the shards stay where
    FSDP put them (the device, or host memory under offload)."""
    from torch.distributed.tensor import DTensor

    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None and not isinstance(p, DTensor) and p.device != device:
                module._parameters[name] = nn.Parameter(p.data.to(device), requires_grad=p.requires_grad)
        for name, b in list(module._buffers.items()):
            if b is not None and b.device != device:
                module._buffers[name] = b.to(device)


# Adapter calls that read one layer's weights: the layer is their first argument.
PER_LAYER_CALLS = ("project", "position", "attention_qkv", "attention", "head_out_weight", "head_writes",
                   "head_write_sum", "attention_bias", "mlp")


class ShardedAdapter:
    """An adapter over a model whose decoder layers are sharded: each per-layer call gathers its layer first.

    Everything else (names, sizes, the component graph, embeddings, unembedding) is the wrapped adapter's."""

    wraps_adapter = True  # `adapters.adapter_for` takes it as it is

    def __init__(self, adapter, shards: LayerShards):
        self._adapter = adapter
        self.shards = shards

    def __getattr__(self, name: str):
        return getattr(self._adapter, name)


def _gathering(name: str):
    def call(self, layer: int, *args, **kwargs):
        self.shards.gather(layer)
        return getattr(self._adapter, name)(layer, *args, **kwargs)

    call.__name__ = name
    call.__doc__ = f"The wrapped adapter's `{name}`, with the layer's weights gathered first."
    return call


for _name in PER_LAYER_CALLS:
    setattr(ShardedAdapter, _name, _gathering(_name))
