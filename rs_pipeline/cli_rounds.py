"""``rs-pipeline demo | round | status``: running rounds from the command line.

All three follow one rule (``defs.rounds.next_action``, the nightly schedule's too): an
interrupted round is finished before another starts, a failed round blocks until it is re-run
with ``round --rerun``, a round waiting for people's labels blocks until they arrive (exit code
3), and only one process runs rounds on a home at a time (the home lock).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from rs_pipeline.errors import InputError

PLAN_FILE = "demo_plan.json"


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
                      r.gate_summary or f"{_fmt(r.gate)}/{_fmt(r.champion_gate)}",
                      "yes" if r.state == "promoted" else "no"])
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    for i, line in enumerate(lines):
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


class Session:
    """What a round command works with: the context (preflighted), the instance, the store;
    entered with the home lock held and dead runs repaired."""

    def __init__(self, home: Path):
        import dagster as dg

        from rs_pipeline.context import load_context
        from rs_pipeline.defs.recovery import recover
        from rs_pipeline.defs.resources import preflight_once

        self.ctx = load_context(home)
        self.last = None  # the status of the last round this session ran
        preflight_once(self.ctx)
        self.store = self.ctx.store
        self.instance = dg.DagsterInstance.get()
        from rs_pipeline.defs.mlflow_resource import MlflowResource
        from rs_pipeline.defs.resources import PipelineResource

        mlflow = MlflowResource(pipeline=PipelineResource())
        for line in recover(self.instance, self.ctx, mlflow=mlflow):
            print(f"recovered: {line}", flush=True)

    def stopped(self, result) -> None:
        """Raise ``KeyboardInterrupt`` if the run ended because of Ctrl-C (Dagster turns it into
        a failed step inside the run)."""
        from rs_pipeline.defs.rounds import was_interrupted

        if not result.success and was_interrupted(self.instance, result.run_id):
            raise KeyboardInterrupt

    def report(self, key: str, result, seconds: float) -> bool:
        """Print the round's line; False if it failed before its outcome (reason on stderr)."""
        from rs_pipeline.defs.rounds import round_status
        from rs_pipeline.history import round_row

        self.stopped(result)
        row = round_row(self.store, key)
        status = round_status(self.instance, self.store, key)
        self.last = status
        outcome = {"promoted": "promoted", "refused": f"refused ({row.reason})",
                   "waiting": f"paused: {status.reason}"}.get(
            status.state, f"{status.state} in {status.step or 'its run'}: {status.error}")
        print(f"round {key}: kept {_fmt(row.kept)}, pair acc {_fmt(row.pair_acc)}, eval greedy "
              f"{_fmt(row.greedy_acc)}, sampled {_fmt(row.sample_acc)}, gate {row.gate_summary or '-'} "
              f"-> {outcome} "
              f"[{seconds:.0f}s]", flush=True)
        if status.state == "waiting":
            print(f"{status.reason}: fill hp in requests.jsonl there and save it as "
                  "labels.jsonl; the labels_arrived sensor (or `rs-pipeline round`) resumes it",
                  file=sys.stderr)
        elif not status.finished:
            print(f"round {key} did not finish: {status.state} in {status.step or 'its run'}: "
                  f"{status.error}", file=sys.stderr)
        return status.finished

    def exit_code(self) -> int:
        """3 when the round waits for labels (not a failure), else 1 (it failed)."""
        return 3 if self.last is not None and self.last.state == "waiting" else 1

    def step(self, action) -> bool:
        """Carry out one ``next_action`` (resume or new); False if the round did not finish."""
        from rs_pipeline.defs.runner import continue_round, run_round

        t = time.perf_counter()
        if action.kind == "resume":
            print(f"resuming round {action.key} ({action.reason})", flush=True)
            result = continue_round(self.instance, action.key)
        else:
            _, result = run_round(self.instance, action.key)
        return self.report(action.key, result, time.perf_counter() - t)


