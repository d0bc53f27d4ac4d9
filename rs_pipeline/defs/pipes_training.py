"""Training out of process: with ``scale.training_launcher: accelerate`` the candidate's
training runs as ``accelerate launch`` (one process per GPU, ``scale.training_processes``, or an
accelerate config file: DDP/FSDP, ``examples/accelerate/``) under Dagster Pipes.

The asset (``policy_checkpoint``) keeps its place in the graph, its provenance and its lock:
``launch_training`` starts the launcher through ``PipesSubprocessClient`` (logs and termination
forwarded, Ctrl-C included), and the launched processes run ``main`` below: they read the
round's inputs from the asset storage, train exactly as the in-process step would (same resume
key, so a crash resumes from the same trainer checkpoints), and the main process saves the
checkpoint and reports its record back as a Pipes message. On Kubernetes or Ray the same
asset would take Dagster's ``PipesK8sClient`` / a Ray Pipes client in place of the subprocess
client; the command and ``main`` stay as they are.

Run by hand (what the launcher runs): ``accelerate launch -m rs_pipeline.defs.pipes_training
r0003`` with ``DAGSTER_HOME`` set, outside Pipes it prints the record instead.
"""

from __future__ import annotations

import json
import os
import sys

from rs_pipeline.records import PolicyCheckpoint, from_dict, to_dict

#: Torch threads per launched process (the launching step's own; accelerate would set 1).
THREADS_ENV = "RS_PIPELINE_TORCH_THREADS"


def launch_command(scale, round_key: str) -> list[str]:
    """``accelerate launch`` of this module for ``round_key``."""
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    if scale.accelerate_config:
        command += ["--config_file", scale.accelerate_config]
    else:
        command += ["--num_processes", str(scale.training_processes), "--num_machines", "1",
                    "--mixed_precision", "no", "--dynamo_backend", "no"]
    return [*command, "-m", "rs_pipeline.defs.pipes_training", round_key]


def launch_training(context, pipeline) -> tuple[PolicyCheckpoint, dict]:
    """Run the round's training by ``accelerate launch`` under Dagster Pipes; returns the
    record and metrics the main training process reported."""
    import dagster as dg
    import torch

    ctx = pipeline.ctx
    # the step's thread count: the same reductions, so one process trains the same weights
    env = {"DAGSTER_HOME": str(ctx.home), THREADS_ENV: str(torch.get_num_threads())}
    if pipeline.config_file:
        env["RS_PIPELINE_CONFIG"] = str(pipeline.config_file)
    invocation = dg.PipesSubprocessClient().run(
        command=launch_command(ctx.settings.scale, context.partition_key), context=context,
        env={**os.environ, **env})
    reports = [m for m in invocation.get_custom_messages() if "record" in m]
    if not reports:
        raise RuntimeError("the accelerate launch ended without reporting a trained checkpoint")
    return from_dict(PolicyCheckpoint, reports[-1]["record"]), reports[-1]["metrics"]


def main(argv: list[str] | None = None) -> None:
    """One training process of an ``accelerate launch``: the round's training, the main
    process saving and reporting."""
    import torch
    from accelerate import PartialState

    from rs_pipeline.context import load_context
    from rs_pipeline.steps import training

    (round_key,) = argv if argv is not None else sys.argv[1:]
    if os.environ.get(THREADS_ENV):
        torch.set_num_threads(int(os.environ[THREADS_ENV]))
    state = PartialState()
    ctx = load_context()
    store = ctx.store
    sft = store.read_table("sft_dataset", round_key)
    pairs = store.read_table("dpo_pairs", round_key) if store.exists("dpo_pairs", round_key) \
        else None
    champion = store.read_record("sampling_policy", round_key).checkpoint
    resume = ctx.resume("policy_checkpoint", round_key,
                        training.training_inputs(ctx, sft, champion, pairs))
    record, metrics = training.train_candidate(ctx, sft, champion, round_key, resume, pairs,
                                               save=state.is_main_process)
    state.wait_for_everyone()
    if not state.is_main_process:
        return
    report = {"record": to_dict(record), "metrics": metrics,
              "processes": state.num_processes}
    from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, open_dagster_pipes

    if DAGSTER_PIPES_CONTEXT_ENV_VAR not in os.environ:  # run by hand
        print(json.dumps(report, default=str))
        return
    with open_dagster_pipes() as pipes:
        pipes.log.info(f"trained {record.id} in {state.num_processes} process(es)")
        pipes.report_custom_message(report)


if __name__ == "__main__":
    main()
