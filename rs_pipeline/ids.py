"""Content hashes used as ids: same content, same id, on any machine."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
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


def sample_seed(base_seed: int, round_key: str, pid: str, index: int) -> int:
    """Per-sample seed derived from the run seed, round, prompt and sample index (31 bits)."""
    data = f"{base_seed}|{round_key}|{pid}|{index}".encode()
    return int.from_bytes(hashlib.sha256(data).digest()[:4], "little") & 0x7FFFFFFF
