"""What earlier rounds left behind, found through the Dagster event log, read from the store.

Dagster cannot draw an edge from a round to an earlier partition of the same loop, so these
look-ups happen at run time; the assets record what they resolved, so lineage never guesses.
"""

from __future__ import annotations

import dagster as dg

from rs_pipeline.ids import round_number
from rs_pipeline.records import ChampionChoice, PreferenceCheckpoint
from rs_pipeline.storage import AssetStore


def earlier_materialized(instance: dg.DagsterInstance, asset: str, before: str) -> list[str]:
    """Round keys before ``before`` for which ``asset`` has a materialization, oldest first."""
    keys = instance.get_materialized_partitions(dg.AssetKey(asset))
    limit = round_number(before)
    return sorted((k for k in keys if round_number(k) < limit), key=round_number)


def champion_before(instance: dg.DagsterInstance, store: AssetStore, round_key: str) -> ChampionChoice:
    """The latest promoted checkpoint before ``round_key``, else the base policy."""
    promoted = earlier_materialized(instance, "promotion", round_key)
    if promoted:
        return ChampionChoice(store.read_record("promotion", promoted[-1]).checkpoint,
                              "promotion", promoted[-1])
    return ChampionChoice(store.read_record("base_policy"), "base_policy")


def preference_before(instance: dg.DagsterInstance, store: AssetStore,
                      round_key: str) -> PreferenceCheckpoint:
    """The latest round's preference model before ``round_key``, else the seed one."""
    earlier = earlier_materialized(instance, "preference_model", round_key)
    if earlier:
        return store.read_record("preference_model", earlier[-1])
    return store.read_record("seed_preference_model")


def earlier_labels(instance: dg.DagsterInstance, store: AssetStore, round_key: str) -> list:
    """Every earlier round's labelled pairs (for replay), oldest first."""
    return [store.read_table("preference_labels", k)
            for k in earlier_materialized(instance, "preference_labels", round_key)]


def earlier_sft(instance: dg.DagsterInstance, store: AssetStore, round_key: str) -> list:
    """Every earlier round's kept rows (the best-ever pool of ``selection.best_ever``), oldest
    first."""
    return [store.read_table("sft_dataset", k)
            for k in earlier_materialized(instance, "sft_dataset", round_key)]
