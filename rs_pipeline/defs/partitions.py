"""Rounds are dynamic partitions with sortable keys ``r0001``, ``r0002``, ..."""

from __future__ import annotations

import re

import dagster as dg

ROUNDS = dg.DynamicPartitionsDefinition(name="rounds")
_KEY = re.compile(r"^r(\d{4,})$")


def round_key(number: int) -> str:
    return f"r{number:04d}"


def round_number(key: str) -> int:
    m = _KEY.match(key)
    if not m:
        raise ValueError(f"round key {key!r} is not of the form r0001")
    return int(m.group(1))


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
