"""murmur2 matches Kafka's Java implementation (vectors from Kafka's UtilsTest) and aiokafka."""

from __future__ import annotations

import random

from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from streams.runtime.partitioning import murmur2, partition_for


def test_java_vectors() -> None:
    vectors = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    for data, expected in vectors.items():
        assert murmur2(data) == expected, data


def test_same_partition_as_aiokafka_and_faust() -> None:
    rng = random.Random(3)
    for _ in range(2000):
        key = rng.randbytes(rng.randrange(0, 40))
        assert partition_for(key, 12) == (aiokafka_murmur2(key) & 0x7FFFFFFF) % 12
