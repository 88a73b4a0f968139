"""Time and memory of one Edge Pruning step against a plain forward+backward of the same model and batch.

    python bench/step.py                 # every case, table of ratios
    python bench/step.py --quick         # small shapes (used by the tests)
    python bench/step.py --cases gpt2-small-b8 --repeats 7
    python bench/step.py --device cuda   # on a GPU: the Hugging Face cases (Tracr models run on the CPU)
    python bench/step.py --cases gpt2-small-b32 --count-ops --repeats 1 --no-memory   # ops dispatched per step

A pruning step is what the trainer does per batch: the corrupted run (no grad; cached across steps when it fits,
as the trainer does), the masked forward with sampled masks (unembedding the loss positions only), the KL against
the cached full-model distribution, its backward into the masks, and the optimizer steps.
The baseline is a plain forward+backward of the same model on the same batch with gradients for its weights
(for Hugging Face models, the model's own forward). Times are medians of several runs after a warm-up, the two
modes alternating (wall clock, or with --clock cpu the process's CPU time); peak memory is the peak resident memory
above the set-up's, sampled every millisecond (CPU) or torch's peak (GPU), each mode measured in its own process.
Ratios are printed last.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from epverify import PruneConfig, PruneData  # noqa: E402
from epverify.adapters import wrap  # noqa: E402
from epverify.core import engine  # noqa: E402
from epverify.eval import evaluator  # noqa: E402
from epverify.scale.distributed import Parallel  # noqa: E402
from epverify.train.loop import Training  # noqa: E402

# ----- cases ---------------------------------------------------------------------------------------------------
DEVICE = torch.device("cpu")  # --device


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _hf_case(kind: str, batch: int, seq: int, quick: bool):
    from transformers import AutoModelForCausalLM, GPT2Config

    from epverify.adapters.registry import Sizes, family

    torch.manual_seed(0)
    if kind == "gpt2":
        cfg = GPT2Config(n_layer=2, n_head=4, n_embd=64) if quick else GPT2Config()  # GPT-2 small shape
    else:  # a registered family at a small Llama-like shape
        sizes = (Sizes(n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, d_model=64, d_mlp=128, vocab=1000) if quick
                 else Sizes(n_layers=6, n_heads=8, n_kv_heads=4, head_dim=64, d_model=512, d_mlp=1376, vocab=32000))
        cfg = family(kind).tiny_config(sizes)
    model = AutoModelForCausalLM.from_config(cfg)
    cfg._attn_implementation = "eager"
    model.eval().to(DEVICE)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq)).to(DEVICE)
    corrupted = torch.randint(0, cfg.vocab_size, (batch, seq)).to(DEVICE)
    mask = torch.ones_like(ids)
    loss_mask = torch.zeros_like(ids, dtype=torch.bool)
    loss_mask[:, -1] = True

    def plain():
        for p in model.parameters():
            p.requires_grad_(True)
        logits = model(input_ids=ids, attention_mask=mask).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
        loss.backward()
        model.zero_grad(set_to_none=True)
        for p in model.parameters():  # frozen again for the pruning step, which alternates with this one
            p.requires_grad_(False)

    return model, PruneData(ids, mask, loss_mask, corrupted), plain


def _tracr_case(name: str, batch: int, quick: bool):
    from epverify.tracr import load
    from epverify.tracr.model import CompiledModel
    from epverify.tracr.policy import tracr_data

    if name == "wide":
        model = _wide_tracr(quick)
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(0, 32, (batch, 1 + model.max_seq_len), generator=gen)
        corrupted = torch.randint(0, 32, ids.shape, generator=gen)
        mask = torch.ones_like(ids)
        loss_mask = mask.bool().clone()
        loss_mask[:, 0] = False
        data = PruneData(ids, mask, loss_mask, corrupted)
    else:
        model = load(name)
        full = tracr_data(model)
        index = torch.arange(min(batch, len(full)))
        data = PruneData(full.input_ids[index], full.attention_mask[index], full.loss_mask[index],
                         full.corrupted_ids[index])
    assert isinstance(model, CompiledModel)
    masked = wrap(model)

    def plain():
        for w in model.weights.values():
            w.requires_grad_(True)
        out = engine.forward(masked.adapter, data.input_ids, data.attention_mask)
        out.float().pow(2).mean().backward()
        for w in model.weights.values():
            w.grad = None
            w.requires_grad_(False)

    return model, data, plain


def _wide_tracr(quick: bool):
    """A synthetic Tracr-shaped model (no layer norm, ReLU MLPs, one-hot embeddings) wider than any zoo program."""
    from epverify.tracr.model import CompiledModel

    layers, heads, key, d, hidden = (2, 2, 8, 32, 32) if quick else (6, 8, 32, 256, 512)
    gen = torch.Generator().manual_seed(0)
    w = {"token_embed": torch.randn(32, d, generator=gen), "pos_embed": torch.randn(17, d, generator=gen),
         "unembed": torch.randn(d, 16, generator=gen)}
    for layer in range(layers):
        p = f"layers.{layer}."
        for part in ("query", "key", "value"):
            w[p + part] = torch.randn(d, heads * key, generator=gen) / d**0.5
        w[p + "linear"] = torch.randn(heads * key, d, generator=gen) / (heads * key) ** 0.5
        w[p + "mlp1_w"] = torch.randn(d, hidden, generator=gen) / d**0.5
        w[p + "mlp1_b"] = torch.zeros(hidden)
        w[p + "mlp2_w"] = torch.randn(hidden, d, generator=gen) / hidden**0.5
        w[p + "mlp2_b"] = torch.zeros(d)
    return CompiledModel("wide", w, list(range(30)), 16, False, [str(i) for i in range(d)],
                         {i: i for i in range(32)}, list(range(16)), layers, heads, key)


CASES = {
    "tracr-largest": lambda quick: _tracr_case("shuffle_dyck2", 64, quick),
    "tracr-wide": lambda quick: _tracr_case("wide", 32, quick),
    "gpt2-small-b8": lambda quick: _hf_case("gpt2", 8, 24, quick),
    "gpt2-small-b32": lambda quick: _hf_case("gpt2", 32, 24, quick),
    "llama-small-b8": lambda quick: _hf_case("llama", 8, 64, quick),
    "gemma2-small-b8": lambda quick: _hf_case("gemma2", 8, 64, quick),  # post-norms: rho from a second projection
    "olmo2-small-b8": lambda quick: _hf_case("olmo2", 8, 64, quick),  # q/k norm over all heads: H projections
}


# ----- the pruning step ------------------------------------------------------------------------------------------
def pruning_step_fn(model, data: PruneData):
    """One step of the trainer's own loop (`train.loop.Training.step`: sample a batch and masks, the masked run,
    the objective, the backward, both optimizers) on `data`, the whole data each step, as a closure."""
    config = PruneConfig(target_sparsity=0.5, steps=2**62, warmup_steps=0, batch_size=len(data))
    run = Training(wrap(model).adapter, data, config, Parallel())
    steps = itertools.count()
    return lambda: run.step(next(steps))


# ----- measurement -----------------------------------------------------------------------------------------------
def _median_seconds(fns, repeats: int, clock=time.perf_counter) -> list[float]:
    """Median time of each function, the functions run in turn (a load change on a shared machine hits all)."""
    for fn in fns:
        fn()  # warm-up
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times):
            _sync()
            start = clock()
            fn()
            _sync()
            out.append(clock() - start)
    return [statistics.median(t) for t in times]


def _profile(case: str, plain, step, runs: int = 3, top: int = 12) -> None:
    """Print the ops that take the most self time in each mode (on a GPU: device time, with launch counts)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEVICE.type == "cuda" else [])
    key = "self_cuda_time_total" if DEVICE.type == "cuda" else "self_cpu_time_total"
    for mode, fn in (("plain", plain), ("step", step)):
        with profile(activities=activities) as prof:
            for _ in range(runs):
                fn()
            _sync()
        averages = prof.key_averages()
        try:
            table = averages.table(sort_by=key.replace("cuda", "device"), row_limit=top)  # newer torch's name
        except (AttributeError, KeyError, ValueError):
            table = averages.table(sort_by=key, row_limit=top)
        print(f"--- {case}, {mode}: {runs} runs, sorted by {key}", flush=True)
        print(table, flush=True)


