"""A store another process made first is read again while a cluster still answers "not found"."""

import asyncio

import pytest
from nats.js.errors import NotFoundError

from naq_nb.core import makestores


def test_a_store_made_elsewhere_is_read_again_until_it_answers():
    answers = [NotFoundError(), NotFoundError(), "info"]

    async def read():
        a = answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return a

    assert asyncio.run(makestores.created_elsewhere(read)) == "info" and answers == []


def test_one_that_never_answers_is_not_found_after_the_bound(monkeypatch):
    monkeypatch.setattr(makestores, "CREATED_WAIT", 0.2)
    tries = []

    async def read():
        tries.append(1)
        raise NotFoundError()

    with pytest.raises(NotFoundError):
        asyncio.run(makestores.created_elsewhere(read))
    assert 2 <= len(tries) <= 5
