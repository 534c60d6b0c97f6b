"""Per-partition key/value stores behind changelog-backed tables: memory or RocksDB.

A store only holds bytes; what the bytes mean belongs to the stage that owns the table. The
changelog topic, not the store, is the source of truth: a store can always be rebuilt from it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, cast


class Store(Protocol):
    """The few operations a table needs from one partition's store."""

    def get(self, key: bytes) -> bytes | None: ...
    def put(self, key: bytes, value: bytes) -> None: ...
    def delete(self, key: bytes) -> None: ...
    def items(self) -> Iterator[tuple[bytes, bytes]]: ...
    def __len__(self) -> int: ...
    def close(self) -> None: ...


class MemoryStore:
    """A dict: fastest, and rebuilt from the changelog on every assignment."""

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self._data[key] = value

    def delete(self, key: bytes) -> None:
        self._data.pop(key, None)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(list(self._data.items()))

    def __len__(self) -> int:
        return len(self._data)

    def close(self) -> None:
        self._data.clear()


class RocksStore:
    """RocksDB (rocksdict) on local disk: memory stays bounded by its caches, not by customers.

    The directory is wiped on open because the changelog is replayed into it; keeping data
    across restarts would need the changelog offset checkpointed beside it.
    """

    def __init__(self, path: Path) -> None:
        from rocksdict import Options, Rdict

        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        self._db = Rdict(str(path), options)
        self._count = 0

    def get(self, key: bytes) -> bytes | None:
        value = self._db.get(key)
        return None if value is None else bytes(value)

    def put(self, key: bytes, value: bytes) -> None:
        if key not in self._db:
            self._count += 1
        self._db[key] = value

    def delete(self, key: bytes) -> None:
        if key in self._db:
            self._count -= 1
            del self._db[key]

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self._db.items():
            yield cast(bytes, key), cast(bytes, value)

    def __len__(self) -> int:
        return self._count

    def close(self) -> None:
        self._db.close()


def open_store(url: str, data_dir: Path, table: str, partition: int) -> Store:
    """A fresh store for one table partition: `memory://` or `rocksdb://`."""
    if url.startswith("rocksdb://"):
        return RocksStore(data_dir / "tables" / table / f"p{partition}")
    return MemoryStore()
