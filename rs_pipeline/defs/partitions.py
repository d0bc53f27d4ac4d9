"""Rounds are dynamic partitions with sortable keys ``r0001``, ``r0002``, ..."""

from __future__ import annotations

import dagster as dg

from rs_pipeline.ids import round_key, round_number

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
