"""The README's code excerpts are real: each still appears in the file it names."""

import re
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXCERPT = re.compile(r"<!-- excerpt: (?P<path>\S+) -->\s*```python\n(?P<code>.*?)```", re.S)
SITE_PACKAGES = Path(sysconfig.get_paths()["purelib"])


def _excerpts() -> list[tuple[str, str]]:
    return [(m["path"], m["code"]) for m in EXCERPT.finditer((ROOT / "README.md").read_text())]


def _source(path: str) -> str:
    if path.startswith("site-packages/"):
        return (SITE_PACKAGES / path.removeprefix("site-packages/")).read_text()
    return (ROOT / path).read_text()


def test_the_readme_has_excerpts() -> None:
    paths = {path for path, _ in _excerpts()}
    assert {
        "messaging/rpc.py",
        "messaging/instrumentation.py",
        "messaging/telemetry/providers.py",
    } <= paths
    assert any("publish_decorator" in p for p in paths)
    assert any("callback_decorator" in p for p in paths)


@pytest.mark.parametrize(("path", "code"), _excerpts(), ids=lambda v: str(v)[:40])
def test_excerpt_still_appears_in_its_source(path: str, code: str) -> None:
    """Lines are compared stripped of indentation, in order and consecutive."""
    source = [line.strip() for line in _source(path).splitlines()]
    excerpt = [line.strip() for line in code.strip().splitlines()]
    windows = (source[i : i + len(excerpt)] for i in range(len(source)))
    assert excerpt in windows, f"README excerpt no longer in {path}:\n{code}"
