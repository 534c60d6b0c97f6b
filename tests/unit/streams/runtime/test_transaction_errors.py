"""Which transactional errors a batch processor aborts and redoes, which it restarts its
producer for, and which stop the stage."""

from __future__ import annotations

from confluent_kafka import KafkaError

from streams.runtime.processor import _abortable, _fenced


def test_a_failed_transaction_is_aborted_and_redone() -> None:
    assert _abortable(KafkaError(KafkaError._INCONSISTENT, txn_requires_abort=True))


def test_a_produce_into_a_failed_transaction_is_aborted_and_redone() -> None:
    # After a broker restart bumped the epoch, produce() raises a state error, not the cause.
    assert _abortable(KafkaError(KafkaError._STATE, "Unable to produce message"))


def test_a_fatal_error_or_another_error_stops_the_stage() -> None:
    assert not _abortable(KafkaError(KafkaError._STATE, fatal=True))
    assert not _abortable(KafkaError(KafkaError._MSG_TIMED_OUT))
    assert not _abortable(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))


def test_a_fenced_producer_is_recognised_by_its_codes() -> None:
    assert _fenced(KafkaError(KafkaError._FENCED, fatal=True))
    assert _fenced(KafkaError(KafkaError.PRODUCER_FENCED, fatal=True))
    assert not _fenced(KafkaError(KafkaError._STATE))
