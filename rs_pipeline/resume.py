"""Not redoing work: a step whose code, settings and input versions are unchanged returns its
stored output without model work; long steps commit their work in shards and training keeps
checkpoints, so a run re-executed after a crash continues where it stopped.

The *step key* hashes the package's source code, the settings that can change outputs and the
data versions of the step's inputs. A provenance file beside each output records the key and the
output's own version; the output is reused only when both match (a crash between writing the two
leaves a mismatch, so the step simply runs again).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import posixpath
import shutil
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa

from rs_pipeline.ids import config_hash, table_version
from rs_pipeline.records import RECORD_TYPES, to_dict
from rs_pipeline.storage import AssetStore

#: Settings sections that cannot change a step's output (where things live, when rounds run).
NON_OUTPUT_SETTINGS = ("storage", "schedule", "continuous", "recovery", "scale")


class lazy:  # noqa: N801 - used like a function: ``model = lazy(load)``, then ``model()``
    """``make()`` called once, on first use (a model loaded only if a shard needs it)."""

    def __init__(self, make: Callable[[], Any]):
        self._make, self._box = make, []

    def __call__(self) -> Any:
        if not self._box:
            self._box.append(self._make())
        return self._box[0]

    @property
    def started(self) -> bool:
        return bool(self._box)


@lru_cache(maxsize=1)
def code_version() -> str:
    """A hash of every source file of the package: any code change is a new version."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def output_version(value: Any) -> str:
    """The data version of a step's output: a table's content hash, a checkpoint's id, or the
    hash of a record."""
    if isinstance(value, pa.Table):
        return table_version(value)
    return getattr(value, "id", None) or config_hash(to_dict(value))


def input_version(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return config_hash([input_version(v) for v in value])
    return output_version(value)


def step_key(settings, asset: str, partition: str | None, inputs: dict[str, Any]) -> str:
    """Identity of one step's work: code version, output-relevant settings, input versions."""
    relevant = {k: v for k, v in dataclasses.asdict(settings).items()
                if k not in NON_OUTPUT_SETTINGS}
    return config_hash([asset, partition, code_version(), relevant,
                        {k: input_version(v) for k, v in sorted(inputs.items())}])


@dataclasses.dataclass
class Resume:
    """Where one step keeps what lets it skip or continue work: its provenance, its shards
    (``<asset>/<partition>.shards/<key>/``) and its trainer checkpoints (a local scratch folder)."""

    store: AssetStore
    scratch: Path
    asset: str
    partition: str | None
    key: str
    shard_prompts: int = 512
    checkpoint_steps: int = 100

    # --- whole outputs -------------------------------------------------------------------
    def _provenance_path(self) -> str:
        return self.store.path(self.asset, self.partition, "provenance.json")

    def reusable(self):
        """The stored output if it was made by exactly this work, else None."""
        path = self._provenance_path()
        if not self.store.fs.exists(path):
            return None
        with self.store.fs.open(path, "rb") as fh:
            prov = json.loads(fh.read())
        if prov.get("key") != self.key:
            return None
        is_record = self.asset in RECORD_TYPES
        if not self.store.exists(self.asset, self.partition, "json" if is_record else "parquet"):
            return None
        value = (self.store.read_record(self.asset, self.partition) if is_record
                 else self.store.read_table(self.asset, self.partition))
        return value if output_version(value) == prov.get("output_version") else None

    def record(self, value: Any) -> None:
        """Note that ``value`` is this work's output (written before the output itself)."""
        data = json.dumps({"key": self.key, "output_version": output_version(value)}).encode()
        self.store.atomic_write(self._provenance_path(), lambda fh: fh.write(data))

    # --- shards --------------------------------------------------------------------------
    def _shard_dir(self) -> str:
        base = self.store.path(self.asset, self.partition, "shards")
        return posixpath.join(base, self.key[:16])

    def sharded(self, count: int, compute: Callable[[int, int], pa.Table],
                tag: str = "", part: tuple[int, int] | None = None) -> pa.Table:
        """``compute(start, stop)`` over ``count`` items in shards of ``shard_prompts``; each
        shard is committed atomically and a shard already on disk is read, not recomputed.
        ``tag`` names one of several sharded passes of a step (file names start with it).

        With ``part=(i, k)`` only shards i, i + k, i + 2k, ... are done: one of k parallel
        steps of a fanned-out step, whose merge (a call without ``part``) then finds every shard
        on disk. The shards are the same whatever k is, so the merged rows are too."""
        tables = []
        folder = self._shard_dir()
        starts = range(0, count, self.shard_prompts)
        if part is not None:
            starts = starts[part[0]::part[1]]
        for start in starts:
            path = posixpath.join(folder, f"{tag}{start:09d}.parquet")
            if self.store.fs.exists(path):
                tables.append(self.store.read_table_at(path, self.asset))
                continue
            table = compute(start, min(start + self.shard_prompts, count))
            self.store.write_table_at(path, table, self.asset)
            tables.append(table)
        return pa.concat_tables(tables) if tables else compute(0, 0)

    def clear_shards(self) -> None:
        base = self.store.path(self.asset, self.partition, "shards")
        if self.store.fs.exists(base):
            self.store.fs.rm(base, recursive=True)

    # --- trainer checkpoints -------------------------------------------------------------
    @property
    def trainer_dir(self) -> Path:
        return self.scratch / f"{self.asset}-{self.partition or 'bootstrap'}-{self.key[:16]}"

    def checkpointing(self) -> dict[str, Any]:
        """Keyword arguments that make ``training.run_trainer`` keep resumable checkpoints."""
        return {"checkpoint_dir": self.trainer_dir, "checkpoint_steps": self.checkpoint_steps}

    def clear_trainer(self) -> None:
        shutil.rmtree(self.trainer_dir, ignore_errors=True)