def _target(session: Session, home: Path, rounds: int) -> int:
    """The round number this demo brings the home to; kept in the home until reached, so a
    re-run after a crash finishes the same demo instead of starting more rounds."""
    from rs_pipeline.defs.partitions import existing_rounds
    from rs_pipeline.defs.rounds import round_status
    from rs_pipeline.ids import round_number

    plan = home / PLAN_FILE
    if plan.exists():
        return int(json.loads(plan.read_text())["target"])
    keys = existing_rounds(session.instance)
    done = 0
    if keys:
        done = round_number(keys[-1]) - (0 if round_status(
            session.instance, session.store, keys[-1]).finished else 1)
    plan.write_text(json.dumps({"target": done + rounds}))
    return done + rounds


def cmd_demo(args, home: Path) -> int:
    from rs_pipeline.defs.partitions import existing_rounds
    from rs_pipeline.defs.rounds import next_action, round_status
    from rs_pipeline.defs.runner import failure_messages, run_bootstrap
    from rs_pipeline.history import round_row
    from rs_pipeline.ids import round_number

    t0 = time.perf_counter()
    session = Session(home)
    target = _target(session, home, args.rounds)
    print(f"rs-pipeline demo: home {home}, task {args.config or args.task}, up to round "
          f"r{target:04d}")
    print("bootstrap: prompt sets, base policy (pretrained once, then reused), seed preference "
          "model ...", flush=True)
    boot = run_bootstrap(session.instance)
    session.stopped(boot)
    if not boot.success:
        raise InputError("bootstrap failed:\n  " + "\n  ".join(
            failure_messages(session.instance, boot)))
    print(f"bootstrap done in {time.perf_counter() - t0:.0f}s", flush=True)
    while True:
        action = next_action(session.instance, session.store)
        if action.kind == "blocked":
            print(f"stopped: {action.reason}", file=sys.stderr)
            waiting = round_status(session.instance, session.store, action.key).state == "waiting"
            return 3 if waiting else 1
        if action.kind == "new" and round_number(action.key) > target:
            break
        if not session.step(action):
            return session.exit_code()
    (home / PLAN_FILE).unlink(missing_ok=True)
    print()
    print_table([round_row(session.store, k) for k in existing_rounds(session.instance)])
    print(f"\ntotal {time.perf_counter() - t0:.0f}s. Open the UI: rs-pipeline ui --home {home}")
    return 0


def cmd_round(args, home: Path) -> int:
    """The next round now (or an interrupted one finished, or a failed one re-run)."""
    from rs_pipeline.defs.rounds import latest_run, next_action, round_status
    from rs_pipeline.defs.runner import reexecute_round

    session = Session(home)
    if args.rerun:
        status = round_status(session.instance, session.store, args.rerun)
        run = latest_run(session.instance, args.rerun)
        if status.state not in ("failed", "interrupted") or run is None:
            raise InputError(f"round {args.rerun} is {status.state}: only a failed or "
                             "interrupted round can be re-run")
        print(f"re-running round {args.rerun} from {status.step or 'its first step'}", flush=True)
        t = time.perf_counter()
        result = reexecute_round(session.instance, run)
        return 0 if session.report(args.rerun, result, time.perf_counter() - t) else 1
    action = next_action(session.instance, session.store)
    if action.kind == "blocked":
        print(f"skipped: {action.reason}", file=sys.stderr)
        return 3
    return 0 if session.step(action) else session.exit_code()


def cmd_status(args, home: Path) -> int:
    """Every round's state (running, promoted, refused, interrupted, failed + step and error)."""
    import dagster as dg

    from rs_pipeline.context import load_context
    from rs_pipeline.defs.rounds import all_statuses
    from rs_pipeline.home_lock import busy

    store = load_context(home).store
    holder = busy(home)
    statuses = all_statuses(dg.DagsterInstance.get(), store)
    if not statuses:
        print(f"{home}: no rounds yet")
    for s in statuses:
        state = s.state
        if state == "running" and holder is None:
            state = "interrupted (its process is gone; the next demo/round resumes it)"
        detail = s.reason or (f"{s.step or 'run'}: {s.error}" if s.error else "")
        print(f"{s.round}  {state:<11}  {detail}")
    print(f"\n{holder}" if holder else f"\nno round is running on {home}")
    return 0
