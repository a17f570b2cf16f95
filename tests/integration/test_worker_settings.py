"""A worker's settings reach what they tune."""

import asyncio

import pytest

from messaging import topology
from store.settings import StoreSettings
from tests.system import (
    RecordingPublishers,
    configure_env,
    consumers_and_messages,
    publishing_with_empty_dead_letters,
)
from tests.waiting import eventually_async
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
            async for attempt in eventually_async(15, every=0.1):
                with attempt:
                    assert (await consumers_and_messages(channel, topology.CREDIT_CHECK))[0] == 1
    finally:
        stop.set()
        await asyncio.wait_for(worker, 15)
    assert [publisher.hold for publisher in recording.made] == [2.5]
