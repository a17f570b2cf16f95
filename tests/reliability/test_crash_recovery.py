"""At-least-once delivery with an exactly-once effect, proved by killing the worker.

The worker SIGKILLs itself (``tests/reliability/faulty_worker.py``: the production wiring with
crash points around its ports) mid-transaction, after the commit, or after the reply: at each
point before its ack. The next worker gets the
redelivered message; every reservation must still end exactly once: charged once, one final
status, and the client answered (201, or 202 and then the final state from GET).
"""

import signal
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import httpx

from tests.reliability.faulty_worker import POINTS
from tests.stack import System
from tests.waiting import eventually

KILLS_PER_POINT = 7  # 21 kills in all
PRICE, CREDITS = 10, 1_000


def test_sigkilled_worker_loses_nothing_and_charges_once(
    make_system: Callable[[], System], api_port: int
) -> None:
    system = make_system()
    system.seed({"kenny": CREDITS}, {"mug": PRICE})
    system.start_api(api_port, RESERVATION_REPLY_TIMEOUT="8")
    kills: Counter[str] = Counter()
    answers: list[Future[httpx.Response]] = []
    with ThreadPoolExecutor(max_workers=4) as pool:
        for i in range(KILLS_PER_POINT * len(POINTS)):
            point = POINTS[i % len(POINTS)]
            # It first finishes the message the previous worker died on (a redelivery),
            # then dies at `point` on this iteration's new message.
            worker = system.start_worker(
                "tests.reliability.faulty_worker", name=f"worker-{i}", WORKER_CRASH_AT=point
            )
            answers.append(
                pool.submit(
                    httpx.post,
                    f"{system.api_url}/reservations",
                    json={"username": "kenny", "item_id": "mug"},
                    timeout=20,
                )
            )
            assert worker.wait_exit() == -signal.SIGKILL, worker.log()
            assert f'"point":"{point}"' in worker.log().replace(" ", "")
            system.running.remove(worker)
            kills[point] += 1
        system.start_worker("workers.credit_check", name="worker-final")
        responses = [answer.result(timeout=30) for answer in answers]

    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {201, 202}, statuses
    finals: Counter[str] = Counter()
    for response in responses:
        reservation_id = response.json()["reservation_id"]
        for attempt in eventually(15, every=0.1):
            with attempt:
                final = httpx.get(f"{system.api_url}/reservations/{reservation_id}", timeout=5)
                assert final.status_code == 200
        finals[final.json()["status"]] += 1
    credits = httpx.get(f"{system.api_url}/users/kenny", timeout=5).json()["credits"]

    print(  # noqa: T201 - the counts are part of the evidence
        f"\nkills survived: {sum(kills.values())} {dict(kills)}; answers: {dict(statuses)}; "
        f"final: {dict(finals)}; credits {CREDITS} -> {credits}"
    )
    assert sum(kills.values()) >= 20
    assert finals == {"confirmed": len(responses)}
    assert credits == CREDITS - PRICE * len(responses)  # charged exactly once each
