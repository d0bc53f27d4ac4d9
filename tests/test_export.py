"""``rs-pipeline export``: a round's SFT set, DPO pairs and labelled preference pairs load with
``datasets`` unchanged and train one step of TRL's SFT, DPO and reward trainers; bad requests are
one error, exit code 2, nothing written."""

import copy
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import load_dataset

from rs_pipeline.cli import main
from rs_pipeline.errors import InputError
from rs_pipeline.export import export_round
from rs_pipeline.ids import table_version
from rs_pipeline.modeling import build_char_tokenizer, build_tiny_gpt2
from rs_pipeline.storage import AssetStore
from tests.conftest import pointing_at


@pytest.fixture(scope="module")
def home(two_promoted_rounds):
    with pointing_at(two_promoted_rounds[0]) as home:
        yield home


def _export(home, tmp_path, what, fmt="parquet", chat=False, key="r0002"):
    out = tmp_path / f"{what}-{fmt}-{chat}"
    argv = ["export", "--round", key, "--what", what, "--format", fmt, "--out", str(out),
            "--home", str(home), *(["--chat"] if chat else [])]
    assert main(argv) == 0
    meta = json.loads((out / "metadata.json").read_text())
    loader = "parquet" if fmt == "parquet" else "json"
    ds = load_dataset(loader, data_files=str(out / f"{what}.{fmt}"), split="train")
    return ds, meta, out


def test_exports_hold_the_round_rows_and_their_lineage(home, tmp_path):
    store = AssetStore(str(home / "assets"))
    sft_table = store.read_table("sft_dataset", "r0002")
    sampled = store.read_record("sampling_policy", "r0002").checkpoint.id
    candidate = store.read_record("policy_checkpoint", "r0002").id
    for fmt in ("parquet", "jsonl"):
        ds, meta, out = _export(home, tmp_path, "sft", fmt)
        assert ds.column_names[:2] == ["prompt", "completion"] and "prompt_id" in ds.column_names
        assert ds["prompt"] == sft_table.column("prompt").to_pylist()
        assert ds["completion"] == sft_table.column("completion").to_pylist()
        assert meta["rows"] == sft_table.num_rows == len(ds)
        assert meta["source_version"] == table_version(sft_table)
        assert meta["generated_by_policy_ids"] == [sampled]
        assert meta["round_candidate_policy_id"] == candidate and meta["round_state"] == "promoted"
        assert sorted(p.name for p in out.iterdir()) == ["README.md", "metadata.json",
                                                         f"sft.{fmt}"]
    chat, _, _ = _export(home, tmp_path, "sft", "jsonl", chat=True)
    first = sft_table.slice(0, 1).to_pylist()[0]
    assert chat[0]["messages"] == [{"role": "user", "content": first["prompt"]},
                                   {"role": "assistant", "content": first["completion"]}]
    dpo, meta, _ = _export(home, tmp_path, "dpo")
    dpo_table = store.read_table("dpo_pairs", "r0002")
    assert dpo["chosen"] == dpo_table.column("chosen").to_pylist() and meta["rows"] == len(dpo) > 0
    labels = store.read_table("preference_labels", "r0002").to_pylist()
    prefs, meta, _ = _export(home, tmp_path, "prefs", "jsonl")
    decided = [r for r in labels if r["hp"] != 0.5]
    assert meta["dropped_ties"] == len(labels) - len(decided) and len(prefs) == len(decided) > 0
    for row, src in zip(prefs, decided):  # the preferred side is always `chosen`
        a_wins = src["hp"] > 0.5
        assert row["chosen"] == (src["completion_a"] if a_wins else src["completion_b"])
        assert row["rejected"] == (src["completion_b"] if a_wins else src["completion_a"])
        assert row["hp"] == pytest.approx(max(src["hp"], 1 - src["hp"])) and row["hp"] > 0.5
        assert row["generation_id_chosen"] == (src["generation_id_a"] if a_wins
                                               else src["generation_id_b"])
    chat_prefs, _, _ = _export(home, tmp_path, "prefs", "parquet", chat=True)
    assert chat_prefs[0]["chosen"] == [{"role": "assistant", "content": prefs[0]["chosen"]}]
    assert chat_prefs[0]["prompt"] == [{"role": "user", "content": prefs[0]["prompt"]}]


