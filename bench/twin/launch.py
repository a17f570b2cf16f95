"""How to start the twin, for whichever process wrapper runs it (the bench, the tests).

``launch(variant, db_env, env, port=...)`` returns the three processes in start order, each
with its ``python -m`` arguments, its environment, its working directory and how to tell it
is ready (a consumer on its queue, or ``GET /readyz`` answering 200). The twin reads the
same variables as the system, so ``db_env`` is what ``bench.db.Database.env()`` gives.
``bench.targets`` runs them with the bench's own process handling.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bench.plan import TRACING_OFF, tracing_on
from messaging import topology

UNTRACED = "untraced"
TRACED = "traced"
VARIANTS = (UNTRACED, TRACED)
ROOT = Path(__file__).resolve().parents[2]
_REPLACED = ("OTEL_", "DATABASE_", "API_", "PYTHONPATH")


@dataclass(frozen=True)
class TwinProcess:
    name: str  # also the log file's stem
    module_args: list[str]  # after ``python -m``
    env: dict[str, str]
    cwd: Path
    queue: str | None = None  # a worker is ready once the broker shows it consuming this
    port: int | None = None  # the API is ready once GET /readyz on this port answers 200


def tracing_env(variant: str, otlp_endpoint: str | None) -> dict[str, str]:
    """The same tracing settings the bench gives the system."""
    if variant == UNTRACED:
        return dict(TRACING_OFF)
    if variant != TRACED or otlp_endpoint is None:
        raise ValueError(f"variant {variant!r}: 'untraced', or 'traced' with an OTLP endpoint")
    return tracing_on(otlp_endpoint)


def launch(
    variant: str,
    db_env: Mapping[str, str],
    env: Mapping[str, str],
    *,
    port: int,
    otlp_endpoint: str | None = None,
) -> list[TwinProcess]:
    """The twin's credit-check worker, fulfilment worker and API, in start order.

    ``env`` is the base environment (it must hold ``AMQP_URL``; ``OTEL_BSP_*``,
    ``AMQP_PREFETCH``, ``SEED_FILE`` and the like pass through); ``db_env`` holds
    ``DATABASE_URL`` and maybe ``DATABASE_SCHEMA``.
    """
    keep = {
        k: v for k, v in env.items() if not k.startswith(_REPLACED) or k.startswith("OTEL_BSP_")
    }
    common = {
        **keep,
        **db_env,
        **tracing_env(variant, otlp_endpoint),
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
    }
    return [
        TwinProcess(
            "twin-credit-check",
            ["bench.twin.credit_check"],
            common,
            ROOT,
            queue=topology.CREDIT_CHECK.name,
        ),
        TwinProcess(
            "twin-fulfilment",
            ["bench.twin.fulfilment"],
            common,
            ROOT,
            queue=topology.FULFILMENT.name,
        ),
        TwinProcess(
            "twin-api",
            ["bench.twin.api"],
            {**common, "API_HOST": "127.0.0.1", "API_PORT": str(port)},
            ROOT,
            port=port,
        ),
    ]
