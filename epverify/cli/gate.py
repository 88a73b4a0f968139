"""`epverify gate CONFIG.toml`: the CI gate (`epverify.testing.gate`) from the command line."""

from __future__ import annotations

import json

from ..io.outputs import check_not_input, write_new
from .command import Command
from .options import Option


def _count(items, noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def run(settings) -> int:
    from ..testing.gate import (
        RUN_COLUMNS,
        _fmt,
        _line,
        check_lines,
        judge,
        load_config,
        report_json,
        run_gate,
        run_line,
    )

    if settings.json:
        check_not_input(settings.json, settings.config)
    config = load_config(settings.config)
    total = len(config.programs) * len(config.ablations) * len(config.seeds)
    print(f"gate {config.name} ({settings.config}): {_count(config.programs, 'program')} x "
          f"{_count(config.ablations, 'ablation')} x {_count(config.seeds, 'seed')} = "
          f"{_count(range(total), 'run')}")
    print(_line(RUN_COLUMNS), flush=True)
    runs = run_gate(config, progress=lambda run: print(run_line(config, run), flush=True))
    results = judge(config, runs)
    print()
    for line in check_lines(results):
        print(line)
    failed = [r for r in results if not r.passed]
    if failed:
        print(f"gate {config.name} FAILED: {len(failed)} of {len(results)} checks fell short ("
              + ", ".join(f"{r.threshold.key} = {_fmt(r.limit)}" for r in failed) + ")")
    else:
        print(f"gate {config.name} PASSED: all {len(results)} checks")
    if settings.json:
        text = json.dumps(report_json(config, runs, results), indent=1) + "\n"
        write_new(settings.json, lambda tmp: tmp.write_text(text), inputs=[settings.config])
    return 1 if failed else 0


COMMAND = Command(
    "gate", "CI gate: recover Tracr programs and fail when recovery or faithfulness regresses",
    "Run the recoveries a TOML config lists and check them against its thresholds. Prints one row per run and"
    " PASS/FAIL per check; exits 0 when all pass, 1 when any falls short, 2 for a bad config.",
    (Option("config", "gate config (TOML), e.g. ci/tracr-quick.toml", positional=True, in_config=False),
     Option("json", "also write the report as JSON", metavar="PATH")),
    run, takes_config=False,
)
