"""Every route that takes a JSON body refuses a name given twice (api/strict_json.py)."""

from collections.abc import Iterable, Iterator

from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from api.app import create_app
from api.settings import ApiSettings
from api.strict_json import StrictJsonRoute


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
