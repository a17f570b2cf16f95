"""The API as the CLI sees it: every call fails with one clear sentence, not a traceback."""

import re
import time
import uuid
from typing import Any
from urllib.parse import quote

import httpx

from cli.errors import CliError
from cli.invocation import command
from domain.identifiers import (
    IDEMPOTENCY_KEY_PATTERN,
    IDEMPOTENCY_KEY_RULE,
    IDENTIFIER_PATTERN,
)

# A reservation the CLI sends is retried (same Idempotency-Key) after a timeout, a lost
# connection or a 503, at most this many times in all, PAUSE seconds apart.
RESERVE_ATTEMPTS = 3
PAUSE = 0.5


class ApiClient:
    def __init__(self, base_url: str, timeout: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def __enter__(self) -> "ApiClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.close()

    def request(
        self, method: str, path: str, json: Any = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        try:
            return self._http.request(method, path, json=json, headers=headers)
        except httpx.TimeoutException:
            raise CliError(f"the API at {self.base_url} did not answer in time.") from None
        except httpx.HTTPError as error:
            raise unreachable(str(self.base_url), error) from None

    def reserve(
        self, username: str, item_id: str, idempotency_key: str | None = None
    ) -> httpx.Response:
        """POST /reservations with an Idempotency-Key (a random one unless given), retried with
        that key after a timeout, a lost connection or a 503: a retry never reserves twice."""
        body = {"username": username, "item_id": item_id}
        if idempotency_key is not None and not re.fullmatch(
            IDEMPOTENCY_KEY_PATTERN, idempotency_key
        ):
            # The API's 400 for it, here before a request: a key that is not ASCII could not
            # even be sent (a traceback), and one with a quote would be sent mangled.
            raise CliError(
                f"malformed Idempotency-Key {idempotency_key!r}: use {IDEMPOTENCY_KEY_RULE}."
            )
        key = uuid.uuid4() if idempotency_key is None else idempotency_key
        headers = {"Idempotency-Key": f'"{key}"'}
        for attempt in range(1, RESERVE_ATTEMPTS + 1):
            try:
                response = self.request("POST", "/reservations", body, headers)
            except CliError:
                if attempt == RESERVE_ATTEMPTS:
                    raise
            else:
                if response.status_code != 503 or attempt == RESERVE_ATTEMPTS:
                    return response
            time.sleep(PAUSE)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def catalogue(self) -> dict[str, Any]:
        return self._ok(self.request("GET", "/users"))

    def top_up(self, username: str, amount: int) -> dict[str, Any]:
        path = f"/users/{_path_segment(username, 'username')}/credits"
        return self._ok(self.request("POST", path, {"amount": amount}))

    def _ok(self, response: httpx.Response) -> dict[str, Any]:
        body = body_of(response)
        if response.status_code != 200:
            raise CliError(f"{response.status_code}: {describe_error(body)}")
        return body


def _path_segment(value: str, what: str) -> str:
    """``value`` as one path segment: an identifier (domain/identifiers.py), percent-encoded,
    so that ``carol/../bob`` is refused here instead of naming ``bob`` in the URL (and ``..``,
    a valid identifier, is not read as a dot segment)."""
    if not re.fullmatch(IDENTIFIER_PATTERN, value):
        raise CliError(f"{what} {value!r} is not valid: 1-64 of A-Z a-z 0-9 _ . -")
    return "%2E" * len(value) if set(value) == {"."} else quote(value, safe="")


def body_of(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {"detail": response.text[:200]}
    return body if isinstance(body, dict) else {"detail": body}


def describe_error(body: dict[str, Any]) -> str:
    """FastAPI's 422 ``detail`` is a list of problems; ours are strings."""
    detail = body.get("detail", body.get("reason", body))
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', ())[1:])}: {d.get('msg')}"
            if isinstance(d, dict)
            else str(d)
            for d in detail
        )
    return str(detail)


def unreachable(api_url: str, error: httpx.HTTPError) -> CliError:
    """The API did not answer at all: where the commands looked, and how to start it."""
    return CliError(
        f"the API is not reachable at {api_url} ({error or type(error).__name__}).",
        hint=f"start everything with `{command()} run` (or `make demo`), or set API_URL.",
    )
