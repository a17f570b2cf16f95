"""A lean twin of the reservation path: the same work as the system, written to be fast.

The same HTTP shape and JSON, the same persistent messages with publisher confirms, manual
acks and direct reply-to, the same topology, the same transaction (conditional deduction and
the idempotent insert), the reply, the ``reservation.confirmed`` event and the fulfilment
write, on raw drivers (sqlite3 behind one thread hop per transaction, asyncpg), one log line
per message; traced with the same OpenTelemetry packages, or not at all. It is the anchor the
bench measures the system against: ``python -m bench`` runs it as the ``twin-untraced`` and
``twin-traced`` scenarios (``bench.targets`` starts it).
"""

from bench.twin.launch import TRACED, UNTRACED, VARIANTS, TwinProcess, launch

__all__ = ["TRACED", "UNTRACED", "VARIANTS", "TwinProcess", "launch"]
