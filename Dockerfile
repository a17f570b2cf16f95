# syntax=docker/dockerfile:1
# One image for the API and both workers; compose.yaml picks the command.
# Base: the Docker Official Image python:3.11.15-slim-bookworm. Every dependency in
# constraints.txt ships a manylinux wheel for CPython 3.11, so no compiler is needed.
ARG PYTHON_IMAGE=python:3.11.15-slim-bookworm

# ---- builder: a virtualenv at /opt/venv holding the locked dependencies and the project
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, in their own layer: it is rebuilt only when the pins change, not on
# every code edit. The list is read from pyproject.toml; versions come from constraints.txt.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install -c constraints.txt -r /tmp/requirements.txt

# Then the project itself (pyproject.toml names README.md as its readme, so it must be here).
COPY README.md ./
COPY api ./api
COPY domain ./domain
COPY workers ./workers
COPY messaging ./messaging
COPY service ./service
COPY store ./store
COPY cli ./cli
COPY devtools ./devtools
RUN pip install --no-deps -c constraints.txt .

# ---- runtime: the same slim base, the venv, and an unprivileged user
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app
# The project was installed into the venv (not in editable mode), so the venv carries the
# source of api, domain, workers, messaging, service, store, cli and devtools: one copy of the
# code, no PYTHONPATH.
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
USER app

EXPOSE 8081
# The API by default; the worker services in compose.yaml override the command.
CMD ["python", "-m", "api"]
