import os

import pyarrow as pa
import pytest

from rs_pipeline.errors import InputError
from rs_pipeline.schemas import make_table
from rs_pipeline.storage import AssetStore


def _prompts(n=3):
    return make_table("round_prompts", {"round": ["r0001"] * n,
                                        "prompt_id": [f"p{i}" for i in range(n)],
                                        "prompt": [f"q{i}" for i in range(n)]})


def test_round_trip_partitioned_parquet_and_json(tmp_path):
    store = AssetStore(str(tmp_path))
    path = store.write_table("round_prompts", _prompts(), "r0001")
    assert path.endswith("round_prompts/r0001.parquet") and os.path.exists(path)
    assert store.read_table("round_prompts", "r0001").equals(_prompts())
    assert store.num_rows("round_prompts", "r0001") == 3
    store.write_json("policy_checkpoint", {"id": "pol-1"}, "r0001")
    assert store.read_json("policy_checkpoint", "r0001") == {"id": "pol-1"}
    assert store.partitions("round_prompts", "parquet") == ["r0001"]
    assert AssetStore(f"file://{tmp_path}").read_table("round_prompts", "r0001").num_rows == 3


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    store = AssetStore(str(tmp_path))
    bad = pa.table({"round": ["r1"], "prompt_id": ["p"]})  # no 'prompt' column
    with pytest.raises(InputError, match="lacks column"):
        store.write_table("round_prompts", bad, "r0001")
    store.write_table("round_prompts", _prompts(), "r0002")

    def boom(fh):
        fh.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        store.atomic_write(store.path("round_prompts", "r0003", "parquet"), boom)
    names = os.listdir(tmp_path / "round_prompts")
    assert names == ["r0002.parquet"]


def test_reading_a_file_with_a_wrong_column_names_file_column_and_row(tmp_path):
    import pyarrow.parquet as pq

    store = AssetStore(str(tmp_path))
    os.makedirs(tmp_path / "round_prompts")
    pq.write_table(pa.table({"round": ["r1", "r1"], "prompt_id": ["a", None],
                             "prompt": ["x", "y"]}), tmp_path / "round_prompts" / "r0001.parquet")
    with pytest.raises(InputError, match=r"r0001.parquet, row 1, column 'prompt_id'"):
        store.read_table("round_prompts", "r0001")
    pq.write_table(pa.table({"round": ["r1"], "prompt_id": ["a"], "prompt": [3.5]}),
                   tmp_path / "round_prompts" / "r0002.parquet")
    table = store.read_table("round_prompts", "r0002")  # a float casts to string cleanly
    assert table.column("prompt").to_pylist() == ["3.5"]


def test_an_object_store_gets_whole_files_written_once(tmp_path):
    store = AssetStore(f"memory://store-{tmp_path.name}")  # not local: no rename, one upload
    store.write_table("round_prompts", _prompts(), "r0001")
    assert store.read_table("round_prompts", "r0001").equals(_prompts())

    def boom(fh):
        fh.write(b"partial")
        raise RuntimeError("serializer failed")

    with pytest.raises(RuntimeError):
        store.atomic_write(store.path("round_prompts", "r0002", "parquet"), boom)
    assert store.fs.find(store.root) == [store.path("round_prompts", "r0001", "parquet")]
    assert store.partitions("round_prompts", "parquet") == ["r0001"]


def test_an_s3_uri_without_s3fs_is_one_clear_error(monkeypatch):
    import fsspec

    def missing(*a, **k):
        raise ImportError("Install s3fs to access S3")

    monkeypatch.setattr(fsspec.core, "url_to_fs", missing)
    with pytest.raises(InputError, match=r"storage.base_uri: s3://b/p .*rs_pipeline\[s3\]"):
        AssetStore("s3://b/p")