# Dispatched ops that launch no kernel: views and allocations. Every other op is (at most) one kernel launch on a
# GPU, and each costs the same fixed dispatch overhead on the CPU side whatever its size.
_NO_KERNEL = {"empty", "empty_strided", "new_empty", "new_empty_strided", "resolve_conj", "resolve_neg", "detach",
              "lift_fresh", "_unsafe_view", "_local_scalar_dense"}
_GEMMS = ("mm", "bmm", "addmm", "baddbmm", "addmm_", "baddbmm_")


def _count_ops(fn) -> dict:
    """Ops of one run of fn as the dispatcher sees them below autograd (the forward's and the backward's, no
    views or allocations): the GEMMs by name, the other ops, their total, and the ten most frequent. Run it after
    the timed runs, so that caches are filled as in a training step."""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            if not func.is_view and name not in _NO_KERNEL:
                self.ops[name] += 1
            return func(*args, **(kwargs or {}))

    with Count() as count:
        fn()
    _sync()
    ops = count.ops
    gemms = {name: ops[name] for name in _GEMMS if ops[name]}
    return {"gemms": gemms, "other": sum(ops.values()) - sum(gemms.values()), "total": sum(ops.values()),
            "most_frequent": dict(ops.most_common(10))}


def _peak_bytes(fn) -> int:
    """Peak memory above the current level while fn runs (GPU: torch's peak; CPU: sampled resident memory)."""
    if DEVICE.type == "cuda":
        _sync()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        _sync()
        return torch.cuda.max_memory_allocated() - base
    import psutil

    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = base
    running = True

    def sample():
        nonlocal peak
        while running:
            peak = max(peak, proc.memory_info().rss)
            time.sleep(0.001)

    thread = threading.Thread(target=sample)
    thread.start()
    try:
        fn()
    finally:
        running = False
        thread.join()
    return peak - base


