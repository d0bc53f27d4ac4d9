"""Command line: ``rs-pipeline demo | round | lineage | ui``."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from rs_pipeline.errors import InputError

HOME_DEFAULT = "dagster_home"
KEEP_IN_HOME = {"dagster.yaml"}


def _quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def use_home(home: str) -> Path:
    """Point ``DAGSTER_HOME`` at ``home`` (created, with the committed dagster.yaml if absent)."""
    path = Path(home).resolve()
    path.mkdir(parents=True, exist_ok=True)
    if not (path / "dagster.yaml").exists():
        template = Path(__file__).resolve().parent.parent / HOME_DEFAULT / "dagster.yaml"
        if template.exists():
            shutil.copy(template, path / "dagster.yaml")
        else:
            (path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(path)
    return path


def wipe_home(path: Path) -> None:
    """Remove everything runs wrote under the home; keep its dagster.yaml."""
    for child in path.iterdir():
        if child.name in KEEP_IN_HOME:
            continue
        shutil.rmtree(child) if child.is_dir() else child.unlink()


def write_demo_settings(home: Path, args) -> None:
    from rs_pipeline.config import config_from_dict, demo_config, load_config
    from rs_pipeline.context import CONFIG_FILE_NAME

    target = home / CONFIG_FILE_NAME
    if args.config:
        cfg = load_config(args.config)
    else:
        overrides = {"selection": {"selector": args.selector}} if args.selector else {}
        if args.selector == "verifier":  # keep only verified answers (RAFT/ReST filtering)
            overrides["selection"]["threshold"] = 0.5
        cfg = demo_config(args.task, **overrides)
    if target.exists():
        current = config_from_dict(yaml.safe_load(target.read_text()) or {})
        if current != cfg:
            raise InputError(
                f"{home} holds a history made with other settings (task "
                f"{current.task.name!r}, selector {current.selection.selector!r}); run with "
                f"--fresh to wipe it, or --home DIR for a separate history"
            )
    target.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _fmt(v, spec=".3f") -> str:
    return "-" if v is None else format(v, spec) if isinstance(v, float) else str(v)


def print_table(rows) -> None:
    """The demo's table: one line per round (``history.RoundRow``)."""
    head = ["round", "policy_id", "kept", "pair_acc", "eval_greedy", "eval_sampled", "gate",
            "promoted"]
    lines = [head]
    for r in rows:
        lines.append([r.round, r.policy_id or "-", _fmt(r.kept), _fmt(r.pair_acc),
                      _fmt(r.greedy_acc), _fmt(r.sample_acc),
                      f"{_fmt(r.gate)}/{_fmt(r.champion_gate)}",
                      "yes" if r.state == "promoted" else "no"])
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    for i, line in enumerate(lines):
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def _outcome(row) -> str:
    return "promoted" if row.state == "promoted" else f"refused ({row.reason or 'failed'})"


def cmd_demo(args) -> int:
    home = use_home(args.home)
    if args.fresh:
        wipe_home(home)
    write_demo_settings(home, args)
    _quiet_libraries()
    import dagster as dg

    from rs_pipeline.context import load_context
    from rs_pipeline.defs.partitions import existing_rounds
    from rs_pipeline.defs.runner import failure_messages, run_bootstrap, run_round
    from rs_pipeline.history import round_row

    store = load_context(home).store
    instance = dg.DagsterInstance.get()
    t0 = time.perf_counter()
    print(f"rs-pipeline demo: home {home}, task {args.task if not args.config else args.config}")
    print("bootstrap: prompt sets, base policy (pretrained once, then reused), seed preference "
          "model ...", flush=True)
    boot = run_bootstrap(instance)
    if not boot.success:
        raise InputError("bootstrap failed:\n  " + "\n  ".join(failure_messages(boot)))
    print(f"bootstrap done in {time.perf_counter() - t0:.0f}s", flush=True)
    for _ in range(args.rounds):
        t = time.perf_counter()
        key, result = run_round(instance)
        row = round_row(store, key)
        print(f"round {key}: kept {_fmt(row.kept)}, pair acc {_fmt(row.pair_acc)}, "
              f"eval greedy {_fmt(row.greedy_acc)}, sampled {_fmt(row.sample_acc)} -> "
              f"{_outcome(row)} [{time.perf_counter() - t:.0f}s]", flush=True)
        if not result.success and not row.evaluated:
            print(f"round {key} failed before evaluation:\n  " +
                  "\n  ".join(failure_messages(result)), file=sys.stderr)
            return 1
    print()
    print_table([round_row(store, k) for k in existing_rounds(instance)])
    print(f"\ntotal {time.perf_counter() - t0:.0f}s. Open the UI: rs-pipeline ui --home {args.home}")
    return 0


