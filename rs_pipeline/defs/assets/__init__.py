"""All assets, by stage.

The rule of this room: an asset loads its inputs, calls ONE function of ``rs_pipeline.steps``,
records what it returned (``metadata.output``: data version, preview, MLflow metrics) and returns
it. Decisions (splits, replay, selection, the gate) live in the core, where they are unit-tested.
"""

from rs_pipeline.defs.assets.bootstrap import (
    base_policy,
    prompt_sets,
    seed_preference_model,
    seed_preferences,
)
from rs_pipeline.defs.assets.evaluation import promotion, round_eval
from rs_pipeline.defs.assets.monitors import round_monitors
from rs_pipeline.defs.assets.preference import preference_labels, preference_model, scores_asset
from rs_pipeline.defs.assets.sampling import generations_asset, round_prompts, sampling_policy
from rs_pipeline.defs.assets.selection import dpo_pairs, sft_dataset
from rs_pipeline.defs.assets.training import policy_checkpoint

BOOTSTRAP_ASSETS = [prompt_sets, base_policy, seed_preferences, seed_preference_model]


def all_assets(shards: int = 1) -> list:
    """Every asset, with sampling and scoring fanned out over ``shards`` parts."""
    round_assets = [round_prompts, sampling_policy, generations_asset(shards), preference_labels,
                    preference_model, scores_asset(shards), sft_dataset, dpo_pairs,
                    policy_checkpoint, round_monitors, round_eval, promotion]
    return [*BOOTSTRAP_ASSETS, *round_assets]
