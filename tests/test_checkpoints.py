import fsspec
import pytest
import torch

from rs_pipeline.checkpoints import CheckpointStore
from rs_pipeline.modeling import load_policy, weights_id
from rs_pipeline.records import PolicyCheckpoint
from rs_pipeline.storage import AssetStore


@pytest.mark.parametrize("remote", [False, True])
def test_checkpoints_are_content_addressed_folders_under_the_storage_base(tiny_policy, tmp_path,
                                                                          remote):
    base = f"memory://ckpt-{tmp_path.name}" if remote else str(tmp_path / "storage")
    store = CheckpointStore(AssetStore(base), tmp_path / "cache")
    model, tok = load_policy(tiny_policy)
    model_id, rel = store.save(model, tok, "policies", "pol")
    assert model_id == weights_id(model, "pol") and rel == f"checkpoints/policies/{model_id}"
    assert store.complete(rel)
    again_id, again_rel = store.save(model, tok, "policies", "pol")  # same content: no new work
    assert (again_id, again_rel) == (model_id, rel)
    local = store.local_dir(rel)
    assert (local / "model.safetensors").exists()
    assert (local.is_relative_to(tmp_path / "cache")) == remote
    loaded, _ = load_policy(local)
    assert weights_id(loaded, "pol") == model_id
    assert store.uri(rel).startswith("memory://" if remote else "file://")
    leftovers = [p for p in (tmp_path).rglob(".tmp-*")]
    assert leftovers == []
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert store.save(model, tok, "policies", "pol")[0] != model_id


def test_a_config_key_remembers_its_record_only_while_the_folder_is_complete(tiny_policy,
                                                                            tmp_path):
    store = CheckpointStore(AssetStore(str(tmp_path / "s")), tmp_path / "cache")
    model, tok = load_policy(tiny_policy)
    model_id, rel = store.save(model, tok, "policies", "pol")
    record = PolicyCheckpoint(id=model_id, path=rel, source="demo")
    assert store.cached("policies", "k1", PolicyCheckpoint) is None
    store.remember("policies", "k1", record)
    assert store.cached("policies", "k1", PolicyCheckpoint) == record
    (tmp_path / "s" / rel / "config.json").unlink()
    assert store.cached("policies", "k1", PolicyCheckpoint) is None


def test_an_interrupted_save_leaves_no_folder_behind(tiny_policy, tmp_path, monkeypatch):
    store = CheckpointStore(AssetStore(str(tmp_path / "s")), tmp_path / "cache")
    model, tok = load_policy(tiny_policy)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tok, "save_pretrained", boom)
    with pytest.raises(OSError, match="disk full"):
        store.save(model, tok, "policies", "pol")
    folder = tmp_path / "s" / "checkpoints" / "policies"
    assert [p.name for p in folder.iterdir()] == []
    fs = fsspec.filesystem("file")
    assert not fs.exists(str(folder / weights_id(model, "pol")))
