"""The status model (core/status.py) and the heartbeat encoder: no server needed."""

from __future__ import annotations

import json

import pytest

from naq_nb.core.errors import SerializationError
from naq_nb.core.job import JobOptions
from naq_nb.core.queue import make_job
from naq_nb.core.registry import encode_heartbeat
from naq_nb.core.status import (
    FAILED_STATES, TERMINAL_VALUES, JobStatus, decode_status, encode_status, first_record, initial_status,
    with_status,
)


def test_encode_status_leaves_its_argument_alone() -> None:
    rec = first_record("j1", "default", JobStatus.QUEUED, func="m:f", name=None, enqueued_at=1.0, updated_at=0)
    before = dict(rec)
    out = decode_status(encode_status(rec))
    assert rec == before
    assert out["updated_at"] > 0 and out["status"] == "queued" and out["attempts"] == 0 and out["failures"] == 0


def test_with_status_copies_sets_and_drops() -> None:
    rec = {"id": "j1", "queue": "q", "status": "waiting", "waiting_on": "d1"}
    new = with_status(rec, JobStatus.QUEUED, drop=["waiting_on"], error=None)
    assert new == {"id": "j1", "queue": "q", "status": "queued", "error": None}
    assert rec["status"] == "waiting" and "waiting_on" in rec


def test_initial_status_and_sets() -> None:
    assert initial_status([]) is JobStatus.QUEUED
    assert initial_status(["a"]) is JobStatus.WAITING
    assert FAILED_STATES < TERMINAL_VALUES and "succeeded" in TERMINAL_VALUES - FAILED_STATES


def test_decode_status_names_a_malformed_record() -> None:
    with pytest.raises(SerializationError, match="malformed status record"):
        decode_status(b"{not json")


def test_heartbeat_has_its_own_encoder() -> None:
    rec = {"id": "w1", "heartbeat_at": 5.0}
    assert json.loads(encode_heartbeat(rec)) == {"id": "w1", "heartbeat_at": 5.0}  # no status-record fields
    assert rec == {"id": "w1", "heartbeat_at": 5.0}


def test_make_job_is_a_plain_function() -> None:
    job = make_job(print, (1,), {}, None, queue="dq")
    assert job.queue_name == "dq"
    assert make_job(print, (), {}, JobOptions(queue="other"), queue="dq").queue_name == "other"
    with pytest.raises(TypeError, match="callable"):
        make_job(3, queue="dq")  # type: ignore[arg-type]
