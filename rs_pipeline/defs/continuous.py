"""Continuous mode: the sensor ``continuous_rounds`` (off by default; ``continuous.enabled``)
chains rounds back to back. Once the home's latest round has ended (promoted or refused) it adds
the next round and runs it from the champion, with a preference model refreshed on that round's
own samples, as every round does; ``task.round_size`` and ``preference.pairs_per_round`` make
the rounds small.

It applies ``rounds.next_action``, the rule the CLI and the nightly schedule follow, and says
why on every tick it skips: a round still running (never two at once), a round waiting for
people's labels (``labels_arrived`` resumes it), a round that failed or was interrupted (the
chain stops until a person re-runs it), the budget (``continuous.max_rounds``,
``continuous.max_generated_tokens``) spent. It does not start the first round: that is
``rs-pipeline round``, the UI or the nightly schedule. Each request's run key is its round, so
a round is launched once however often the sensor is evaluated.

A plain sensor over the run records, not a ``run_status_sensor``: a run's status does not say
whether its round ended (a refused round's run fails on its blocking gate check, a round that
waits for labels and a partial re-run both succeed), and reading the state on every tick also
sees rounds that ended while the sensor was off.
"""

from __future__ import annotations

import dagster as dg

from rs_pipeline.context import RunContext
from rs_pipeline.defs.jobs import round_job
from rs_pipeline.defs.launch import request_round, settings_at_load
from rs_pipeline.defs.partitions import existing_rounds
from rs_pipeline.defs.resources import PipelineResource
from rs_pipeline.defs.rounds import Action
from rs_pipeline.history import generated_tokens
from rs_pipeline.ids import round_number

TRIGGER = "continuous"


def _stop(action: Action, why: str) -> Action:
    return Action("blocked", action.key, f"continuous mode stopped: {why}", action.state)


def decide(instance: dg.DagsterInstance, ctx: RunContext, action: Action) -> Action:
    """``next_action`` as continuous mode takes it: chain only after a round that ended, leave
    interrupted and labelled rounds to a person and ``labels_arrived``, stop at the budget."""
    budget = ctx.settings.continuous
    if action.state == "failed":
        return _stop(action, action.reason)
    if action.state == "interrupted":
        return _stop(action, f"{action.reason}; `rs-pipeline round` (or the nightly schedule) "
                             "resumes it, then the chain goes on")
    if action.state == "labelled":
        return Action("blocked", action.key, f"labels for round {action.key} arrived: the "
                                             "labels_arrived sensor resumes it", action.state)
    if action.kind == "blocked":  # running, or waiting for labels
        return action
    if action.kind == "new" and not existing_rounds(instance):
        return Action("blocked", action.key, "no round yet: continuous mode chains rounds after "
                      "the first one (`rs-pipeline round`, the UI or the nightly schedule)")
    if budget.max_rounds and round_number(action.key) > budget.max_rounds:
        return _stop(action, f"round budget spent: the home holds {budget.max_rounds} rounds "
                             f"(continuous.max_rounds: {budget.max_rounds})")
    if budget.max_generated_tokens:
        spent = sum(generated_tokens(ctx.store, k) for k in existing_rounds(instance))
        if spent >= budget.max_generated_tokens:
            return _stop(action, f"token budget spent: the rounds generated {spent:,} tokens "
                                 f"(continuous.max_generated_tokens: "
                                 f"{budget.max_generated_tokens:,})")
    return action


def tick(instance: dg.DagsterInstance, ctx: RunContext) -> dg.RunRequest | dg.SkipReason:
    """The continuous decision (it repairs nothing: the run it just launched may not hold the
    home's lock yet, and a tick that only skips never takes the lock)."""
    return request_round(instance, ctx, TRIGGER, lambda action: decide(instance, ctx, action),
                         recover_dead=False, run_key=True)


_SETTINGS = settings_at_load().continuous


@dg.sensor(job=round_job, name="continuous_rounds",
           minimum_interval_seconds=_SETTINGS.interval_seconds,
           default_status=(dg.DefaultSensorStatus.RUNNING if _SETTINGS.enabled
                           else dg.DefaultSensorStatus.STOPPED),
           description="Continuous mode: adds and runs the next round as soon as the latest "
                       "one ended (promoted or refused), until continuous.max_rounds or "
                       "continuous.max_generated_tokens.")
def continuous_rounds(context: dg.SensorEvaluationContext):
    return tick(context.instance, PipelineResource().ctx)