def cmd_round(args) -> int:
    """The next round now, under the nightly schedule's rule (no overlap, no stacking)."""
    home = use_home(args.home)
    _quiet_libraries()
    import dagster as dg

    from rs_pipeline.context import load_context
    from rs_pipeline.defs.nightly import blocking_reason
    from rs_pipeline.defs.runner import failure_messages, run_round
    from rs_pipeline.history import round_row

    store = load_context(home).store
    instance = dg.DagsterInstance.get()
    reason = blocking_reason(instance, store)
    if reason:
        print(f"skipped: {reason}", file=sys.stderr)
        return 3
    key, result = run_round(instance)
    row = round_row(store, key)
    if not result.success and not row.evaluated:
        print(f"round {key} failed before evaluation:\n  " +
              "\n  ".join(failure_messages(result)), file=sys.stderr)
        return 1
    print(f"round {key}: {row.state} -- {row.reason}")
    return 0


def cmd_lineage(args) -> int:
    use_home(args.home)
    _quiet_libraries()
    import json

    import dagster as dg

    from rs_pipeline.defs.lineage import Lineage, render
    from rs_pipeline.defs.mlflow_resource import MlflowResource
    from rs_pipeline.defs.resources import PipelineResource

    pipeline = PipelineResource()
    lin = Lineage(dg.DagsterInstance.get(), pipeline.ctx.store, MlflowResource(pipeline=pipeline))
    if args.kind == "policy":
        answer = lin.policy_lineage(args.ref)
    else:
        if not args.round:
            raise InputError("lineage data needs --round (e.g. --round r0001)")
        answer = lin.data_lineage(args.ref, args.round, args.prompt_id, args.generation_id)
    print(json.dumps(answer, indent=2, default=str) if args.json else render(answer))
    return 0 if answer["consistent"] else 4


def cmd_ui(args) -> int:
    home = use_home(args.home)
    cmd = [sys.executable, "-m", "dagster", "dev", "-m", "rs_pipeline.defs", "-h", "127.0.0.1",
           "-p", str(args.port)]
    print(f"Dagster UI on http://127.0.0.1:{args.port} (DAGSTER_HOME={home})")

    def _reset_signals():
        os.setsid()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)

    proc = subprocess.Popen(cmd, preexec_fn=_reset_signals)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        os.killpg(proc.pid, signal.SIGTERM)
        return proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rs-pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="bootstrap + N rounds through Dagster, then a table")
    demo.add_argument("--rounds", type=int, default=3)
    demo.add_argument("--task", default="rev8", choices=["rev8", "addition"])
    demo.add_argument("--selector", choices=["preference", "verifier", "mix"], default=None)
    demo.add_argument("--config", help="YAML settings file (a real run) instead of a demo task")
    demo.add_argument("--home", default=HOME_DEFAULT, help="the Dagster home (default %(default)s)")
    demo.add_argument("--fresh", action="store_true", help="wipe the home's history first")
    rnd = sub.add_parser("round", help="run the next round from the champion")
    rnd.add_argument("--home", default=HOME_DEFAULT)
    lin = sub.add_parser("lineage", help="which model made this data / which data made this model")
    lin.add_argument("kind", choices=["policy", "data"])
    lin.add_argument("ref", help="policy: pol-… id, round key or rs-policy:VERSION; data: an asset")
    lin.add_argument("--round", help="data: the round partition")
    lin.add_argument("--prompt-id", help="data: one prompt's rows")
    lin.add_argument("--generation-id", help="data: one generation's row")
    lin.add_argument("--json", action="store_true", help="one JSON object")
    lin.add_argument("--home", default=HOME_DEFAULT)
    ui = sub.add_parser("ui", help="the Dagster UI on 127.0.0.1 for a home")
    ui.add_argument("--home", default=HOME_DEFAULT)
    ui.add_argument("--port", type=int, default=3000)
    args = parser.parse_args(argv)
    try:
        commands = {"demo": cmd_demo, "round": cmd_round, "ui": cmd_ui, "lineage": cmd_lineage}
        return commands[args.command](args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
