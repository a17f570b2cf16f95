"""The credit-check worker that SIGTERMs itself the moment its consumer has started.

``python -m tests.reliability.sigterm_on_consuming`` runs the production wiring
(``workers.credit_check``) with one change, in this file only: right after the consumer starts,
before anything else runs on the event loop, the process sends itself SIGTERM. That is the
earliest a deployment (or a test that waits for the ``consuming`` line) can stop it; the stop
must be the graceful one, exit code 0, never the default kill.
"""

import os
import signal

from messaging.subscriber import Subscription
from workers.credit_check.__main__ import main
from workers.runtime import run


def _sigterm_once_started() -> None:
    start = Subscription.start

    async def start_then_sigterm(self: Subscription) -> None:
        await start(self)
        os.kill(os.getpid(), signal.SIGTERM)

    Subscription.start = start_then_sigterm  # type: ignore[method-assign]


if __name__ == "__main__":
    _sigterm_once_started()
    run(main)
