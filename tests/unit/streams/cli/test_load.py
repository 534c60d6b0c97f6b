"""`scorestream load`: which lines are sent and how, why the others are rejected, the file
formats, the summary and the exit codes (`--dry-run` and hand-made tallies: no broker here;
tests/integration/test_load.py sends to a real one)."""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import orjson
import pytest
from confluent_kafka import KafkaError

from streams import cli
from streams.cli import load
from streams.cli.load import EXIT_INTERRUPTED, FIRST_SHOWN, Accepted, Rejected, Tally, check_line
from streams.settings import Settings
from tests.kit import DEV_SET, raw_ev

SOURCES = ("web", "email", "crm", "support")


def reason(line: bytes, sources: tuple[str, ...] = SOURCES) -> str:
    checked = check_line(line, sources)
    assert isinstance(checked, Rejected), checked
    return checked.reason


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str,
            settings: Settings | None = None) -> tuple[int, str, str]:
    """`scorestream load ARGV` in this process; (exit code, stdout, stderr)."""
    parser = argparse.ArgumentParser()
    load.add_arguments(parser)
    args = parser.parse_args([*argv, "--quiet"])
    args.settings = settings or Settings()
    capsys.readouterr()
    code = load.run(args)
    out, err = capsys.readouterr()
    return code, out, err


# -- one line ---------------------------------------------------------------------------------

def test_a_valid_line_is_sent_as_read_to_its_source() -> None:
    line = b'{"source":  "crm", "customer_id": "C1", "payload": {"amount": 10.50}}  \r\n'
    checked = check_line(line, SOURCES)
    # Only the line break goes: spacing, key order and 10.50 stay as they were written.
    assert checked == Accepted("crm", b"C1", line[:-2])
    event = raw_ev("e1", "page_view", customer_id="C2")
    assert check_line(event + b"\n", SOURCES) == Accepted("web", b"C2", event)
    assert check_line(event, SOURCES) == Accepted("web", b"C2", event)  # a last line, no break


@pytest.mark.parametrize(("fields", "key"), [
    ({"customer_id": "C1", "email": "a@b.example", "anonymous_id": "an1"}, b"C1"),
    ({"email": "a@b.example", "anonymous_id": "an1"}, b"a@b.example"),
    ({"anonymous_id": "an1"}, b"an1"),
    ({"customer_id": None, "email": "a@b.example"}, b"a@b.example"),
    ({"customer_id": "", "anonymous_id": "an1"}, b"an1"),
    ({"customer_id": 42, "anonymous_id": "an1"}, b"an1"),
    ({"customer_id": "Zoë"}, "Zoë".encode()),
])
def test_key_is_customer_id_else_email_else_anonymous_id(fields: dict[str, object],
                                                         key: bytes) -> None:
    checked = check_line(orjson.dumps({"source": "web", **fields}), SOURCES)
    assert isinstance(checked, Accepted) and checked.key == key


@pytest.mark.parametrize(("line", "expected"), [
    (b"{not json\n", "invalid_json"),
    (b'{"source": "web", "customer_id": "C1"\n', "invalid_json"),
    (b'{"source": "web", "customer_id": "\xff\xfe"}\n', "invalid_json"),
    (b'{"source": "web", "customer_id": "C1"} trailing\n', "invalid_json"),
    (b"[1, 2]\n", "not_an_object"),
    (b'"a string"\n', "not_an_object"),
    (b"null\n", "not_an_object"),
    (b"42\n", "not_an_object"),
    (b'{"customer_id": "C1"}\n', "missing_source"),
    (b'{"source": null, "customer_id": "C1"}\n', "missing_source"),
    (b'{"source": "pos", "customer_id": "C1"}\n', "unknown_source"),
    (b'{"source": "WEB", "customer_id": "C1"}\n', "unknown_source"),
    (b'{"source": ["web"], "customer_id": "C1"}\n', "unknown_source"),
    (b'{"source": "web"}\n', "no_key"),
    (b'{"source": "web", "customer_id": null, "email": "", "anonymous_id": 7}\n', "no_key"),
])
def test_rejection_reasons(line: bytes, expected: str) -> None:
    assert reason(line) == expected
    assert expected in load.REASONS


def test_rejections_say_what_was_wrong() -> None:
    unknown = check_line(b'{"source": "pos", "customer_id": "C1"}', SOURCES)
    assert unknown == Rejected("unknown_source",
                               'source "pos" is not one of web, email, crm, support')
    long_source = check_line(orjson.dumps({"source": "x" * 100, "email": "e"}), SOURCES)
    assert isinstance(long_source, Rejected) and len(long_source.detail) < 100
    broken = check_line(b"{not json", SOURCES)
    assert isinstance(broken, Rejected) and "line 1 column 2" in broken.detail
    array = check_line(b"[]", SOURCES)
    assert array == Rejected("not_an_object", "a JSON array")


def test_only_configured_sources_are_accepted() -> None:
    line = b'{"source": "email", "email": "a@b.example"}'
    assert isinstance(check_line(line, SOURCES), Accepted)
    assert reason(line, ("web", "crm")) == "unknown_source"


