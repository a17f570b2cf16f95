"""A worker's settings reach what they tune."""

import asyncio

import pytest

from messaging import topology
from store.settings import StoreSettings
from tests.system import (
    RecordingPublishers,
    configure_env,
    publishing_with_empty_dead_letters,
    until_consuming,
)
from workers.credit_check.__main__ import WORKER
from workers.runtime import serve


@pytest.mark.parametrize("empty_store_settings", ["sqlite"], indirect=True)
async def test_publish_hold_is_the_publishers_hold(
    amqp_url: str, store_settings: StoreSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure_env(monkeypatch, amqp_url, store_settings)
    monkeypatch.setenv("PUBLISH_HOLD", "2.5")
    recording, stop = RecordingPublishers(), asyncio.Event()
    worker = asyncio.create_task(serve(WORKER, stop, publisher=recording))
    try:
        async with publishing_with_empty_dead_letters(amqp_url) as declared:
            channel = declared.queues[topology.CREDIT_CHECK.name].channel
            await until_consuming(channel, topology.CREDIT_CHECK)
    finally:
        stop.set()
        await asyncio.wait_for(worker, 15)
    assert [publisher.hold for publisher in recording.made] == [2.5]
