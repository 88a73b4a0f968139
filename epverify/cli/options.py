"""What the commands take: each flag declared once, as an `Option`, in groups the commands share.

The parser (`epverify.cli.main`), the TOML config files (`--config`, `epverify.cli.config`) and docs/cli.md
(`reference_markdown`) are all made from these declarations. The training flags take their defaults from
`PruneConfig()`: one source of defaults for the command line and the Python API.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.engine import ABLATIONS
from ..train import PruneConfig
from ..train.config import SPARSITY_CONSTRAINTS


@dataclass(frozen=True)
class Option:
    """One flag (or positional argument) of a command."""

    name: str  # the setting's name: `target_sparsity` is the flag --target-sparsity and the TOML key
    help: str
    default: Any = None
    type: type = str
    choices: tuple | None = None
    switch: bool = False  # a flag without a value (true when given)
    positional: bool = False
    metavar: str | None = None
    in_config: bool = True  # may come from a --config file

    @property
    def flag(self) -> str:
        return self.name if self.positional else "--" + self.name.replace("_", "-")


DEFAULTS = PruneConfig()

CIRCUIT_FILE = Option("circuit", "circuit file: epverify's circuit.json or an EAP-IG Graph JSON", positional=True)

MODEL = Option("model", "local checkpoint directory (config, weights, tokenizer) written by save_pretrained")

PLACEMENT = (
    Option("device", "where the model runs: auto (the GPU when torch sees one), cpu, cuda or cuda:N", "auto",
           metavar="DEVICE"),
    Option("dtype", "the weights' dtype: auto (bfloat16 on a GPU for a checkpoint stored in 16 bits, else float32),"
                    " float32, bfloat16 or float16", "auto", choices=("auto", "float32", "bfloat16", "float16")),
)

TASK = (
    Option("task", "ioi, greater-than, gendered-pronouns (gp), boolean-expressions (boolean), jsonl, or card (a"
                   " trained model's own dataset)"),
    Option("data", "jsonl task: the file of {clean, corrupted, target, distractor} lines"),
    Option("prompt", "boolean-expressions prompt style", choices=("instruction", "few-shot")),
    Option("examples", "number of task examples to generate", 256, int),
    Option("seed", "seed of the examples (prune: also of the masks' noise and the batches)", DEFAULTS.seed, int),
)

TRAINING = (
    Option("target_sparsity", "fraction of edges to remove, in [0, 1.5] (above 1 keeps pushing past that)",
           DEFAULTS.target_sparsity, float),
    Option("steps", "training steps", DEFAULTS.steps, int),
    Option("warmup_steps", "steps over which the target ramps up from 0 (default: 5/6 of the steps)", type=int),
    Option("lr", "learning rate of the edge masks", DEFAULTS.lr, float),
    Option("lambda_lr", "learning rate of the Lagrange multipliers", DEFAULTS.lambda_lr, float),
    Option("batch_size", "examples per step", DEFAULTS.batch_size, int),
    Option("micro_batch_size", "run a step's examples this many at a time, adding up their gradients (same step,"
                               " less memory; 0: all at once)", DEFAULTS.micro_batch_size, int),
    Option("ablation", "what a removed edge carries: the corrupted input's value, zero, the mean, or a resample",
           DEFAULTS.ablation, choices=ABLATIONS),
    Option("max_edge_price", "ceiling on the sparsity term's pull on one edge, in nats per position (0: none)",
           DEFAULTS.max_edge_price, float),
    Option("log_alpha_bound", "keep every log-alpha within [-B, B], so that no gate saturates out of reach (0: none)",
           DEFAULTS.log_alpha_bound, float),
    Option("sparsity_constraint", "at_least: the target sparsity is a floor, and past it only the loss moves an edge;"
                                  " exact: the sparsity is held at the target from both sides (the paper's form)",
           DEFAULTS.sparsity_constraint, choices=SPARSITY_CONSTRAINTS),
    Option("redundancy_tolerance", "extraction drops kept edges the binary circuit does not need while its loss"
                                   " rises by at most this much in all, in nats per position (0: no pass)",
           DEFAULTS.redundancy_tolerance, float),
    Option("init_from", "warm start: the log-alphas start from eap's or eap-ig's scores on the training data (the"
                        " target's share of edges shut), not all open", DEFAULTS.init_from,
           choices=("", "eap", "eap-ig")),
    Option("node_masks", "also learn a mask per writer", switch=True),
    Option("checkpoint_layers", "recompute each layer in the backward (less memory, for large models)",
           switch=True),
)

RUN = (
    Option("min_examples", "prune even when only this many examples survive encoding (default: half of --examples)",
           type=int),
    Option("out", "output directory; required"),
    Option("checkpoint_every", "write OUT/checkpoint.pt every N steps (0: never)", 100, int),
    Option("resume", "continue the run in DIR from its last checkpoint, with the config it saved", metavar="DIR",
           in_config=False),
    Option("overwrite", "replace a finished or unfinished run in --out", switch=True, in_config=False),
    Option("no_draw", "skip the PNG/SVG drawings", switch=True),
    Option("quiet", "no progress display", switch=True),
)

CONFIG = Option("config", "read any of these flags from a TOML file (flags given here win)", metavar="FILE.toml",
                in_config=False)


def check_task_settings(settings) -> None:
    """The task exists, takes the options given, and --data goes with the jsonl task (one line each)."""
    from ..errors import EpverifyError
    from ..tasks import get_task

    if settings.task == "card":  # a trained model's own dataset (epverify.trained)
        from ..trained.card import is_trained_dir

        if settings.model is not None and not is_trained_dir(settings.model):
            raise EpverifyError(f"--task card reads the dataset of a trained model's card.json, and {settings.model}"
                                " has none: give a trained model (e.g. trained_models/count_llama) or a task")
        return
    if settings.task == "jsonl" and not settings.data:
        raise EpverifyError("the jsonl task reads its examples from a file: pass --data FILE.jsonl")
    if settings.data and settings.task not in ("jsonl", None):
        raise EpverifyError(f"--data is for the jsonl task; {settings.task!r} makes its own examples: drop --data, or"
                            " use --task jsonl --data FILE.jsonl")
    if settings.examples < 1:
        raise EpverifyError(f"--examples {settings.examples}: ask for at least 1 example")
    get_task(settings.task, **task_options(settings))  # unknown task or option: fail early


def task_options(settings) -> dict:
    """The task's own options from the settings: the jsonl file, the boolean prompt style."""
    options = {}
    if settings.data:
        options["path"] = settings.data
    if settings.prompt:
        options["prompt"] = settings.prompt
    return options
