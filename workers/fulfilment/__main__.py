"""``python -m workers.fulfilment``: run the fulfilment worker until SIGTERM."""

from messaging import topology
from messaging.messages import ReservationConfirmed
from workers.fulfilment.handler import fulfil
from workers.runtime import Worker, run, serve

WORKER = Worker("fulfilment-worker", topology.FULFILMENT, ReservationConfirmed, fulfil)

if __name__ == "__main__":
    run(lambda: serve(WORKER))
