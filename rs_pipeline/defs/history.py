"""What earlier rounds left behind, read from the Dagster event log and the asset store.

Dagster cannot draw an edge from a round to an earlier partition of the same loop, so these
look-ups happen at run time; the assets record what they resolved, so lineage never guesses.
"""

from __future__ import annotations

import dagster as dg

from rs_pipeline.defs.partitions import round_number
from rs_pipeline.storage import AssetStore


def earlier_materialized(instance: dg.DagsterInstance, asset: str, before: str) -> list[str]:
    """Round keys before ``before`` for which ``asset`` has a materialization, oldest first."""
    keys = instance.get_materialized_partitions(dg.AssetKey(asset))
    limit = round_number(before)
    return sorted((k for k in keys if round_number(k) < limit), key=round_number)


def champion_before(instance: dg.DagsterInstance, store: AssetStore, round_key: str) -> dict:
    """The latest promoted checkpoint before ``round_key``, else the base policy."""
    promoted = earlier_materialized(instance, "promotion", round_key)
    if promoted:
        rec = store.read_json("promotion", promoted[-1])
        return {**rec["checkpoint"], "source": "promotion", "source_round": promoted[-1]}
    return {**store.read_json("base_policy"), "source": "base_policy", "source_round": None}


def preference_before(instance: dg.DagsterInstance, store: AssetStore, round_key: str) -> dict:
    """The latest round's preference model before ``round_key``, else the seed one."""
    earlier = earlier_materialized(instance, "preference_model", round_key)
    if earlier:
        return {**store.read_json("preference_model", earlier[-1]), "source_round": earlier[-1]}
    return {**store.read_json("seed_preference_model"), "source_round": None}


def earlier_labels(instance: dg.DagsterInstance, store: AssetStore, round_key: str) -> list:
    """Every earlier round's labelled pairs (for replay), oldest first."""
    return [store.read_table("preference_labels", k)
            for k in earlier_materialized(instance, "preference_labels", round_key)]
