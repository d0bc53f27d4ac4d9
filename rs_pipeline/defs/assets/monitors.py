"""The round's collapse and reward-hacking monitors; their checks sit on ``round_eval``."""

import dagster as dg
import pyarrow as pa

from rs_pipeline.defs.metadata import output
from rs_pipeline.defs.mlflow_resource import MlflowResource
from rs_pipeline.defs.partitions import ROUNDS
from rs_pipeline.defs.resources import PipelineResource
from rs_pipeline.defs.reuse import run_step
from rs_pipeline.imports import lazy_module
from rs_pipeline.monitors import MONITORS
from rs_pipeline.records import MonitorReport, PolicyCheckpoint, PreferenceCheckpoint

monitors = lazy_module("rs_pipeline.steps.monitors")

ROUND = "round"


def check_name(monitor: str) -> str:
    return f"monitor_{monitor}"


def monitor_check_specs(asset: str) -> list[dg.AssetCheckSpec]:
    """One check per monitor. Declared blocking; a failure blocks promotion only with severity
    ERROR, which it gets when ``monitors.blocking`` names it (else WARN)."""
    return [dg.AssetCheckSpec(check_name(name), asset=asset, blocking=True,
                              description=f"Monitor {name}: {bound} monitors.{setting}; blocks "
                                          "promotion only when monitors.blocking names it.")
            for name, (bound, setting) in MONITORS.items()]


def monitor_check_results(report: MonitorReport):
    for m in report.monitors:
        yield dg.AssetCheckResult(
            check_name=check_name(m.name), passed=m.passed, description=m.reason,
            severity=dg.AssetCheckSeverity.ERROR if m.blocking else dg.AssetCheckSeverity.WARN,
            metadata={"value": dg.MetadataValue.float(m.value if m.value is not None
                                                      else float("nan")),
                      "measured": m.value is not None, "threshold": m.threshold,
                      "bound": m.bound, "blocking": m.blocking})


@dg.asset(partitions_def=ROUNDS, group_name=ROUND, pool="model_work", deps=["base_policy"])
def round_monitors(context: dg.AssetExecutionContext, pipeline: PipelineResource,
                   mlflow: MlflowResource, generations: pa.Table, scores: pa.Table,
                   preference_labels: pa.Table, preference_model: PreferenceCheckpoint,
                   policy_checkpoint: PolicyCheckpoint) -> dg.Output[MonitorReport]:
    """Diversity of the samples, reward-vs-length and reward-vs-verifier, KL(candidate || base
    policy), and the preference model's calibration on held-out pairs (``monitors.*``)."""
    ctx, key = pipeline.ctx, context.partition_key
    base = ctx.store.read_record("base_policy")
    report, metrics, reused = run_step(
        context, pipeline, "round_monitors",
        {"generations": generations, "scores": scores, "labels": preference_labels,
         "reward_model": preference_model, "candidate": policy_checkpoint, "base": base},
        lambda r: monitors.round_monitors(ctx, generations, scores, preference_labels,
                                          preference_model, policy_checkpoint, base, key))
    if reused:  # the values still go to this run's MLflow round
        metrics = {f"monitor/{m.name}": m.value for m in report.monitors}
    return output(context, mlflow, report, metrics, reused=reused, kl_samples=report.kl_samples,
                  failed=", ".join(m.name for m in report.monitors if not m.passed) or "none")
