"""Rounds are dynamic partitions with sortable keys ``r0001``, ``r0002``, ...

The storage is the record of which rounds exist: a new home pointed at a bucket that another
home wrote adopts the rounds stored there (``adopt_stored_rounds``), so its next round continues
after them instead of starting again at ``r0001``.
"""

from __future__ import annotations

import dagster as dg

from rs_pipeline.ids import round_key, round_number
from rs_pipeline.storage import AssetStore

ROUNDS = dg.DynamicPartitionsDefinition(name="rounds")


def existing_rounds(instance: dg.DagsterInstance) -> list[str]:
    return sorted(instance.get_dynamic_partitions(ROUNDS.name), key=round_number)


def next_round_key(instance: dg.DagsterInstance) -> str:
    keys = existing_rounds(instance)
    return round_key(round_number(keys[-1]) + 1 if keys else 1)


def add_round(instance: dg.DagsterInstance, key: str | None = None) -> str:
    key = key or next_round_key(instance)
    round_number(key)
    if not instance.has_dynamic_partition(ROUNDS.name, key):
        instance.add_dynamic_partitions(ROUNDS.name, [key])
    return key


def adopt_stored_rounds(instance: dg.DagsterInstance, store: AssetStore) -> list[str]:
    """Add the rounds ``store`` holds (their ``round_prompts``) that ``instance`` lacks as
    partitions; returns the keys added."""
    known = set(instance.get_dynamic_partitions(ROUNDS.name))
    new = [k for k in store.partitions("round_prompts", "parquet") if k not in known]
    new = [k for k in new if _is_round_key(k)]
    if new:
        instance.add_dynamic_partitions(ROUNDS.name, new)
    return new


def _is_round_key(key: str) -> bool:
    try:
        round_number(key)
    except ValueError:
        return False
    return True
