"""Per-partition key/value stores behind changelog-backed tables: memory or RocksDB.

A store only holds bytes; what the bytes mean belongs to the stage that owns the table. The
changelog topic, not the store, is the source of truth: a store can always be rebuilt from it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

from schemas.errors import ScorestreamError

if TYPE_CHECKING:
    from rocksdict import Cache, Options

__all__ = [
    "ROCKSDB_CACHE_BYTES",
    "ROCKSDB_WRITE_BUFFER_BYTES",
    "MemoryStore",
    "RocksStore",
    "Store",
    "StoreClosed",
    "open_store",
]


class StoreClosed(ScorestreamError):
    """A read met a store that was closed meanwhile: its partition left this worker (or is
    being rebuilt). Readers outside the processing thread (the API) answer "retry"."""


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
        # A copy of exactly its length: orjson's output (every state snapshot) keeps its
        # larger working buffer, ~11 KB for a 2.4 KB state, for as long as the object lives.
        self._data[key] = bytes(memoryview(value))

    def delete(self, key: bytes) -> None:
        self._data.pop(key, None)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(list(self._data.items()))

    def __len__(self) -> int:
        return len(self._data)

    def close(self) -> None:
        self._data.clear()


ROCKSDB_WRITE_BUFFER_BYTES = 4 << 20
"""Memtable size per partition store (two at most): RocksDB's default of 64 MB would keep the
first ~100 MB of every partition in memory, so resident memory would follow the customers."""
ROCKSDB_CACHE_BYTES = 64 << 20
"""One block cache for every store of the process, index and filter blocks included (by
default those live outside the cache and grow with the data)."""

_block_cache: Cache | None = None


def _rocksdb_options() -> Options:
    """Options with bounded memory: small memtables and the process's one block cache."""
    global _block_cache
    from rocksdict import BlockBasedOptions, Cache, Options

    if _block_cache is None:
        _block_cache = Cache(ROCKSDB_CACHE_BYTES)
    table = BlockBasedOptions()
    table.set_block_cache(_block_cache)
    table.set_cache_index_and_filter_blocks(True)
    table.set_pin_l0_filter_and_index_blocks_in_cache(True)
    table.set_bloom_filter(10, False)
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_write_buffer_size(ROCKSDB_WRITE_BUFFER_BYTES)
    options.set_max_write_buffer_number(2)
    options.set_block_based_table_factory(table)
    return options


class RocksStore:
    """RocksDB (rocksdict) on local disk: memory stays bounded by its caches, not by customers.

    The directory is wiped on open because the changelog is replayed into it; keeping data
    across restarts would need the changelog offset checkpointed beside it.
    """

    def __init__(self, path: Path) -> None:
        from rocksdict import DbClosedError, Rdict

        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        self._db = Rdict(str(path), _rocksdb_options())
        self._count = 0
        self._closed_error = DbClosedError

    def get(self, key: bytes) -> bytes | None:
        try:
            value = self._db.get(key)
        except self._closed_error as err:
            raise StoreClosed(str(err)) from err
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
