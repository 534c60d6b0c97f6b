"""`BatchProcessor._caught_up` without a broker: when a partition counts as read to its end,
by the client's cached ends and, for the partitions asked about, by the broker's answer."""

from __future__ import annotations

from typing import cast

from confluent_kafka import TopicPartition

from streams.runtime.processor import BatchProcessor
from streams.runtime.stage import ProcessorConfig, StageHandler

WEB = ("web", 0)


class _Consumer:
    """Position and cached end of each partition, as a consumer reports them."""

    def __init__(self, position: int, cached_end: int) -> None:
        self.position_at, self.cached_end = position, cached_end

    def position(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.position_at) for tp in tps]

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float = 0,
                              cached: bool = False) -> tuple[int, int]:
        return 0, self.cached_end


def _processor(position: int, cached_end: int, broker: dict[tuple[str, int], int]
               ) -> tuple[BatchProcessor, list[list[tuple[str, int]]]]:
    config = ProcessorConfig(name="ingest", group_id="g", input_topics=("web",),
                             changelog_topic=None, client={})
    processor = BatchProcessor(config, cast(StageHandler, None))  # the handler is not asked
    processor._consumer = _Consumer(position, cached_end)  # type: ignore[assignment]
    processor.owned = {WEB}
    asked: list[list[tuple[str, int]]] = []

    def ends(partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        asked.append(partitions)
        return {tp: broker[tp] for tp in partitions if tp in broker}

    processor._broker_ends = ends  # type: ignore[method-assign]
    return processor, asked


def test_read_to_the_cached_end_is_caught_up_without_asking() -> None:
    processor, asked = _processor(position=10, cached_end=10, broker={WEB: 12})
    assert processor._caught_up() == {WEB} and asked == []


def test_the_broker_knowing_one_record_more_than_the_client_is_not_caught_up() -> None:
    """One new record is all it takes: the allowance for a transaction marker at the end
    applies to what the client has seen, not to what only the broker knows."""
    processor, asked = _processor(position=10, cached_end=10, broker={WEB: 11})
    assert processor._caught_up({WEB}) == set() and asked == [[WEB]]
    # and the end learnt is kept: the stale cache cannot make it caught up again
    assert processor._caught_up() == set()


def test_a_marker_at_the_end_the_client_has_seen_is_still_caught_up() -> None:
    processor, _asked = _processor(position=10, cached_end=11, broker={WEB: 11})
    assert processor._caught_up({WEB}) == {WEB}


def test_a_partition_the_broker_does_not_answer_for_waits_before_it_is_asked_again() -> None:
    processor, asked = _processor(position=10, cached_end=10, broker={})
    assert processor._caught_up({WEB}) == set()
    assert processor._caught_up({WEB}) == set() and processor._caught_up() == set()
    assert asked == [[WEB]]  # not asked again within END_RETRY_S
    processor._unanswered[WEB] = 0.0  # the retry time has passed
    assert processor._caught_up() == {WEB}
