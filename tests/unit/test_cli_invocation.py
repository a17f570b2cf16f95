"""The commands the CLI tells a user to type next are ones their shell can run: `make demo`
runs `.venv/bin/reservations`, which is not on PATH unless the venv is activated."""

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli import invocation


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    invocation.command.cache_clear()
    yield
    invocation.command.cache_clear()


def _script(directory: Path) -> Path:
    directory.mkdir(parents=True)
    script = directory / "reservations"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    return script


def test_a_script_off_the_path_is_named_by_its_path_from_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = _script(tmp_path / ".venv" / "bin")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [".venv/bin/reservations", "demo"])
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert invocation.command() == ".venv/bin/reservations"

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    invocation.command.cache_clear()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setattr(sys, "argv", [str(script), "demo"])
    assert invocation.command() == str(script.resolve())


def test_the_script_the_shell_finds_is_named_bare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = _script(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}/usr/bin")
    monkeypatch.setattr(sys, "argv", [str(script), "run"])
    assert invocation.command() == "reservations"


def test_another_reservations_on_the_path_is_not_taken_for_this_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = _script(tmp_path / "other")
    mine = _script(tmp_path / "project" / ".venv" / "bin")
    monkeypatch.chdir(tmp_path / "project")
    monkeypatch.setenv("PATH", str(other.parent))
    monkeypatch.setattr(sys, "argv", [str(mine), "run"])
    assert invocation.command() == ".venv/bin/reservations"


def test_run_other_than_by_its_script_it_is_named_bare(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["/some/where/cli/__main__.py", "run"])
    assert invocation.command() == "reservations"
