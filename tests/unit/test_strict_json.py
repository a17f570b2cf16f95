"""Every route that takes a JSON body refuses a name given twice (api/strict_json.py)."""

import json
import re
from collections.abc import Iterable, Iterator

import pytest
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from api.app import create_app
from api.settings import ApiSettings
from api.strict_json import StrictJsonRequest, StrictJsonRoute


def _api_routes(routes: Iterable[BaseRoute]) -> Iterator[APIRoute]:
    """FastAPI 0.165 keeps an included router whole (``original_router``): walk into it."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _api_routes(included.routes)
        elif isinstance(route, APIRoute):
            yield route


def test_every_route_with_a_body_is_strict() -> None:
    routes = list(_api_routes(create_app(ApiSettings()).routes))
    with_a_body = [r for r in routes if r.body_field is not None]
    assert with_a_body, "no route takes a body: the check below would pass for nothing"
    assert [r.path for r in with_a_body if not isinstance(r, StrictJsonRoute)] == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"amount": ' + b"9" * 5000 + b"}", "Exceeds the limit (4300 digits)"),
        (b'{"a": 1, "a": 2}', "duplicate name 'a'"),
        (b'{"a": "\xff"}', "not valid UTF-8"),
    ],
    ids=["long-integer", "duplicate", "utf-8"],
)
async def test_a_body_python_cannot_read_is_json_invalid(body: bytes, reason: str) -> None:
    """What FastAPI answers 422 ``json_invalid``; anything but a JSONDecodeError it answered
    400 "There was an error parsing the body" (a review's 5,000-digit integer, with
    ``MAX_BODY_BYTES`` raised)."""

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    request = StrictJsonRequest({"type": "http", "method": "POST", "headers": []}, receive)
    with pytest.raises(json.JSONDecodeError, match=re.escape(reason)):
        await request.json()
