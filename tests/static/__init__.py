"""Static checks of the Docker stack: compose.yaml and the configs it mounts.

Docker is not needed: these tests read the files and check that they agree with each other
and with what the pinned images accept. The shared loaders below read each file once.
"""

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]

# ${VAR}, ${VAR:-default}, ${VAR-default}; "$$" is a literal dollar sign.
_VARIABLE = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<sep>:?-)(?P<default>[^}]*))?\}"
)


def interpolate(value: str) -> str:
    """Resolve compose variables the way ``docker compose`` does with no .env file."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return match.group("default") or ""

    return _VARIABLE.sub(replace, value)


def variables(value: str) -> list[tuple[str, str | None]]:
    """Every ``${VAR...}`` reference in ``value``, with its default (None if it has none)."""
    return [
        (m.group("name"), m.group("default") if m.group("sep") else None)
        for m in _VARIABLE.finditer(value)
        if m.group(0) != "$$"
    ]


def _interpolate_tree(node: Any) -> Any:
    if isinstance(node, str):
        return interpolate(node)
    if isinstance(node, list):
        return [_interpolate_tree(item) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_tree(value) for key, value in node.items()}
    return node


def load_yaml(relative: str) -> Any:
    return yaml.safe_load((REPO / relative).read_text(encoding="utf-8"))


def load_json(relative: str) -> Any:
    return json.loads((REPO / relative).read_text(encoding="utf-8"))


@cache
def compose_text() -> str:
    return (REPO / "compose.yaml").read_text(encoding="utf-8")


@cache
def _compose() -> dict[str, Any]:
    # safe_load resolves the x-app anchors and "<<:" merge keys, as Compose does.
    model: dict[str, Any] = _interpolate_tree(yaml.safe_load(compose_text()))
    return model


def compose_variables() -> dict[str, str | None]:
    """Each variable compose.yaml reads (comments aside), with its default."""
    found: dict[str, str | None] = {}

    def walk(node: Any) -> None:
        if isinstance(node, str):
            found.update(variables(node))
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)

    walk(yaml.safe_load(compose_text()))
    return found


def compose() -> dict[str, Any]:
    """compose.yaml after variable interpolation with every default applied."""
    copy: dict[str, Any] = json.loads(json.dumps(_compose()))  # tests may not alter the cache
    return copy


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict, from either the mapping or the list form."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) for each bind mount; named volumes are left out."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts.append((volume["source"], volume["target"]))
            continue
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/", "~")):
            mounts.append((source, target))
    return mounts


def mount_target(service_name: str, host_path: str) -> str:
    """Where ``host_path`` (relative to the repo) appears inside ``service_name``."""
    wanted = (REPO / host_path).resolve()
    for source, target in bind_mounts(services()[service_name]):
        if (REPO / source).resolve() == wanted:
            return target
    raise AssertionError(f"{service_name} does not mount {host_path}")
