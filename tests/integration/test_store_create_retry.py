"""A stream whose store the server fails to make on disk: naq_nb tries again, then names the stream.

nats-server removes an account's empty ``streams`` folder in the background after its last stream
is deleted, and a create landing meanwhile fails with "error creating store for stream" (seen in
CI right after a test's wipe). Here a file stands in place of the server's JetStream folder, so
every create fails the same way until the test puts the folder back.
"""

from __future__ import annotations

import threading
from typing import Callable

import pytest

import jobs
from helpers import wait_until
from naq_nb import Queue
from naq_nb.client.client import Client
from naq_nb.core.errors import NaqConnectionError


def _block_store(srv) -> Callable[[], None]:
    """A file in place of the server's (still empty) JetStream folder: each stream create fails until
    the returned call puts the folder back. (A file nearer the stream is removed by the server's own
    cleanup of a failed create, so the next try would pass on its own.)"""
    store = srv.store_dir / "jetstream"
    if store.exists():  # (a server under load may not have made it yet)
        assert not any(store.iterdir()), f"{store} holds files before any stream was made"
        store.rmdir()
    store.write_text("not a folder")

    def unblock() -> None:
        store.unlink()
        store.mkdir()

    return unblock


def _create_failures(srv) -> int:
    return srv.log_tail(200).count("Stream create failed")


def test_layout_is_made_once_the_store_folder_can_be_made(own_nats_server, settings):
    unblock = _block_store(own_nats_server)
    client = Client(settings.nats_url, settings=settings)
    outcome: dict = {}

    def first_call() -> None:
        try:
            outcome["size"] = client.queue_size_sync("default")
        except BaseException as exc:  # handed to the assertion below
            outcome["error"] = exc

    t = threading.Thread(target=first_call)
    t.start()
    try:
        wait_until(lambda: _create_failures(own_nats_server) >= 1, timeout=10)
        unblock()  # the folder can be made again, as when the server's cleanup has passed
    finally:
        t.join(30)
    try:
        assert "error" not in outcome, outcome.get("error")
        assert outcome.get("size") == 0
        Queue("default", client=client).enqueue_sync(jobs.add, 2, 3)
        assert client.queue_size_sync("default") == 1, "the job was stored in the stream made on a later try"
    finally:
        client.close_sync()


def test_store_that_never_comes_names_the_stream_and_next_call_works(own_nats_server, settings):
    unblock = _block_store(own_nats_server)
    client = Client(settings.nats_url, settings=settings)
    try:
        not_made = rf"could not create the store for stream {settings.prefix.upper()}_"
        with pytest.raises(NaqConnectionError, match=not_made):
            Queue("default", client=client).enqueue_sync(jobs.add, 1, 2)
        assert _create_failures(own_nats_server) >= 2, "tried more than once before giving up"
        unblock()
        Queue("default", client=client).enqueue_sync(jobs.add, 1, 2)
        assert client.queue_size_sync("default") == 1
    finally:
        client.close_sync()
