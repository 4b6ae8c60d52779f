"""Tests of gateway_stub.audit."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway_stub.audit import AuditLog, AuditRecord, format_audit


def _record(**changes: object) -> AuditRecord:
    fields = dict(
        time=1700000000.25, session_id="s-1", user="alice", source="192.0.2.10:51000",
        protocol="tcp", target="10.77.0.5:80", verdict="allow",
        reason="tcp 10.77.0.5:80 allowed by resource intranet-web",
        bytes_up=120, bytes_down=4096, duration=1.5,
    )
    fields.update(changes)
    return AuditRecord(**fields)


def test_format_is_one_line_of_sorted_json():
    """format_audit emits a single JSON line with sorted keys and all fields."""
    line = format_audit(_record())
    assert "\n" not in line
    data = json.loads(line)
    assert list(data) == sorted(data)
    assert data["time"] == "2023-11-14T22:13:20.250Z"
    assert data["user"] == "alice"
    assert data["target"] == "10.77.0.5:80"
    assert data["verdict"] == "allow"
    assert (data["bytes_up"], data["bytes_down"], data["duration"]) == (120, 4096, 1.5)


def test_control_characters_cannot_forge_lines():
    """A newline in a field is escaped, so one record stays one line."""
    line = format_audit(_record(user="mallory\n{\"verdict\":\"allow\"}"))
    assert "\n" not in line
    assert json.loads(line)["user"].startswith("mallory\n")


@given(text=st.text(), number=st.integers(0, 2**63), duration=st.floats(0, 1e7),
       when=st.floats(0, 4e9), verdict=st.sampled_from(["allow", "deny", "fail"]))
def test_hand_written_line_is_what_json_would_write(text, number, duration, when, verdict):
    """Every string field is escaped exactly as json.dumps would; numbers stay numbers."""
    record = _record(user=text, reason=text, session_id=text, source=text, target=text,
                     bytes_up=number, bytes_down=number, duration=duration, time=when,
                     verdict=verdict)
    line = format_audit(record)
    data = json.loads(line)
    assert line == json.dumps(data, sort_keys=True, separators=(",", ":"))
    assert {data[k] for k in ("user", "reason", "session_id", "source", "target")} == {text}
    assert data["bytes_up"] == data["bytes_down"] == number
    assert data["duration"] == round(duration, 3) and data["verdict"] == verdict
    assert data["time"].endswith("Z") and len(data["time"]) == 24


def test_unknown_verdict_is_refused():
    """Verdicts other than allow/deny/fail are a caller error."""
    with pytest.raises(ValueError):
        _record(verdict="maybe")


def test_no_secret_fields_exist():
    """Records have no place for passwords or tokens."""
    keys = json.loads(format_audit(_record())).keys()
    assert not {k for k in keys if "pass" in k or "token" in k}


def test_file_log_appends_and_flushes(tmp_path):
    """Each write is one line in the file, readable before close; reopening appends."""
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    log.write(_record(verdict="deny", reason="tcp 10.1.1.1:22 is in no resource"))
    assert len(path.read_text().splitlines()) == 1  # flushed already
    log.close()
    with AuditLog(path) as again:
        again.write(_record(verdict="fail", reason="connection refused"))
    lines = path.read_text().splitlines()
    assert [json.loads(x)["verdict"] for x in lines] == ["deny", "fail"]


def test_without_path_lines_go_to_the_audit_logger(caplog):
    """AuditLog(None) writes to the logger gateway_stub.audit."""
    with caplog.at_level(logging.INFO, logger="gateway_stub.audit"):
        AuditLog(None).write(_record())
    records = [r for r in caplog.records if r.name == "gateway_stub.audit"]
    assert len(records) == 1
    assert json.loads(records[0].getMessage())["session_id"] == "s-1"


def test_lines_of_one_loop_turn_are_flushed_at_its_end(tmp_path):
    """Inside an event loop, lines reach the file when the turn ends, all of them."""
    import asyncio

    path = tmp_path / "audit.log"

    async def main():
        log = AuditLog(path)
        for n in range(50):
            log.write(_record(bytes_up=n))
        assert path.read_text() == ""          # still in this turn
        await asyncio.sleep(0)
        lines = path.read_text().splitlines()
        assert [json.loads(line)["bytes_up"] for line in lines] == list(range(50))
        log.write(_record(bytes_up=99))
        log.close()                              # closing flushes what is pending
        assert json.loads(path.read_text().splitlines()[-1])["bytes_up"] == 99

    asyncio.run(main())
