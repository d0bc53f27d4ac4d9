"""Content hashes used as ids: same content, same id, on any machine."""

from __future__ import annotations

import hashlib
import json
import random
import re
import unicodedata
from pathlib import Path
from typing import Any

import pyarrow as pa


def _digest(data: bytes, length: int = 16) -> str:
    return hashlib.sha256(data).hexdigest()[:length]


def normalize_prompt(text: str) -> str:
    """Unicode NFC, trimmed, inner whitespace runs collapsed to one space."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip()


def prompt_id(text: str) -> str:
    """Stable id of a prompt: a hash of its normalized text."""
    return "p-" + _digest(normalize_prompt(text).encode("utf-8"), 12)


def config_hash(obj: Any) -> str:
    """Hash of a JSON-serialisable config (keys sorted)."""
    return _digest(json.dumps(obj, sort_keys=True, default=str).encode("utf-8"))


def table_version(table: pa.Table) -> str:
    """Content version of an Arrow table: a hash of its Arrow IPC serialisation."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks())
    return _digest(sink.getvalue().to_pybytes())


def file_version(path) -> str:
    """Content version of a file: a hash of its bytes."""
    with open(path, "rb") as f:
        return _digest(f.read(), 12)


def folder_version(path: str) -> str:
    """A cheap version of a model folder (file names, sizes, modification times): replacing the
    held-back reward model is new gate work."""
    folder = Path(path)
    entries = sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                     for p in folder.rglob("*") if p.is_file())
    return hashlib.sha256(repr(entries).encode()).hexdigest()[:16]


def derive_seed(*parts: object) -> int:
    """The one seed scheme: a 31-bit seed hashed from the run seed and what the draw is for
    (round, prompt id, sample index, ...). Same parts, same seed, on any machine."""
    data = "|".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(data).digest()[:4], "little") & 0x7FFFFFFF


def sample_seed(base_seed: int, round_key: str, pid: str, index: int) -> int:
    """Per-sample seed of a round's generation (run seed, round, prompt, sample index)."""
    return derive_seed(base_seed, round_key, pid, index)


def seeded_rng(*parts: object) -> random.Random:
    """A ``random.Random`` stream named by its parts (e.g. seed, round, "heldout")."""
    return random.Random("|".join(str(p) for p in parts))


_ROUND_KEY = re.compile(r"^r(\d{4,})$")


def round_key(number: int) -> str:
    """Round partition keys sort as text and as numbers: ``r0001``, ``r0002``, ..."""
    return f"r{number:04d}"


def round_number(key: str) -> int:
    m = _ROUND_KEY.match(key)
    if not m:
        raise ValueError(f"round key {key!r} is not of the form r0001")
    return int(m.group(1))
