"""HTTP answers of ``POST /reservations``: the statuses and bodies ``api/`` gives, by hand.

201 confirmed, 409 not enough credits, 404 unknown user or item, 202 pending (no reply in
time, or a reply this API cannot read), 503 broker unavailable, 422 invalid input. Every body
carries ``trace_id`` (null when untraced).
"""

from typing import Any

import orjson

from bench.twin import contracts, schema

Answer = tuple[int, dict[str, Any], list[tuple[bytes, bytes]]]
RETRY_AFTER = [(b"retry-after", b"1")]
_FIELDS = ("username", "item_id")
_NOT_FOUND = {
    schema.UNKNOWN_USER: "unknown user {username!r}",
    schema.UNKNOWN_ITEM: "unknown item {item_id!r}",
}
BROKER_DOWN = "The message broker is unavailable; the reservation was not taken. Retry shortly."


def parse_request(body: bytes) -> tuple[str, str] | list[dict[str, Any]]:
    """(username, item_id), or the validation errors (pydantic's shape, without the input)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return [{"loc": ["body"], "msg": f"JSON decode error: {exc}", "type": "json_invalid"}]
    if not isinstance(data, dict):
        return [{"loc": ["body"], "msg": "Input should be an object", "type": "model_type"}]
    errors: list[dict[str, Any]] = []
    for name in _FIELDS:
        if name not in data:
            errors.append({"loc": ["body", name], "msg": "Field required", "type": "missing"})
            continue
        try:
            contracts.identifier(data[name])
        except contracts.Invalid:
            errors.append(
                {
                    "loc": ["body", name],
                    "msg": "String should match pattern '^[A-Za-z0-9_.\\-]{1,64}$'",
                    "type": "string_pattern_mismatch",
                }
            )
    for extra in data.keys() - set(_FIELDS):
        errors.append(
            {"loc": ["body", extra], "msg": "Extra inputs are not permitted", "type": "extra"}
        )
    return errors or (data["username"], data["item_id"])


def invalid(errors: list[dict[str, Any]], trace_id: str | None) -> Answer:
    return 422, {"detail": errors, "trace_id": trace_id}, []


def unavailable(trace_id: str | None) -> Answer:
    return 503, {"detail": BROKER_DOWN, "trace_id": trace_id}, RETRY_AFTER


def pending(reservation_id: str, trace_id: str | None) -> Answer:
    body = {"reservation_id": reservation_id, "status": "pending", "trace_id": trace_id}
    return 202, body, [(b"location", f"/reservations/{reservation_id}".encode())]


def from_reply(
    reservation_id: str,
    reply: bytes | None,
    trace_id: str | None,
    request: tuple[str, str] = ("", ""),
) -> Answer:
    """The answer to ``reply``; ``request`` (username, item id) names what was not found."""
    if reply is None:
        return pending(reservation_id, trace_id)
    try:
        data = contracts.parse_credit_checked(reply)
    except (contracts.Invalid, orjson.JSONDecodeError):
        return pending(reservation_id, trace_id)
    rid, outcome = data["reservation_id"], data["outcome"]
    if outcome == schema.CONFIRMED and data.get("credits_left") is not None:
        body = {"reservation_id": rid, "status": outcome, "credits_left": data["credits_left"]}
        return 201, {**body, "trace_id": trace_id}, []
    if outcome == schema.REJECTED:
        reason = f"not enough credits: the item costs {data['price']}, {data['credits_left']} left"
        body = {"reservation_id": rid, "status": outcome, "reason": reason}
        return 409, {**body, "trace_id": trace_id}, []
    username, item_id = request
    detail = _NOT_FOUND.get(outcome, "reservation failed").format(
        username=username, item_id=item_id
    )
    body = {"detail": detail, "reservation_id": rid, "status": outcome, "trace_id": trace_id}
    return 404, body, []