@pytest.mark.parametrize("line", [b"\n", b"\r\n", b"   \t \n", b""])
def test_blank_lines_are_no_events(line: bytes) -> None:
    assert check_line(line, SOURCES) is None


# -- the file ---------------------------------------------------------------------------------

LINES = [
    raw_ev("w1", "page_view", customer_id="C1"),           # 1 web
    b"{not json",                                          # 2 rejected
    raw_ev("o1", "order_placed", email="a@b.example"),     # 3 crm
    b"",                                                   # 4 blank
    b"[1, 2]",                                             # 5 rejected
    raw_ev("w2", "page_view", anonymous_id="an1"),         # 6 web
    b'{"source": "pos", "customer_id": "C1"}',             # 7 rejected
    raw_ev("w3", "page_view"),                             # 8 rejected: no key
]


def write(path: Path, lines: list[bytes], compress: bool = False) -> Path:
    data = b"".join(line + b"\n" for line in lines)
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path


@pytest.mark.parametrize(("name", "compress"), [
    ("history.jsonl", False), ("history.jsonl.gz", True), ("export-without-suffix", True)])
def test_history_reads_plain_and_gzip_by_suffix_or_magic(tmp_path: Path, name: str,
                                                         compress: bool) -> None:
    path = write(tmp_path / name, LINES, compress)
    assert load.is_gzip(path) is compress
    history = load.History(path)
    assert history.position == 0 and history.size == path.stat().st_size
    assert list(history) == [line + b"\n" for line in LINES]
    assert history.position == history.size
    history.close()
    assert history.position == history.size


