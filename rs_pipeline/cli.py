"""Command line: ``rs-pipeline demo | round | status | lineage | export | ui``.

Exit codes: 0 done; 1 a round failed (the reason is printed); 2 bad input or settings (nothing
was run); 3 another process is running rounds on this home, or a failed round (or one waiting
for people's labels) blocks new ones;
130 stopped with Ctrl-C (run the same command again to continue).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from rs_pipeline.errors import InputError

HOME_DEFAULT = "dagster_home"
KEEP_IN_HOME = {"dagster.yaml", ".rs_pipeline.lock"}


def _quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.filterwarnings("ignore")
    if "transformers" not in sys.modules:  # it reads the level at import (when a step needs it)
        os.environ["TRANSFORMERS_VERBOSITY"] = "error"
        return
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
    from rs_pipeline.context import CONFIG_FILE_NAME, require_settings

    target = home / CONFIG_FILE_NAME
    if args.config:
        cfg = load_config(args.config)
    else:
        overrides = {"selection": {"selector": args.selector}} if args.selector else {}
        if args.selector == "verifier":  # keep only verified answers (RAFT/ReST filtering)
            overrides["selection"]["threshold"] = 0.5
        cfg = demo_config(args.task, **overrides)
    require_settings(cfg, f"config file {args.config}" if args.config else "settings")
    if target.exists():
        current = config_from_dict(yaml.safe_load(target.read_text()) or {})
        if current != cfg:
            raise InputError(
                f"{home} holds a history made with other settings (task "
                f"{current.task.name!r}, selector {current.selection.selector!r}); run with "
                f"--fresh to wipe it, or --home DIR for a separate history"
            )
    target.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _locked(command):
    """Run a round command with the home's lock held (one process runs rounds on a home)."""

    def run(args) -> int:
        home = use_home(args.home)
        from rs_pipeline.home_lock import home_lock

        with home_lock(home, f"rs-pipeline {args.command}"):
            if getattr(args, "fresh", False):
                wipe_home(home)
            if args.command == "demo":
                write_demo_settings(home, args)
            _quiet_libraries()
            return command(args, home)
    return run


def cmd_demo(args) -> int:
    from rs_pipeline.cli_rounds import cmd_demo as demo

    return _locked(demo)(args)


def cmd_round(args) -> int:
    from rs_pipeline.cli_rounds import cmd_round as round_

    return _locked(round_)(args)


def cmd_status(args) -> int:
    from rs_pipeline.cli_rounds import cmd_status as status

    home = use_home(args.home)
    _quiet_libraries()
    return status(args, home)


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


def cmd_export(args) -> int:
    from rs_pipeline.context import load_context
    from rs_pipeline.export import export_round

    home = use_home(args.home)
    ctx = load_context(home)
    meta = export_round(ctx.store, args.round, args.what, args.format, args.out,
                        chat=ctx.policy_is_chat() if args.chat is None else args.chat)
    print(f"exported round {meta['round']} {meta['what']}: {meta['rows']} rows -> {args.out} "
          f"({meta['format']}, for trl.{meta['trl_trainer']})")
    return 0


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
    demo.add_argument("--task", default="rev8",
                      help="rev8 (default), addition, a plug-in task's registered name or an "
                           "import path package.module:TaskClass (see task.name)")
    demo.add_argument("--selector", choices=["preference", "verifier", "mix"], default=None)
    demo.add_argument("--config", help="YAML settings file (a real run) instead of a demo task")
    demo.add_argument("--home", default=HOME_DEFAULT, help="the Dagster home (default %(default)s)")
    demo.add_argument("--fresh", action="store_true", help="wipe the home's history first")
    rnd = sub.add_parser("round", help="run the next round from the champion (or finish an "
                                       "interrupted one)")
    rnd.add_argument("--home", default=HOME_DEFAULT)
    rnd.add_argument("--rerun", metavar="rXXXX", help="re-execute a failed round from its "
                                                      "failed step")
    st = sub.add_parser("status", help="every round's state, failing step and error")
    st.add_argument("--home", default=HOME_DEFAULT)
    lin = sub.add_parser("lineage", help="which model made this data / which data made this model")
    lin.add_argument("kind", choices=["policy", "data"])
    lin.add_argument("ref", help="policy: pol-… id, round key or rs-policy:VERSION; data: an asset")
    lin.add_argument("--round", help="data: the round partition")
    lin.add_argument("--prompt-id", help="data: one prompt's rows")
    lin.add_argument("--generation-id", help="data: one generation's row")
    lin.add_argument("--json", action="store_true", help="one JSON object")
    lin.add_argument("--home", default=HOME_DEFAULT)
    exp = sub.add_parser("export", help="a round's SFT set, DPO pairs or labelled preference "
                                        "pairs as files HF datasets / TRL read unchanged")
    exp.add_argument("--round", required=True, metavar="rXXXX")
    exp.add_argument("--what", required=True, choices=["sft", "dpo", "prefs"])
    exp.add_argument("--format", default="parquet", choices=["parquet", "jsonl"])
    exp.add_argument("--out", required=True, help="a new (or empty) folder")
    exp.add_argument("--chat", action=argparse.BooleanOptionalAction, default=None,
                     help="conversational rows: messages (sft) or message lists (dpo, prefs); "
                          "default: when the policy renders prompts with a chat template")
    exp.add_argument("--home", default=HOME_DEFAULT)
    ui = sub.add_parser("ui", help="the Dagster UI on 127.0.0.1 for a home")
    ui.add_argument("--home", default=HOME_DEFAULT)
    ui.add_argument("--port", type=int, default=3000)
    args = parser.parse_args(argv)
    from rs_pipeline.home_lock import HomeBusy

    commands = {"demo": cmd_demo, "round": cmd_round, "status": cmd_status, "ui": cmd_ui,
                "lineage": cmd_lineage, "export": cmd_export}
    try:
        return commands[args.command](args)
    except HomeBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped (Ctrl-C); run the same command again to continue where it stopped",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
