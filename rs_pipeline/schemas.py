"""Every tabular asset's Parquet schema, declared once; checked when written and when read.

Column names follow the ecosystem: ``prompt``/``completion`` (SFT) and ``prompt``/``chosen``/
``rejected`` (DPO), so exports load in HF ``datasets`` / TRL unchanged. Every row carries its
lineage: ``round``, ``prompt_id``, ``policy_id`` and, for scored rows, ``reward_model_id``.
``prompt`` is always the raw prompt (a conversation as its JSON, see ``chat.messages_prompt``);
``generations.rendered_prompt`` is the text the policy was given (its chat template applied, or
the prompt itself).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from rs_pipeline.errors import InputError

S, I32, I64, F64, B = pa.string(), pa.int32(), pa.int64(), pa.float64(), pa.bool_()


def _schema(*cols: tuple[str, pa.DataType], nullable: tuple[str, ...] = ()) -> pa.Schema:
    return pa.schema([pa.field(n, t, nullable=n in nullable) for n, t in cols])


# who labelled a pair, from which file version, when (a person's label); see annotators.base
_PROVENANCE = (("annotator_id", S), ("label_source", S), ("labelled_at", S))
_PROVENANCE_NULLABLE = ("label_source", "labelled_at")
_SAMPLING = (("temperature", F64), ("top_k", I32), ("top_p", F64), ("max_new_tokens", I32))

SCHEMAS: dict[str, pa.Schema] = {
    "prompt_pool": _schema(("prompt_id", S), ("prompt", S)),
    "eval_prompts": _schema(("prompt_id", S), ("prompt", S), ("split", S)),
    "seed_preferences": _schema(
        ("prompt_id", S), ("prompt", S), ("completion_a", S), ("completion_b", S), ("hp", F64),
        ("annotator", S), *_PROVENANCE, ("split", S),
        nullable=_PROVENANCE_NULLABLE,
    ),
    "round_prompts": _schema(("round", S), ("prompt_id", S), ("prompt", S)),
    "generations": _schema(
        ("generation_id", S), ("round", S), ("prompt_id", S), ("prompt", S),
        ("sample_index", I32), ("completion", S), ("num_tokens", I32), ("finished", B),
        ("seed", I64), ("policy_id", S), *_SAMPLING, ("rendered_prompt", S),
    ),
    "preference_labels": _schema(
        ("round", S), ("prompt_id", S), ("prompt", S), ("completion_a", S), ("completion_b", S),
        ("generation_id_a", S), ("generation_id_b", S), ("hp", F64), ("annotator", S),
        *_PROVENANCE, ("policy_id", S), ("split", S),
        nullable=_PROVENANCE_NULLABLE,
    ),
    # what a round asks people to label (annotators.human); they fill hp (and who, when)
    "label_requests": _schema(
        ("pair_id", S), ("round", S), ("prompt_id", S), ("prompt", S), ("completion_a", S),
        ("completion_b", S), ("generation_id_a", S), ("generation_id_b", S), ("policy_id", S),
        ("hp", F64), ("annotator_id", S), ("labelled_at", S),
        nullable=("hp", "annotator_id", "labelled_at"),
    ),
    "scores": _schema(
        ("generation_id", S), ("round", S), ("prompt_id", S), ("prompt", S),
        ("sample_index", I32), ("completion", S), ("policy_id", S), ("reward_model_id", S),
        ("reward", F64), ("reward_spread", F64), ("verifier_score", F64),
        ("selection_score", F64),
        nullable=("verifier_score",),
    ),
    "sft_dataset": _schema(
        ("round", S), ("prompt_id", S), ("prompt", S), ("completion", S), ("generation_id", S),
        ("selection_score", F64), ("reward", F64), ("verifier_score", F64), ("policy_id", S),
        ("reward_model_id", S),
        nullable=("verifier_score",),
    ),
    "dpo_pairs": _schema(
        ("round", S), ("prompt_id", S), ("prompt", S), ("chosen", S), ("rejected", S),
        ("score_chosen", F64), ("score_rejected", F64), ("margin", F64), ("policy_id", S),
        ("reward_model_id", S),
    ),
}


def schema_for(asset: str) -> pa.Schema:
    try:
        return SCHEMAS[asset]
    except KeyError:
        raise KeyError(f"no Parquet schema is declared for asset {asset!r}") from None


def make_table(asset: str, columns: dict[str, list[Any]]) -> pa.Table:
    """Build ``asset``'s table from column lists, in schema order, checked on the way."""
    schema = schema_for(asset)
    missing = [f.name for f in schema if f.name not in columns]
    if missing:
        raise ValueError(f"{asset}: columns {missing} were not produced")
    return check_table(pa.table({f.name: columns[f.name] for f in schema}), asset, "<memory>")


def check_table(table: pa.Table, asset: str, where: str) -> pa.Table:
    """``table`` cast to ``asset``'s schema; one clear error naming the file, column and row."""
    schema = schema_for(asset)
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise InputError(f"{where}: asset {asset!r} lacks column(s) {missing}")
    arrays = []
    for f in schema:
        col = table.column(f.name)
        try:
            col = col.cast(f.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise InputError(
                f"{where}: column {f.name!r} of {asset!r} is {col.type}, expected {f.type} ({exc})"
            ) from None
        if not f.nullable and col.null_count:
            row = next(i for i, v in enumerate(col.is_null().to_pylist()) if v)
            raise InputError(f"{where}, row {row}, column {f.name!r} of {asset!r}: missing value")
        arrays.append(col)
    return pa.Table.from_arrays(arrays, schema=schema)