def test_dry_run_counts_and_reports_every_line(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    plain = write(tmp_path / "h.jsonl", LINES)
    code, out, err = run_cli(capsys, str(plain), "--dry-run")
    assert code == 1, err
    lines = out.splitlines()
    assert lines[0].startswith(f"dry run, nothing sent: read 8 lines of {plain} in ")
    assert lines[1:4] == ["would send 3 records:",
                          "  web              2  -> topic web",
                          "  crm              1  -> topic crm"]
    assert lines[4] == "rejected, not sent: 4 lines"
    assert sorted(lines[5:9]) == sorted(
        f"  {r:<16}{1:>8,}  {load.REASONS[r]}"
        for r in ("invalid_json", "not_an_object", "unknown_source", "no_key"))
    assert lines[9:13] == [
        "  line 2: invalid_json: unexpected character, expected a string key: line 1 column 2 "
        "(char 1)",
        "  line 5: not_an_object: a JSON array",
        '  line 7: unknown_source: source "pos" is not one of web, email, crm, support',
        "  line 8: no_key: no customer_id, email, anonymous_id to key the record by",
    ]
    assert lines[13:] == ["blank lines, not events: 1 (line 4)"]
    gz = write(tmp_path / "h.jsonl.gz", LINES, compress=True)
    code_gz, out_gz, _ = run_cli(capsys, str(gz), "--dry-run")
    assert code_gz == 1
    assert out_gz.splitlines()[1:] == lines[1:]


def test_dry_run_of_clean_files_exits_0_with_the_configured_topics(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings.from_env({"SCORESTREAM_TOPIC_WEB": "shop.web",
                                  "SCORESTREAM_TOPIC_CRM": "shop.crm"})
    path = write(tmp_path / "ok.jsonl", [line for line in LINES if isinstance(
        check_line(line, SOURCES), Accepted)])
    code, out, _ = run_cli(capsys, str(path), "--dry-run", settings=settings)
    assert code == 0
    assert out.splitlines()[1:] == ["would send 3 records:",
                                    "  web              2  -> topic shop.web",
                                    "  crm              1  -> topic shop.crm",
                                    "rejected: none"]
    code, out, _ = run_cli(capsys, str(DEV_SET), "--dry-run")
    assert code == 0
    assert out.splitlines()[1:] == ["would send 6,919 records:",
                                    "  crm          6,919  -> topic crm",
                                    "rejected: none"]


def test_only_the_first_rejected_lines_are_listed_but_all_are_counted(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "bad.jsonl", [b"{"] * (FIRST_SHOWN + 5) + [b"[]"])
    code, out, _ = run_cli(capsys, str(path), "--dry-run")
    assert code == 1
    lines = out.splitlines()
    assert f"rejected, not sent: {FIRST_SHOWN + 6} lines" in lines
    assert f"  invalid_json    {FIRST_SHOWN + 5:>8}  {load.REASONS['invalid_json']}" in lines
    listed = [line for line in lines if line.startswith("  line ")]
    assert [line.split(":")[0] for line in listed] == [
        f"  line {n}" for n in range(1, FIRST_SHOWN + 1)]
    assert lines[-1] == f"  (the first {FIRST_SHOWN} of {FIRST_SHOWN + 6} shown)"


def test_blank_lines_are_counted_not_rejected(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "gaps.jsonl", [LINES[0], *[b""] * (FIRST_SHOWN + 5), b"  "])
    code, out, _ = run_cli(capsys, str(path), "--dry-run")
    assert code == 0
    numbers = ", ".join(str(n) for n in range(2, FIRST_SHOWN + 2))
    assert out.splitlines()[-1] == (
        f"blank lines, not events: {FIRST_SHOWN + 6} (lines {numbers}, ...)")


def test_a_truncated_gzip_file_is_reported_after_the_lines_it_had(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = [raw_ev(f"w{n}", "page_view", customer_id=f"C{n}", payload={"url": f"/{n:05}"})
              for n in range(2000)]
    whole = gzip.compress(b"".join(e + b"\n" for e in events), mtime=0)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(whole[: len(whole) // 2])
    code, out, _ = run_cli(capsys, str(path), "--dry-run")
    assert code == 1
    lines = out.splitlines()
    read = int(lines[0].split(" read ")[1].split(" lines")[0].replace(",", ""))
    assert 0 < read < 2000
    assert lines[1] == f"would send {read:,} records:"
    assert lines[-1].startswith(f"could not read the whole file: reading stopped after line "
                                f"{read:,}: ")


@pytest.mark.parametrize(("make", "argv", "message"), [
    (None, [], "no such file"),
    ("dir", [], "not a file"),
    ("fake-gz", [], "ends in .gz but is not gzip data"),
    ("ok", ["--rate", "0"], "--rate must be a positive number"),
    ("ok", ["--rate", "-5"], "--rate must be a positive number"),
])
def test_usage_errors_exit_2_before_anything_is_read(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], make: str | None, argv: list[str],
        message: str) -> None:
    path = tmp_path / "history.jsonl.gz"
    if make == "dir":
        path.mkdir()
    elif make == "fake-gz":
        write(path, LINES)
    elif make == "ok":
        write(path, LINES, compress=True)
    # Not a dry run: the broker is never asked (there is none at this address).
    settings = Settings.from_env({"SCORESTREAM_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    code, out, err = run_cli(capsys, str(path), *argv, settings=settings)
    assert (code, out) == (2, "")
    assert err.startswith("scorestream load: ") and message in err


def test_load_is_a_registered_command() -> None:
    assert cli.COMMANDS["load"][0] == "streams.cli.load"
    args = cli.build_parser().parse_args(["load", "h.jsonl.gz", "--rate", "250", "--dry-run"])
    assert (args.command, args.file, args.rate, args.dry_run) == (
        "load", Path("h.jsonl.gz"), 250.0, True)


# -- delivery reports, the summary and the exit code ----------------------------------------

TOPICS = {"web": "web-t", "email": "email-t", "crm": "crm-t", "support": "support-t"}


def summary(tally: Tally, bootstrap: str | None = "kafka:9092") -> list[str]:
    return load.summary(tally, Path("h.jsonl"), TOPICS, bootstrap)


def test_only_acknowledged_records_count_as_sent() -> None:
    tally = Tally(lines=5)
    tally.accepted.update({"web": 3, "support": 2})
    tally.delivered(1, "web", None, None)
    tally.delivered(2, "support", KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), None)
    tally.delivered(5, "web", KafkaError(KafkaError._PURGE_QUEUE), None)
    tally.delivered(3, "web", None, None)
    tally.delivered(4, "support", None, None)
    assert tally.sent == {"web": 2, "support": 1}
    assert sum(tally.failed.values()) == 2
    assert tally.exit_code() == 1
    lines = summary(tally)
    assert lines[1:4] == ["sent 3 records to Kafka at kafka:9092 (acknowledged):",
                          "  web              2  -> topic web-t",
                          "  support          1  -> topic support-t"]
    assert lines[4:6] == ["rejected: none", "not delivered: 2 records"]
    too_large = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE).str()
    purged = "not sent: still queued when waiting was cut short"
    assert sorted(lines[6:8]) == sorted([f"         1  {too_large}", f"         1  {purged}"])
    assert lines[8:] == [f"  line 2 (support): {too_large}", f"  line 5 (web): {purged}"]


def test_exit_codes() -> None:
    clean = Tally(lines=1)
    clean.accepted["web"] = 1
    clean.delivered(1, "web", None, None)
    assert clean.exit_code() == 0
    assert summary(clean)[-2:] == ["rejected: none", "not delivered: none"]
    blank = Tally(lines=2, blank=1, blank_lines=[2])
    assert blank.exit_code() == 0  # a blank line is no event: nothing was left unsent
    rejected = Tally(lines=1)
    rejected.reject(1, Rejected("no_key", "none"))
    assert rejected.exit_code() == 1
    unconfirmed = Tally(lines=1, unconfirmed=1)
    assert unconfirmed.exit_code() == 1
    assert summary(unconfirmed)[-1] == (
        "no delivery report for 1 record (waiting was cut short): they may or may not have "
        "reached Kafka")
    unreadable = Tally(lines=1, read_error="reading stopped after line 1: CRC check failed")
    assert unreadable.exit_code() == 1
    interrupted = Tally(lines=9, stopped_at=10)
    interrupted.reject(3, Rejected("no_key", "none"))
    assert interrupted.exit_code() == EXIT_INTERRUPTED
    assert summary(interrupted)[-1] == (
        "interrupted: line 10 and the lines after it were not sent")