def _tiny(tmp_path, name):
    from transformers import GPT2ForSequenceClassification

    tok = build_char_tokenizer("012=")
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    model = build_tiny_gpt2(tok, n_layer=1, n_embd=16, n_head=2, n_positions=64, seed=0)
    if name == "reward":
        model = GPT2ForSequenceClassification(model.config.__class__(
            **{**model.config.to_dict(), "num_labels": 1}))
    return model, tok


def _args(cls, tmp_path, **extra):
    return cls(output_dir=str(tmp_path / "trainer"), max_steps=1, per_device_train_batch_size=4,
               report_to="none", use_cpu=True, save_strategy="no", logging_steps=1, **extra)


def _trained(trainer) -> float:
    result = trainer.train()
    assert result.global_step == 1
    return result.training_loss


@pytest.mark.parametrize("fmt, chat", [("parquet", False), ("jsonl", True)])
def test_trl_sft_trainer_takes_the_sft_export(home, tmp_path, fmt, chat):
    from trl import SFTConfig, SFTTrainer

    ds, _, _ = _export(home, tmp_path, "sft", fmt, chat)
    model, tok = _tiny(tmp_path, "policy")
    trainer = SFTTrainer(model=model, processing_class=tok, train_dataset=ds,
                         args=_args(SFTConfig, tmp_path, max_length=32))
    assert _trained(trainer) > 0


@pytest.mark.parametrize("fmt, chat", [("jsonl", False), ("parquet", True)])
def test_trl_dpo_trainer_takes_the_dpo_export(home, tmp_path, fmt, chat):
    from trl import DPOConfig, DPOTrainer

    ds, _, _ = _export(home, tmp_path, "dpo", fmt, chat)
    model, tok = _tiny(tmp_path, "policy")
    trainer = DPOTrainer(model=model, ref_model=copy.deepcopy(model), processing_class=tok,
                         train_dataset=ds,
                         args=_args(DPOConfig, tmp_path, max_length=32))
    assert _trained(trainer) > 0


def test_trl_reward_trainer_takes_the_prefs_export(home, tmp_path):
    from trl import RewardConfig, RewardTrainer

    ds, _, _ = _export(home, tmp_path, "prefs", "parquet")
    model, tok = _tiny(tmp_path, "reward")
    trainer = RewardTrainer(model=model, processing_class=tok, train_dataset=ds,
                            args=_args(RewardConfig, tmp_path, max_length=32))
    assert _trained(trainer) > 0


def test_bad_requests_are_one_error_and_write_nothing(home, tmp_path, capsys, monkeypatch):
    def run(*extra, out=tmp_path / "x"):
        code = main(["export", "--what", "sft", "--out", str(out), "--home", str(home), *extra])
        return code, capsys.readouterr().err

    code, err = run("--round", "r0009")
    assert code == 2 and "unknown round 'r0009'" in err and "r0001, r0002" in err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    code, err = run("--round", "r0001", out=busy)
    assert code == 2 and f"--out {busy} already exists and is not an empty folder" in err
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    # a round that stopped before selection: the table is named
    store = AssetStore(str(tmp_path / "store"))
    store.write_table("round_prompts", pa.table({"round": ["r0001"], "prompt_id": ["p-1"],
                                                 "prompt": ["0="]}), "r0001")
    with pytest.raises(InputError, match="round r0001 has no dpo_pairs table"):
        export_round(store, "r0001", "dpo", "parquet", tmp_path / "y")
    empty = AssetStore(str(home / "assets")).read_table("dpo_pairs", "r0001").slice(0, 0)
    store.write_table("dpo_pairs", empty, "r0001")  # a file `datasets` could not even load
    with pytest.raises(InputError, match="round r0001 has no dpo rows to export"):
        export_round(store, "r0001", "dpo", "parquet", tmp_path / "y")
    # a write that fails half-way leaves neither the folder nor a temporary one
    monkeypatch.setattr(pq, "write_table", lambda *a, **k: (_ for _ in ()).throw(
        OSError(28, "No space left on device")))
    code, err = run("--round", "r0001", out=tmp_path / "full")
    assert code == 2 and "cannot write" in err and "No space left on device" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "store"]
