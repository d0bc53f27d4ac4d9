"""Work is done once: outputs reused only when their provenance matches, shards resumed."""

import pyarrow as pa
import pytest

from rs_pipeline.config import config_from_dict
from rs_pipeline.records import PolicyCheckpoint
from rs_pipeline.resume import Resume, code_version, step_key
from rs_pipeline.schemas import make_table
from rs_pipeline.storage import AssetStore


def _prompts(keys):
    return make_table("round_prompts", {"round": ["r0001"] * len(keys), "prompt_id": keys,
                                        "prompt": [f"q{k}" for k in keys]})


def test_the_step_key_follows_code_settings_and_inputs_but_not_where_things_live():
    cfg = config_from_dict({})
    key = step_key(cfg, "generations", "r0001", {"prompts": _prompts(["a"]), "policy": "pol-1"})
    assert key == step_key(cfg, "generations", "r0001", {"policy": "pol-1",
                                                          "prompts": _prompts(["a"])})
    assert key != step_key(cfg, "generations", "r0001", {"prompts": _prompts(["b"]),
                                                          "policy": "pol-1"})
    assert key != step_key(config_from_dict({"generation": {"n": 4}}), "generations", "r0001",
                           {"prompts": _prompts(["a"]), "policy": "pol-1"})
    moved = config_from_dict({"storage": {"base_uri": "/elsewhere"}, "schedule": {"cron": "0 3 * * *"}})
    assert key == step_key(moved, "generations", "r0001", {"prompts": _prompts(["a"]),
                                                           "policy": "pol-1"})
    assert len(code_version()) == 16


def test_an_output_is_reused_only_if_it_is_the_one_its_provenance_names(tmp_path):
    store = AssetStore(str(tmp_path))
    r = Resume(store, tmp_path / "scratch", "round_prompts", "r0001", key="k1")
    assert r.reusable() is None
    table = _prompts(["a", "b"])
    r.record(table)
    assert r.reusable() is None  # provenance written, output not yet: a crash in between
    store.write_table("round_prompts", table, "r0001")
    assert r.reusable().equals(table)
    store.write_table("round_prompts", _prompts(["c"]), "r0001")  # someone else's output
    assert r.reusable() is None
    assert Resume(store, tmp_path, "round_prompts", "r0001", key="k2").reusable() is None
    ckpt = PolicyCheckpoint(id="pol-1", path="checkpoints/policies/pol-1")
    rec = Resume(store, tmp_path, "policy_checkpoint", "r0001", key="k3")
    rec.record(ckpt)
    store.write_record("policy_checkpoint", ckpt, "r0001")
    assert rec.reusable() == ckpt


def test_shards_on_disk_are_read_back_and_only_missing_ones_computed(tmp_path):
    store = AssetStore(str(tmp_path))
    r = Resume(store, tmp_path, "round_prompts", "r0001", key="k" * 20, shard_prompts=3)
    keys = [f"p{i}" for i in range(8)]
    calls = []

    def compute(start, stop):
        calls.append((start, stop))
        if start == 3 and len(calls) == 2:
            raise KeyboardInterrupt  # the process dies while computing the second shard
        return _prompts(keys[start:stop])

    with pytest.raises(KeyboardInterrupt):
        r.sharded(8, compute)
    assert calls == [(0, 3), (3, 6)]
    whole = r.sharded(8, compute)
    assert calls[2:] == [(3, 6), (6, 8)]  # the committed first shard was not recomputed
    assert whole.equals(_prompts(keys)) and isinstance(whole, pa.Table)
    r.clear_shards()
    assert not store.fs.exists(store.path("round_prompts", "r0001", "shards"))
    assert store.partitions("round_prompts", "parquet") == []