def _measure_memory(case: str, mode: str, quick: bool) -> int:
    model, data, plain = CASES[case](quick)
    fn = plain if mode == "plain" else pruning_step_fn(model, data)
    return _peak_bytes(fn)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small shapes, for tests")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--json", help="also write the results as JSON")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: the process CPU time (with --threads 1: steadier on a machine shared with others)")
    parser.add_argument("--uncached", action="store_true",
                        help="run the corrupted forward every step instead of caching it (datasets too large to cache)")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for the Hugging Face cases on a GPU")
    parser.add_argument("--profile", action="store_true",
                        help="also print where each mode's time goes (torch.profiler, 3 runs each, top 12 ops)")
    parser.add_argument("--count-ops", action="store_true",
                        help="also count the ops each mode dispatches in one run (GEMMs, others, total)")
    parser.add_argument("--_memory", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type != "cpu":
        tracr = [c for c in args.cases if c.startswith("tracr")]
        if tracr and args.cases != list(CASES):
            parser.error(f"{', '.join(tracr)}: Tracr models run on the CPU only; drop them or use --device cpu")
        args.cases = [c for c in args.cases if not c.startswith("tracr")]
    torch.set_grad_enabled(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.uncached:
        evaluator.CACHE_BYTES = -1
    if args._memory:
        print(_measure_memory(args._memory[0], args._memory[1], args.quick))
        return

    rows = []
    for case in args.cases:
        model, data, plain = CASES[case](args.quick)
        graph = wrap(model).graph
        clock = time.process_time if args.clock == "cpu" else time.perf_counter
        step = pruning_step_fn(model, data)
        plain_s, step_s = _median_seconds([plain, step], args.repeats, clock)
        if args.profile:
            _profile(case, plain, step)
        row = {"case": case, "edges": graph.num_edges, "batch": list(data.input_ids.shape),
               "plain_s": plain_s, "step_s": step_s, "time_ratio": step_s / plain_s}
        if args.count_ops:
            row.update({"plain_ops": _count_ops(plain), "step_ops": _count_ops(step)})
        if not args.no_memory:
            mem = {}
            for mode in ("plain", "step"):
                cmd = [sys.executable, __file__, "--_memory", case, mode] + (["--quick"] if args.quick else [])
                cmd += ["--threads", str(args.threads)] if args.threads else []
                cmd += ["--uncached"] if args.uncached else []
                cmd += ["--device", args.device]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True)
                mem[mode] = int(out.stdout.strip().splitlines()[-1])
            row.update({"plain_mb": mem["plain"] / 2**20, "step_mb": mem["step"] / 2**20,
                        "memory_ratio": mem["step"] / max(mem["plain"], 1)})
        rows.append(row)
        print(json.dumps(row), flush=True)

    print()
    print(f"{'case':16s} {'edges':>7s} {'batch':>8s} {'plain s':>8s} {'step s':>8s} {'plain MB':>9s} "
          f"{'step MB':>8s} {'time x':>7s} {'mem x':>6s}")
    for r in rows:
        print(f"{r['case']:16s} {r['edges']:7d} {'x'.join(map(str, r['batch'])):>8s} {r['plain_s']:8.3f} "
              f"{r['step_s']:8.3f} {r.get('plain_mb', float('nan')):9.1f} {r.get('step_mb', float('nan')):8.1f} "
              f"{r['time_ratio']:7.2f} {r.get('memory_ratio', float('nan')):6.2f}")
    if args.json:
        conditions = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch": torch.__version__,
                      "device": torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu",
                      "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "uncached": args.uncached,
                      "clock": args.clock, "repeats": args.repeats,
                      "load_average_at_end": os.getloadavg(), "command": " ".join(sys.argv)}
        with open(args.json, "w") as fh:
            json.dump({"conditions": conditions, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
