"""The object store while the server goes away: an upload that meets a lost connection is a connection
error (the enqueue raises NaqConnectionError, the worker keeps the job), never a BlobError, which
says the data itself is bad and fails a job for good."""

from __future__ import annotations

import pytest

from naq_nb.core.errors import NaqConnectionError, SerializationError
from naq_nb.core.queue import Queue

MB = 1024 * 1024


async def test_an_enqueue_whose_upload_meets_a_dead_server_raises_a_connection_error(broker, own_nats_server):
    q = Queue(broker, "nobody")
    await q.enqueue(len, b"w" * (2 * MB))  # the object store is open: the next upload goes straight to it
    own_nats_server.kill()
    with pytest.raises(NaqConnectionError) as caught:
        await q.enqueue(len, b"z" * (3 * MB))
    # Not a SerializationError (nor a TypeError): `except NaqConnectionError` retry code catches it.
    assert not isinstance(caught.value, (SerializationError, TypeError)), repr(caught.value)
    assert "object store" in str(caught.value) and "3,145," in str(caught.value), "it names the upload"

