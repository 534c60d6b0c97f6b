"""Kafka's default key partitioner (murmur2), as the Java client, aiokafka and Faust use it.

Needed to find which partition of customer-events, and so which worker, holds a customer.
"""

from __future__ import annotations

__all__ = ["murmur2", "partition_for"]


def murmur2(data: bytes) -> int:
    """Kafka's 32-bit murmur2 hash of data (seed 0x9747b28c), as a signed 32-bit int."""
    length = len(data)
    m, r = 0x5BD1E995, 24
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    tail = length % 4
    base = length - tail
    if tail == 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h ^= data[base]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: bytes, partitions: int) -> int:
    """The partition the default partitioner picks for a non-null key.

    >>> partition_for(b"C42", 8) == partition_for(b"C42", 8)
    True
    """
    return (murmur2(key) & 0x7FFFFFFF) % partitions
