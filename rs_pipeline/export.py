"""Exporting a round's data for outside trainers: the SFT set, the DPO pairs and the labelled
preference pairs, in the column layouts Hugging Face ``datasets`` and TRL read unchanged.

- ``sft``: ``prompt``/``completion`` (TRL ``SFTTrainer``, prompt-completion), or with ``chat``
  one ``messages`` column: ``[{role: user, content}, {role: assistant, content}]``.
- ``dpo``: ``prompt``/``chosen``/``rejected`` (TRL ``DPOTrainer``).
- ``prefs``: the round's annotated pairs turned so ``chosen`` is the preferred side, with the
  soft label ``hp`` (probability ``chosen`` is preferred, >= 0.5) beside them (TRL
  ``RewardTrainer``). Ties (``hp`` 0.5) say nothing about which side is better and are left out
  (counted in the metadata). ``hp`` is not TRL's ``margin`` column, which is a reward offset.
  With ``chat``, prompt and answers become lists of messages (TRL's conversational form).

Every row keeps its lineage columns (round, prompt id, policy id, ...). The folder holds the
data file, ``metadata.json`` (round, policy ids, table versions, rows) and a ``README.md``. It
is written in a temporary folder beside ``out`` and moved into place: a failure leaves nothing.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rs_pipeline.chat import as_messages
from rs_pipeline.errors import InputError
from rs_pipeline.history import round_row, stored_rounds
from rs_pipeline.ids import table_version
from rs_pipeline.storage import AssetStore

#: What can be exported: (source table, TRL trainer that reads it).
KINDS = {"sft": ("sft_dataset", "SFTTrainer"), "dpo": ("dpo_pairs", "DPOTrainer"),
         "prefs": ("preference_labels", "RewardTrainer")}
FORMATS = ("parquet", "jsonl")


def export_round(store: AssetStore, round_key: str, what: str, fmt: str, out: str | Path,
                 chat: bool = False) -> dict:
    """Write round ``round_key``'s ``what`` (``sft``/``dpo``/``prefs``) as ``fmt`` (``parquet``/
    ``jsonl``) into the new folder ``out``; returns the metadata written beside it."""
    if what not in KINDS:
        raise InputError(f"export: unknown --what {what!r} (choose from {', '.join(KINDS)})")
    if fmt not in FORMATS:
        raise InputError(f"export: unknown --format {fmt!r} (choose from {', '.join(FORMATS)})")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"export: --out {out} already exists and is not an empty folder; "
                         "choose a new folder")
    source, trainer = KINDS[what]
    table = _source(store, round_key, source)
    rows, dropped = CONVERT[what](table, chat)
    if rows.num_rows == 0:
        raise InputError(f"export: round {round_key} has no {what} rows to export ({source} has "
                         f"{table.num_rows} rows" + (f", {dropped} of them ties" if dropped else "")
                         + ")")
    row = round_row(store, round_key)
    meta = {
        "round": round_key, "what": what, "format": fmt, "rows": rows.num_rows,
        "columns": rows.column_names, "chat": chat, "trl_trainer": trainer,
        "source_table": source, "source_version": table_version(table),
        "source_rows": table.num_rows, "dropped_ties": dropped,
        "generated_by_policy_ids": _distinct(table, "policy_id"),
        "reward_model_ids": _distinct(table, "reward_model_id"),
        "round_candidate_policy_id": row.policy_id, "round_state": row.state,
    }
    _write_folder(out, rows, fmt, f"{what}.{fmt}", meta)
    return meta


def _source(store: AssetStore, key: str, source: str) -> pa.Table:
    rounds = stored_rounds(store)
    if key not in rounds:
        raise InputError(f"export: unknown round {key!r} (rounds in {store.base_uri}: "
                         f"{', '.join(rounds) or 'none'})")
    if not store.exists(source, key):
        raise InputError(f"export: round {key} has no {source} table (the round stopped before "
                         f"writing it; `rs-pipeline status` says where)")
    return store.read_table(source, key)


def _distinct(table: pa.Table, column: str) -> list[str]:
    return sorted(set(table.column(column).to_pylist())) if column in table.column_names else []


def _messages(role: str, texts: list[str]) -> list[list[dict]]:
    if role == "user":  # a prompt may stand for a whole conversation (system turn, history)
        return [as_messages(t) for t in texts]
    return [[{"role": role, "content": t}] for t in texts]


def _sft(table: pa.Table, chat: bool) -> tuple[pa.Table, int]:
    keep = [c for c in table.column_names if c not in ("prompt", "completion")]
    if not chat:
        return table.select(["prompt", "completion", *keep]), 0
    messages = [m + a for m, a in zip(_messages("user", table.column("prompt").to_pylist()),
                                      _messages("assistant", table.column("completion").to_pylist()))]
    return pa.table({"messages": messages, **{c: table.column(c) for c in keep}}), 0


def _chat_pairs(table: pa.Table, chat: bool) -> pa.Table:
    if not chat:
        return table
    cols = {c: table.column(c) for c in table.column_names}
    cols["prompt"] = pa.array(_messages("user", cols["prompt"].to_pylist()))
    for side in ("chosen", "rejected"):
        cols[side] = pa.array(_messages("assistant", cols[side].to_pylist()))
    return pa.table(cols)


def _dpo(table: pa.Table, chat: bool) -> tuple[pa.Table, int]:
    keep = [c for c in table.column_names if c not in ("prompt", "chosen", "rejected")]
    return _chat_pairs(table.select(["prompt", "chosen", "rejected", *keep]), chat), 0


def _prefs(table: pa.Table, chat: bool) -> tuple[pa.Table, int]:
    hp = table.column("hp")
    decided = table.filter(pc.not_equal(hp, 0.5))
    a_wins = pc.greater(decided.column("hp"), 0.5)

    def pick(a: str, b: str):
        return pc.if_else(a_wins, decided.column(a), decided.column(b))

    rows = pa.table({
        "prompt": decided.column("prompt"),
        "chosen": pick("completion_a", "completion_b"),
        "rejected": pick("completion_b", "completion_a"),
        "hp": pc.if_else(a_wins, decided.column("hp"), pc.subtract(1.0, decided.column("hp"))),
        "round": decided.column("round"), "prompt_id": decided.column("prompt_id"),
        "generation_id_chosen": pick("generation_id_a", "generation_id_b"),
        "generation_id_rejected": pick("generation_id_b", "generation_id_a"),
        "annotator": decided.column("annotator"), "policy_id": decided.column("policy_id"),
        "split": decided.column("split"),
    })
    return _chat_pairs(rows, chat), table.num_rows - decided.num_rows


CONVERT = {"sft": _sft, "dpo": _dpo, "prefs": _prefs}


def _write_folder(out: Path, rows: pa.Table, fmt: str, name: str, meta: dict) -> None:
    """``out`` with the data file, metadata.json and README.md, or nothing at all."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-export-{uuid.uuid4().hex}"
    try:
        tmp.mkdir()
        if fmt == "parquet":
            pq.write_table(rows, tmp / name)
        else:
            with open(tmp / name, "w", encoding="utf-8") as fh:
                for record in rows.to_pylist():
                    fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        (tmp / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
        (tmp / "README.md").write_text(_readme(name, meta))
        if out.exists():
            out.rmdir()  # checked empty above
        tmp.rename(out)
    except OSError as exc:
        raise InputError(f"export: cannot write {out} ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _readme(name: str, meta: dict) -> str:
    loader = "parquet" if meta["format"] == "parquet" else "json"
    return (f"# Round {meta['round']}: {meta['what']} ({meta['rows']} rows)\n\n"
            f"From table `{meta['source_table']}` version `{meta['source_version']}`; sampled "
            f"from policy {', '.join(meta['generated_by_policy_ids']) or '-'}; the round's "
            f"candidate {meta['round_candidate_policy_id'] or '-'} ({meta['round_state']}).\n\n"
            "```python\nfrom datasets import load_dataset\n"
            f"ds = load_dataset({loader!r}, data_files={name!r}, split='train')  "
            f"# trl.{meta['trl_trainer']}(train_dataset=ds, ...)\n```\n\n"
            "Columns: " + ", ".join(f"`{c}`" for c in meta["columns"]) + ". Lineage in "
            "`metadata.json`.\n")
