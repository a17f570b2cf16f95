"""JSON bodies with a name given twice are refused (422), not read as the last one given.

RFC 8259 leaves an object with duplicate names to the parser: Python's keeps the last, another
may keep the first. ``{"username": "alice", "username": "bob"}`` would charge bob here and,
read by a proxy or a log pipeline in front of us, alice. The routes that take a body use
:class:`StrictJsonRoute` (FastAPI's custom-route hook): the body is parsed once, as before,
with a hook that refuses a repeated name; FastAPI answers that as it answers any body that is
not JSON (``json_invalid``), and the error handler says which name. So are a body that is not
valid UTF-8, one nested deeper than the parser goes and one with an integer longer than
Python converts, which FastAPI answered 400.
"""

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

# Characters of a repeated name the error quotes, at most.
NAME_SHOWN = 40


class _DuplicateName(ValueError):
    pass


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                shown = name if len(name) <= NAME_SHOWN else name[: NAME_SHOWN - 1] + "…"
                raise _DuplicateName(f"duplicate name {shown!r} in a JSON object")
            seen.add(name)
    return obj


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = json.loads(body, object_pairs_hook=_unique)
            except _DuplicateName as exc:
                raise _invalid(str(exc), body, 0) from None
            except UnicodeDecodeError as exc:  # FastAPI answers anything but a JSONDecodeError 400
                raise _invalid("not valid UTF-8", body, exc.start) from None
            except RecursionError:
                raise _invalid("nested too deeply", body, 0) from None
            except json.JSONDecodeError:
                raise
            except ValueError as exc:  # an integer of over 4,300 digits (Python's own bound)
                raise _invalid(str(exc), body, 0) from None
        return self._json


def _invalid(reason: str, body: bytes, position: int) -> json.JSONDecodeError:
    """What FastAPI answers as a body that is not JSON: 422, ``json_invalid``, with ``reason``."""
    return json.JSONDecodeError(reason, body.decode("utf-8", "replace"), position)


class StrictJsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handle(StrictJsonRequest(request.scope, request.receive))

        return strict
