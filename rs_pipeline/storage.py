"""Parquet and JSON files under one base location given as a path or URI (fsspec).

Layout: ``<base>/<asset>.parquet`` or ``<base>/<asset>/<partition>.parquet`` (``.json`` for
records). A failed step leaves no partial file behind: on a local disk a write goes to a
temporary name that is then renamed into place; an object store (``s3://``...) has no rename, so
there each file is written once, whole, as one PUT (or one multipart upload, which S3 shows only
when completed). Tables are checked against ``rs_pipeline.schemas`` both ways; records are the
typed dataclasses of ``rs_pipeline.records``.

``s3://`` needs ``s3fs`` (the ``s3`` extra); credentials and endpoint come from the standard
variables (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, a profile...)
or ``storage.endpoint_url``. Listings are not cached: another machine may write the bucket.
"""

from __future__ import annotations

import contextlib
import io
import json
import posixpath
import uuid
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from rs_pipeline.errors import InputError
from rs_pipeline.records import RECORD_TYPES, from_dict, to_dict
from rs_pipeline.schemas import check_table

TMP_PREFIX = ".tmp-"


OBJECT_STORES = ("s3", "s3a")


def open_filesystem(base_uri: str, endpoint_url: str | None = None):
    """(filesystem, root path) of ``base_uri``; a missing fsspec backend is one clear error."""
    protocol = fsspec.core.split_protocol(base_uri)[0]
    options: dict[str, Any] = {}
    if protocol in OBJECT_STORES:
        options["use_listings_cache"] = False
        if endpoint_url:
            options["endpoint_url"] = endpoint_url
    try:
        return fsspec.core.url_to_fs(base_uri, **options)
    except ImportError as exc:
        raise InputError(f"setting storage.base_uri: {base_uri} needs a filesystem package that "
                         f"is not installed ({exc}); for s3:// pip install 'rs_pipeline[s3]'"
                         ) from None


class AssetStore:
    def __init__(self, base_uri: str, endpoint_url: str | None = None):
        self.base_uri = str(base_uri)
        self.fs, self.root = open_filesystem(self.base_uri, endpoint_url)

    def path(self, asset: str, partition: str | None, ext: str) -> str:
        name = f"{partition}.{ext}" if partition else f"{asset}.{ext}"
        return posixpath.join(self.root, asset, name) if partition else posixpath.join(
            self.root, name)

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def uri(self, path: str) -> str:
        return path if self.is_local else self.fs.unstrip_protocol(path)

    def exists(self, asset: str, partition: str | None = None, ext: str = "parquet") -> bool:
        return self.fs.exists(self.path(asset, partition, ext))

    def atomic_write(self, path: str, write) -> None:
        """Write ``path`` whole or not at all: locally through a temporary file renamed into
        place, on an object store as one upload of the finished bytes (nothing is sent if
        ``write`` fails). An unwritable location is one clear error naming it."""
        if not self.is_local:
            buffer = io.BytesIO()
            write(buffer)
            try:
                self.fs.pipe_file(path, buffer.getvalue())
            except OSError as exc:
                raise InputError(f"storage {self.uri(path)} is not writable "
                                 f"({exc.strerror or exc})") from None
            return
        tmp = posixpath.join(posixpath.dirname(path), f"{TMP_PREFIX}{uuid.uuid4().hex}")
        try:
            self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
            with self.fs.open(tmp, "wb") as fh:
                write(fh)
            self.fs.mv(tmp, path)
        except OSError as exc:
            raise InputError(f"storage {self.uri(path)} is not writable ({exc.strerror or exc})"
                             ) from None
        finally:
            with contextlib.suppress(OSError):
                if self.fs.exists(tmp):
                    self.fs.rm(tmp)

    @contextlib.contextmanager
    def _reading(self, asset: str, partition: str | None, path: str):
        """Open ``path`` for reading; a missing or unreadable file is one clear error."""
        where = f"{asset}" + (f" of round {partition}" if partition else "")
        try:
            with self.fs.open(path, "rb") as fh:
                yield fh
        except FileNotFoundError:
            raise InputError(f"{self.uri(path)} is missing: {where} was deleted or never "
                             "written (re-materialize it)") from None
        except (pa.ArrowInvalid, OSError, ValueError) as exc:
            raise InputError(f"{self.uri(path)} cannot be read ({where}): {exc}") from None

    def remove_temporaries(self) -> int:
        """Delete files and folders left by interrupted writes (names starting ``.tmp-``).
        Only call while no write can be in flight (the home lock is held)."""
        if not self.fs.exists(self.root):
            return 0
        found = [p for p in self.fs.find(self.root, withdirs=True)
                 if posixpath.basename(p.rstrip("/")).startswith(TMP_PREFIX)]
        for path in sorted(found, key=len):  # parents first
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)
        return len(found)

    def write_table(self, asset: str, table: pa.Table, partition: str | None = None) -> str:
        return self.write_table_at(self.path(asset, partition, "parquet"), table, asset)

    def write_table_at(self, path: str, table: pa.Table, asset: str) -> str:
        """Write ``table`` (checked against ``asset``'s schema) to ``path`` atomically."""
        table = check_table(table, asset, path)
        self.atomic_write(path, lambda fh: pq.write_table(table, fh))
        return path

    def read_table(self, asset: str, partition: str | None = None) -> pa.Table:
        return self.read_table_at(self.path(asset, partition, "parquet"), asset, partition)

    def read_table_at(self, path: str, asset: str, partition: str | None = None) -> pa.Table:
        with self._reading(asset, partition, path) as fh:
            table = pq.read_table(fh)
        return check_table(table, asset, path)

    def num_rows(self, asset: str, partition: str | None = None) -> int:
        """Rows of a stored table, read from the Parquet footer only."""
        path = self.path(asset, partition, "parquet")
        with self._reading(asset, partition, path) as fh:
            return pq.ParquetFile(fh).metadata.num_rows

    def write_json(self, asset: str, record: dict[str, Any], partition: str | None = None) -> str:
        path = self.path(asset, partition, "json")
        data = json.dumps(record, indent=2, sort_keys=True, default=str).encode()
        self.atomic_write(path, lambda fh: fh.write(data))
        return path

    def read_json(self, asset: str, partition: str | None = None) -> dict[str, Any]:
        path = self.path(asset, partition, "json")
        with self._reading(asset, partition, path) as fh:
            return json.loads(fh.read())

    def write_record(self, asset: str, record: Any, partition: str | None = None) -> str:
        if not isinstance(record, RECORD_TYPES[asset]):
            raise TypeError(f"asset {asset!r} holds {RECORD_TYPES[asset].__name__} records, "
                            f"got {type(record).__name__}")
        return self.write_json(asset, to_dict(record), partition)

    def read_record(self, asset: str, partition: str | None = None):
        """The typed record stored for ``asset`` (and ``partition``)."""
        return from_dict(RECORD_TYPES[asset], self.read_json(asset, partition))

    def partitions(self, asset: str, ext: str) -> list[str]:
        """Partition keys stored for ``asset`` (sorted)."""
        folder = posixpath.join(self.root, asset)
        if not self.fs.exists(folder):
            return []
        names = [posixpath.basename(p) for p in self.fs.ls(folder, detail=False)]
        keys = (n[: -len(ext) - 1] for n in names if n.endswith("." + ext))
        return sorted(k for k in keys if k and not k.startswith(".") and "." not in k)
