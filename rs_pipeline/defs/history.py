"""What earlier rounds left behind, found through the Dagster event log and the store, read from
the store.

Dagster cannot draw an edge from a round to an earlier partition of the same loop, so these
look-ups happen at run time; the assets record what they resolved, so lineage never guesses.
A round counts as having an output when this home's event log says so or the store holds it: a
new home pointed at shared storage (a bucket) continues from rounds another home ran.
"""

from __future__ import annotations

import dagster as dg

from rs_pipeline.ids import round_number
from rs_pipeline.records import RECORD_TYPES, ChampionChoice, PreferenceCheckpoint
from rs_pipeline.storage import AssetStore


def materialized_rounds(instance: dg.DagsterInstance, store: AssetStore, asset: str) -> set[str]:
    """Round keys for which ``asset`` has a materialization here or a stored output."""
    stored = store.partitions(asset, "json" if asset in RECORD_TYPES else "parquet")
    return {*instance.get_materialized_partitions(dg.AssetKey(asset)), *stored}


def earlier_materialized(instance: dg.DagsterInstance, store: AssetStore, asset: str,
                         before: str) -> list[str]:
    """Round keys before ``before`` for which ``asset`` has an output, oldest first."""
    limit = round_number(before)
    return sorted((k for k in materialized_rounds(instance, store, asset)
                   if round_number(k) < limit), key=round_number)


def champion_before(instance: dg.DagsterInstance, store: AssetStore, round_key: str) -> ChampionChoice:
    """The latest promoted checkpoint before ``round_key``, else the base policy."""
    promoted = earlier_materialized(instance, store, "promotion", round_key)
    if promoted:
        return ChampionChoice(store.read_record("promotion", promoted[-1]).checkpoint,
                              "promotion", promoted[-1])
    return ChampionChoice(store.read_record("base_policy"), "base_policy")


def preference_before(instance: dg.DagsterInstance, store: AssetStore,
                      round_key: str) -> PreferenceCheckpoint:
    """The latest round's preference model before ``round_key``, else the seed one."""
    earlier = earlier_materialized(instance, store, "preference_model", round_key)
    if earlier:
        return store.read_record("preference_model", earlier[-1])
    return store.read_record("seed_preference_model")


def earlier_labels(instance: dg.DagsterInstance, store: AssetStore, round_key: str) -> list:
    """Every earlier round's labelled pairs (for replay), oldest first."""
    return [store.read_table("preference_labels", k)
            for k in earlier_materialized(instance, store, "preference_labels", round_key)]


def earlier_sft(instance: dg.DagsterInstance, store: AssetStore, round_key: str) -> list:
    """Every earlier round's kept rows (the best-ever pool of ``selection.best_ever``), oldest
    first."""
    return [store.read_table("sft_dataset", k)
            for k in earlier_materialized(instance, store, "sft_dataset", round_key)]
