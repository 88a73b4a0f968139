"""`epverify prune --model DIR --task TASK --out DIR`: find a circuit in a Hugging Face model on a task."""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path

from ..errors import EpverifyError
from ..io.outputs import check_not_input
from .command import Command, resolve
from .config import config_values, read_toml, toml_value, write_toml
from .options import MODEL, PLACEMENT, RUN, TASK, TRAINING, check_task_settings, task_options

RUN_CONFIG = "run.toml"  # the resolved config of a prune run, saved in its --out directory
REQUIRED = ("model", "task", "out")


def _resumed(settings):
    """With --resume DIR: the settings the run saved in DIR/run.toml, under those given now."""
    saved = Path(settings.resume) / RUN_CONFIG
    if not saved.is_file():
        raise EpverifyError(f"no {RUN_CONFIG} in {settings.resume}: --resume needs the directory of an earlier"
                            " epverify prune run (its --out)")
    if settings.out is not None and Path(settings.out) != Path(settings.resume):
        raise EpverifyError(f"--out {settings.out} differs from --resume {settings.resume}: a resumed run writes"
                            " into its own directory; drop --out")
    given = {name: getattr(settings, name) for name in settings.given}
    resumed = resolve(COMMAND, given, config_values(read_toml(saved), list(COMMAND.options), saved, "prune"))
    resumed.out = settings.resume
    return resumed


def prune_config(settings):
    """The PruneConfig these settings ask for (its defaults for whatever they leave out)."""
    from ..train import PruneConfig

    names = {f.name for f in fields(PruneConfig)}
    config = PruneConfig(**{o.name: getattr(settings, o.name) for o in TRAINING if o.name in names},
                         seed=settings.seed)
    config.validate()
    return config


def check_settings(settings) -> None:
    missing = [name for name in REQUIRED if getattr(settings, name) is None]
    if missing:
        raise EpverifyError("missing " + ", ".join(f"--{m}" for m in missing) + ": give them on the command line or"
                            " in the --config file (e.g. model = \"path/to/checkpoint\")")
    check_task_settings(settings)
    if settings.checkpoint_every < 0:
        raise EpverifyError(f"--checkpoint-every {settings.checkpoint_every}: give a number of steps, or 0 for none")
    if settings.task != "card" and settings.batch_size > settings.examples:
        raise EpverifyError(f"--batch-size {settings.batch_size} is larger than the {settings.examples} examples"
                            " (--examples): every step would see the same rows; lower --batch-size or ask for more"
                            " examples")
    if settings.min_examples is not None and settings.min_examples < 1:
        raise EpverifyError(f"--min-examples {settings.min_examples}: give a number of examples of at least 1")
    check_not_input(settings.out, settings.model)


def run(settings) -> int:
    from ..io.progress import TrainingProgress
    from ..pipeline import check_run_dir, prune_on_task
    from ..scale.distributed import is_main_process, quiet_unless_main
    from ..train.loop import Interrupted

    quiet_unless_main()  # under `accelerate launch` with several processes, process 0 prints and writes
    resume = bool(settings.resume)
    if resume:
        settings = _resumed(settings)
    check_settings(settings)
    settings.model = _absolute(settings.model)  # run.toml then resumes from any directory
    settings.data = _absolute(settings.data)
    config = prune_config(settings)
    settings.warmup_steps = config.warmup_steps
    out = check_run_dir(settings.out, resume=resume, overwrite=settings.overwrite)
    resolved = {o.name: getattr(settings, o.name) for o in COMMAND.options
                if o.in_config and getattr(settings, o.name) is not None}
    print(("resuming " if resume else "") + "epverify prune with:")
    for key, value in resolved.items():
        print(f"  {key} = {toml_value(value)}")
    sys.stdout.flush()

    def ready():  # model, tokenizer and data checked: only now touch --out
        if not is_main_process():
            return
        write_toml(out / RUN_CONFIG, resolved, "epverify prune: the resolved configuration of this run (reuse"
                                               " with --config)")
        print(f"config saved in {out / RUN_CONFIG}", flush=True)

    progress = None if settings.quiet else TrainingProgress(config.steps)
    try:
        circuit = prune_on_task(settings.model, settings.task, config, out, n_examples=settings.examples,
                                task_options=task_options(settings), progress=progress,
                                checkpoint_every=settings.checkpoint_every, resume=resume, draw=not settings.no_draw,
                                on_ready=ready, min_examples=settings.min_examples, device=settings.device,
                                dtype=settings.dtype)
    except Interrupted as err:
        if progress is not None:
            progress.close()
        resume_hint = f"; continue with: epverify prune --resume {out}" if err.checkpoint else ""
        print(f"epverify: {err}{resume_hint}", file=sys.stderr, flush=True)
        return 130
    _report(circuit, out, settings)
    return 0


def _absolute(path):
    """A local path as an absolute one (resolved against the directory the command runs in)."""
    return None if path is None else str(Path(path).expanduser().resolve())


def _report(circuit, out: Path, settings) -> None:
    from ..io import checkpoint

    m = circuit.metrics
    print(f"circuit: {len(circuit.edges)} of {circuit.total_edges} edges (sparsity {circuit.sparsity:.4f}); "
          + ", ".join(f"{k} {v:.4f}" for k, v in m.items() if isinstance(v, float)))
    drawings = [] if settings.no_draw else ["circuit.png", "circuit.svg", "training.png"]
    print(f"wrote {', '.join(str(out / name) for name in ['circuit.json', 'metrics.json', *drawings])}"
          + (f" (checkpoint: {out / checkpoint.FILENAME})" if settings.checkpoint_every else ""))


COMMAND = Command(
    "prune", "find a circuit in a Hugging Face model on a task",
    "Run Edge Pruning on a local Hugging Face checkpoint for a task. Writes into --out: run.toml (the resolved"
    " config), checkpoint.pt (every --checkpoint-every steps), metrics.json, circuit.png/svg, training.png and,"
    " last, circuit.json.",
    (MODEL, *PLACEMENT, *TASK, *TRAINING, *RUN),
    run,
)
