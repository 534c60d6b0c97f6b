"""Which transactional errors a batch processor aborts and redoes, which it replaces its
producer for, and which stop the stage."""

from __future__ import annotations

from confluent_kafka import KafkaError

from streams.runtime.processor import _abortable, _unusable


def test_a_failed_transaction_is_aborted_and_redone() -> None:
    assert _abortable(KafkaError(KafkaError._INCONSISTENT, txn_requires_abort=True))


def test_a_produce_into_a_failed_transaction_is_aborted_and_redone() -> None:
    # After a broker restart bumped the epoch, produce() raises a state error, not the cause.
    assert _abortable(KafkaError(KafkaError._STATE, "Unable to produce message"))


def test_other_errors_are_neither_aborted_nor_a_reason_for_a_new_producer() -> None:
    for code in (KafkaError._MSG_TIMED_OUT, KafkaError.TOPIC_AUTHORIZATION_FAILED):
        assert not _abortable(KafkaError(code))
        assert not _unusable(KafkaError(code))


def test_a_fenced_or_failed_producer_is_replaced() -> None:
    assert _unusable(KafkaError(KafkaError._FENCED, fatal=True))
    assert _unusable(KafkaError(KafkaError.PRODUCER_FENCED))
    assert _unusable(KafkaError(KafkaError.INVALID_TXN_STATE, fatal=True))  # broker restart
    assert _unusable(KafkaError(KafkaError._FATAL, "Unable to produce message"))
    assert not _abortable(KafkaError(KafkaError._STATE, fatal=True))
    assert not _unusable(KafkaError(KafkaError._STATE))
