"""The checkpoint store: Hugging Face folders (safetensors + config + tokenizer), content-addressed,
under the same storage base as the tables (a local path or any fsspec URI).

Layout: ``<base>/checkpoints/<kind>/<id>/``. Records hold that path *relative* to the base, so a
home copied elsewhere still resolves. Locally a folder is written to a temporary name and renamed
into place; on an object store its ``config.json`` is uploaded last, so a folder counts as
complete only once it is there. Remote folders are downloaded once into a local cache to load.
What flows between steps is a small record, never a pickled model.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import tempfile
from pathlib import Path
from typing import Any

from rs_pipeline.records import from_dict, to_dict
from rs_pipeline.storage import AssetStore

COMPLETE_MARKER = "config.json"


class CheckpointStore:
    def __init__(self, store: AssetStore, cache_dir: str | Path):
        self.store, self.fs, self.root = store, store.fs, store.root
        self.cache_dir = Path(cache_dir)

    @staticmethod
    def relpath(kind: str, model_id: str) -> str:
        return f"checkpoints/{kind}/{model_id}"

    def _full(self, rel: str) -> str:
        return posixpath.join(self.root, rel)

    def complete(self, rel: str) -> bool:
        return self.fs.exists(posixpath.join(self._full(rel), COMPLETE_MARKER))

    def save(self, model, tokenizer, kind: str, prefix: str) -> tuple[str, str]:
        """Save ``model`` + ``tokenizer`` once per content id; returns (id, relative path)."""
        from rs_pipeline.modeling import weights_id

        model_id = weights_id(model, prefix)
        rel = self.relpath(kind, model_id)
        if self.complete(rel):
            return model_id, rel
        if self.store.is_local:
            final = Path(self._full(rel))
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{model_id}-", dir=final.parent))
            try:
                _save_pretrained(model, tokenizer, tmp)
                if final.exists():  # an earlier, incomplete attempt
                    shutil.rmtree(final)
                os.replace(tmp, final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        else:
            with tempfile.TemporaryDirectory(prefix=f"rs-{model_id}-") as tmp:
                _save_pretrained(model, tokenizer, Path(tmp))
                full = self._full(rel)
                names = sorted(os.listdir(tmp), key=lambda n: n == COMPLETE_MARKER)
                for name in names:  # the marker goes last
                    self.fs.put(os.path.join(tmp, name), posixpath.join(full, name), recursive=True)
        return model_id, rel

    def local_dir(self, rel: str) -> Path:
        """A local folder holding the checkpoint at ``rel`` (downloaded once if remote)."""
        if self.store.is_local:
            return Path(self._full(rel))
        local = self.cache_dir / rel
        if not (local / COMPLETE_MARKER).exists():
            local.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=local.parent))
            try:
                self.fs.get(self._full(rel) + "/", str(tmp) + "/", recursive=True)
                if local.exists():
                    shutil.rmtree(local)
                os.replace(tmp, local)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return local

    def uri(self, rel: str) -> str:
        """Where the checkpoint lives, as a URI other tools (MLflow's registry) can open."""
        full = self._full(rel)
        return Path(full).as_uri() if self.store.is_local else self.fs.unstrip_protocol(full)

    # --- records of models built once per config key ------------------------------------------
    def _ref(self, kind: str, key: str) -> str:
        return posixpath.join(self.root, "checkpoints", kind, "by_config", f"{key}.json")

    def cached(self, kind: str, key: str, cls: type):
        """The record built earlier for config ``key`` (so the same config does no new work)."""
        ref = self._ref(kind, key)
        if not self.fs.exists(ref):
            return None
        with self.fs.open(ref, "rb") as fh:
            record = from_dict(cls, json.loads(fh.read()))
        return record if self.complete(record.path) else None

    def remember(self, kind: str, key: str, record: Any) -> None:
        data = json.dumps(to_dict(record), indent=2, sort_keys=True).encode()
        self.store.atomic_write(self._ref(kind, key), lambda fh: fh.write(data))


def _save_pretrained(model, tokenizer, folder: Path) -> None:
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
