"""Idempotency keys: the first request with a key binds it to its reservation id.

A retry with the same key finds that binding and re-asks for the *same* reservation id, which
the credit check handles at most once (see :mod:`store.repository`), so a retry never charges
again. The fingerprint of the first request's body travels with the key, so the API can refuse
the key with a different body. Expired keys are deleted whenever a key is claimed.
"""

from dataclasses import dataclass
from uuid import UUID

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection

from store.tables import idempotency_keys as keys


@dataclass(frozen=True)
class KeyClaim:
    """A key in its scope (the endpoint), the body's fingerprint and the reservation id."""

    scope: str
    key: str
    fingerprint: str
    reservation_id: UUID


def claim(conn: Connection, wanted: KeyClaim, now: int, ttl_s: int) -> KeyClaim:
    """Bind the key to ``wanted`` if it is free (or expired); else the claim that holds it."""
    conn.execute(delete(keys).where(keys.c.expires_at < now))
    held = find(conn, wanted.scope, wanted.key)
    if held is not None:
        return held
    conn.execute(
        insert(keys).values(
            scope=wanted.scope,
            key=wanted.key,
            fingerprint=wanted.fingerprint,
            reservation_id=str(wanted.reservation_id),
            expires_at=now + ttl_s,
        )
    )
    return wanted


def find(conn: Connection, scope: str, key: str) -> KeyClaim | None:
    row = conn.execute(select(keys).where(keys.c.scope == scope, keys.c.key == key)).first()
    if row is None:
        return None
    return KeyClaim(row.scope, row.key, row.fingerprint, UUID(row.reservation_id))
