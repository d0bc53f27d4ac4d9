"""The checkpoint store: Hugging Face folders (safetensors + config + tokenizer), content-addressed.

What flows between steps is a small record (a dict), never a pickled model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from rs_pipeline.modeling import weights_id


class CheckpointStore:
    """Writes model folders under ``root/<kind>/<id>/`` atomically (temp folder, then rename)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, kind: str, model_id: str) -> Path:
        return self.root / kind / model_id

    def save(self, model, tokenizer, kind: str, prefix: str, **record: Any) -> dict[str, Any]:
        """Save ``model`` + ``tokenizer``; return its record (id, path and the lineage fields)."""
        model_id = weights_id(model, prefix)
        final = self.path(kind, model_id)
        if not (final / "config.json").exists():
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{model_id}-", dir=final.parent))
            try:
                model.save_pretrained(tmp, safe_serialization=True)
                tokenizer.save_pretrained(tmp)
                os.replace(tmp, final) if not final.exists() else shutil.rmtree(tmp)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        rec = {"id": model_id, "path": str(final), "kind": kind, **record}
        _write_json_atomic(final / "rs_record.json", rec)
        return rec

    def cached(self, kind: str, key: str) -> dict[str, Any] | None:
        """A record stored under a config key (so the same config does no new work), if valid."""
        ref = self.root / kind / "by_config" / f"{key}.json"
        if not ref.exists():
            return None
        rec = json.loads(ref.read_text())
        return rec if (Path(rec["path"]) / "config.json").exists() else None

    def remember(self, kind: str, key: str, record: dict[str, Any]) -> None:
        _write_json_atomic(self.root / kind / "by_config" / f"{key}.json", record)


def _write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, default=str)
    os.replace(tmp, path)
