"""A job message's delivery count and stream sequence, read from its JetStream reply subject."""

from __future__ import annotations

import pytest
from nats.aio.msg import Msg
from nats.errors import NotJSMessageError

from naq_nb.core.delivery import ack_numbers


def _msg(reply: str) -> Msg:
    return Msg(_client=None, subject="naq.jobs.default", reply=reply, data=b"")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "reply",
    [
        "$JS.ACK.NAQ_JOBS.naq_q_default.3.1207.1100.1733000000000000000.42",  # no domain
        "$JS.ACK.hub.ACCHASH.NAQ_JOBS.naq_q_default.3.1207.1100.1733000000000000000.42.rand",  # domain form
    ],
)
def test_the_reply_subject_gives_delivered_and_stream_sequence_as_nats_py_reads_them(reply):
    msg = _msg(reply)
    assert ack_numbers(msg) == (3, 1207)
    md = _msg(reply).metadata
    assert (md.num_delivered, md.sequence.stream) == (3, 1207)


def test_a_domain_named_underscore_is_the_same_form():
    assert ack_numbers(_msg("$JS.ACK._.ACC.S.C.1.9.9.1733000000000000000.0.r")) == (1, 9)


def test_a_message_that_is_not_from_jetstream_is_refused_as_nats_py_refuses_it():
    with pytest.raises(NotJSMessageError):
        ack_numbers(_msg(""))
    with pytest.raises(NotJSMessageError):
        ack_numbers(_msg("_INBOX.abc.def"))


def test_non_numeric_tokens_fall_back_to_nats_py_which_names_the_problem():
    with pytest.raises(ValueError):
        ack_numbers(_msg("$JS.ACK.S.C.x.y.1.1733000000000000000.0"))
