"""Dockerfile: builds what pyproject.toml packages, from a pinned base, and runs unprivileged."""

import re
import tomllib

import pytest

from tests.static import REPO

pytestmark = pytest.mark.static


def _dockerfile() -> str:
    return (REPO / "Dockerfile").read_text(encoding="utf-8")


def _copied() -> set[str]:
    """Every source path a COPY takes from the build context (not from another stage)."""
    paths: set[str] = set()
    for line in re.findall(r"^COPY\s+(?!--from)(.+)$", _dockerfile(), re.MULTILINE):
        words = [word for word in line.split() if not word.startswith("--")]
        paths.update(words[:-1])
    return paths


def _dockerignore() -> set[str]:
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def test_base_image_is_pinned_python_3_11_slim_bookworm() -> None:
    bases = re.findall(r"^ARG PYTHON_IMAGE=(\S+)", _dockerfile(), re.MULTILINE)
    assert bases == ["python:3.11.15-slim-bookworm"]
    stages = re.findall(r"^FROM\s+(\S+)", _dockerfile(), re.MULTILINE)
    assert stages == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]


def test_every_packaged_package_and_install_input_is_copied() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    includes = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in includes}
    needed = packages | {"pyproject.toml", "constraints.txt", project["project"]["readme"]}
    assert needed <= _copied(), f"not copied into the image: {needed - _copied()}"
    for path in needed:
        assert (REPO / path).exists(), path
        assert path not in _dockerignore(), f".dockerignore hides {path}"


def test_installs_with_the_lock_file_into_a_venv() -> None:
    dockerfile = _dockerfile()
    assert "python -m venv /opt/venv" in dockerfile
    assert dockerfile.count("-c constraints.txt") == 2
    assert "COPY --from=builder /opt/venv /opt/venv" in dockerfile


def test_runs_as_a_non_root_user() -> None:
    users = re.findall(r"^USER\s+(\S+)", _dockerfile(), re.MULTILINE)
    assert users and users[-1] not in {"root", "0"}


def test_local_state_stays_out_of_the_build_context() -> None:
    assert {".venv", ".env", ".git", "tests"} <= _dockerignore()
