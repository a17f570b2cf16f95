"""The ``Idempotency-Key`` request header (IETF httpapi draft "The Idempotency-Key HTTP Header
Field"): a client's retry of ``POST /reservations`` never reserves twice.

The first request with a key binds it, in this endpoint's scope, to its reservation id and the
fingerprint of its body. A retry with the same key and body gets the same reservation id: the
API answers from the stored outcome, or asks the worker again for that id (idempotent by it),
even while the first request is still in flight. The same key with another body is refused
(422), a malformed key too (400), and so is a request with two keys (400: which one would the
client mean?). Keys expire after ``IDEMPOTENCY_KEY_TTL`` seconds.
"""

import hashlib
import re
import uuid
from uuid import UUID

from fastapi import HTTPException
from starlette.datastructures import Headers

from api.schemas import ReservationRequest
from domain.identifiers import IDEMPOTENCY_KEY_PATTERN, IDEMPOTENCY_KEY_RULE
from store.idempotency import KeyClaim
from store.repository import SqlStore

HEADER = "Idempotency-Key"
SCOPE = "POST /reservations"
_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
MALFORMED = f"malformed {HEADER}: use {IDEMPOTENCY_KEY_RULE}"


def raw_key(headers: Headers) -> str | None:
    """The request's one key, unparsed, or None without one; two or more headers: 400."""
    values = headers.getlist(HEADER)
    if len(values) > 1:
        raise HTTPException(400, f"send one {HEADER} header, not {len(values)}")
    return values[0] if values else None


def parse_key(raw: str) -> str:
    """The key, from an sf-string (``"abc"``) or, leniently, a bare token; else 400."""
    key = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] == '"' else raw
    if not _KEY.fullmatch(key):
        example = '"8e03978e-40d5-43e8-bc93-6894a57f9324"'
        raise HTTPException(400, f"{MALFORMED}, e.g. a UUID in double quotes ({example})")
    return key


def fingerprint(body: ReservationRequest) -> str:
    return hashlib.sha256(body.model_dump_json().encode()).hexdigest()


async def reservation_id_for(
    store: SqlStore, raw_key: str, body: ReservationRequest, ttl_s: int
) -> UUID:
    """The reservation id this key stands for: a new one for a new key, else the first's."""
    wanted = KeyClaim(SCOPE, parse_key(raw_key), fingerprint(body), uuid.uuid4())
    held = await store.claim_key(wanted, ttl_s)
    if held.fingerprint != wanted.fingerprint:
        raise HTTPException(
            422, f"this {HEADER} was already used with a different request body; use a new key"
        )
    return held.reservation_id
