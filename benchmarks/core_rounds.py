"""Rounds through the core step functions the assets call, without Dagster (its overhead is
``benchmarks/orchestration.py``'s subject): shared by the benchmarks that compare settings
round by round (``round_steps.py``, ``methods.py``).

``bootstrap(ctx)`` writes the unpartitioned assets (prompt pool, eval prompts, base policy, seed
preference model) into a home; ``Rounds(ctx)`` then runs rounds from it in graph order, the way
the asset graph feeds them (the champion and preference model of the previous round, earlier
rounds' labels for replay and kept sets for the best-ever pool), timing each step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

#: A smoke size for the benchmarks built on these rounds: the test settings' tiny model.
TINY = {"task": {"eval_size": 64, "gate_size": 64, "round_size": 96},
        "policy": {"pretrain_steps": 60, "pretrain_batch_size": 64, "n_layer": 2,
                   "n_embd": 64, "n_head": 2, "pretrain_lr": 3e-3},
        "generation": {"n": 4, "batch_prompts": 64},
        "preference": {"seed_pairs": 300, "pairs_per_round": 80, "replay_pairs": 40,
                       "batch_size": 32, "heldout_fraction": 0.25},
        "sft": {"batch_size": 32}, "dpo": {"batch_size": 32}, "gate": {"min_pair_acc": 0.0}}


def bootstrap(ctx) -> None:
    from rs_pipeline.steps import bootstrap as b
    from rs_pipeline.steps import judging

    store = ctx.store
    pool, held, _ = b.prompt_sets(ctx)
    store.write_table("prompt_pool", pool)
    store.write_table("eval_prompts", held)
    base, _ = b.base_policy(ctx, pool)
    store.write_record("base_policy", base)
    seed_table, _ = b.seed_preferences(ctx, pool)
    rm0, _ = judging.train_seed_preference(ctx, base, seed_table)
    store.write_record("seed_preference_model", rm0)


@dataclass
class Rounds:
    """Successive rounds on one home: ``run(key)`` runs round ``key`` and moves the champion
    (promoted candidates only) and the preference model on."""

    ctx: object
    champion: object = None
    preference: object = None
    seed_preference: object = None
    labels: list = field(default_factory=list)
    kept: list = field(default_factory=list)

    def __post_init__(self) -> None:
        store = self.ctx.store
        self.champion = self.champion or store.read_record("base_policy")
        self.seed_preference = store.read_record("seed_preference_model")
        self.preference = self.preference or self.seed_preference

    def run(self, key: str, on_step=None) -> dict:
        """Round ``key``'s steps; returns each step's output (``out``), metrics (``metrics``,
        merged) and seconds (``secs``). ``on_step(name)`` is called before each step (e.g. to
        reset counters) and its return value after it is kept in ``extra[name]``."""
        from rs_pipeline.steps import evaluation, judging, sampling, selection, training

        ctx, store = self.ctx, self.ctx.store
        pool, held = store.read_table("prompt_pool"), store.read_table("eval_prompts")
        out, secs, metrics, extra = {}, {}, {}, {}

        def step(name, fn):
            after = on_step(name) if on_step else None
            t = time.perf_counter()
            out[name], m = fn()
            secs[name] = time.perf_counter() - t
            metrics.update(m or {})
            if after:
                extra[name] = after()
            return out[name]

        champion, previous = self.champion, self.preference
        prompts = step("round_prompts", lambda: (sampling.round_prompts(ctx, pool, key), {}))
        gens = step("generations", lambda: sampling.generations(ctx, prompts, champion, key,
                                                                scorer=previous))
        labels = step("preference_labels", lambda: judging.label_pairs(ctx, gens, previous, key))
        rm = step("preference_model", lambda: judging.refresh_preference(
            ctx, labels, previous, self.labels, key))
        scores = step("scores", lambda: judging.score_generations(ctx, gens, rm))
        sft = step("sft_dataset", lambda: selection.sft_dataset(ctx, scores, key, self.kept, rm))
        pairs = step("dpo_pairs", lambda: selection.dpo_dataset(ctx, scores))
        cand = step("policy_checkpoint", lambda: training.train_candidate(
            ctx, sft, champion, key, pairs=pairs))
        ev = step("round_eval", lambda: evaluation.evaluate_round(
            ctx, cand, champion, rm, held, key, previous_reward_model=previous,
            seed_reward_model=self.seed_preference))
        self.labels.append(labels)
        self.kept.append(sft)
        self.preference = rm
        if ev.decision.promoted:
            self.champion = cand
        return {"out": out, "metrics": metrics, "secs": secs, "extra": extra,
                "promoted": ev.decision.promoted}
