"""A private RabbitMQ virtual host, so a test session or a benchmark never meets anyone
else's messages (the services declare fixed queue names such as ``credit-check``).

Made with ``rabbitmqctl`` (local, or ``docker exec`` into a container), with the URL's user
allowed everything in it, and deleted with everything in it at the end.
"""

import shutil
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from yarl import URL

from devtools.addresses import is_loopback


def local_rabbitmqctl(amqp_url: str) -> list[str] | None:
    """``rabbitmqctl`` when the broker is on this machine and the tool is installed."""
    if is_loopback(URL(amqp_url).host) and shutil.which("rabbitmqctl"):
        return ["rabbitmqctl"]
    return None


@contextmanager
def private_vhost(amqp_url: str, ctl: Sequence[str], prefix: str) -> Iterator[str]:
    """Yields ``amqp_url`` pointing at a new vhost ``{prefix}-{random}``."""
    url = URL(amqp_url)
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    _run(ctl, "add_vhost", name)
    try:
        _run(ctl, "set_permissions", "-p", name, url.user or "guest", ".*", ".*", ".*")
        yield str(url.with_path("/" + name))
    finally:
        subprocess.run([*ctl, "delete_vhost", name], capture_output=True, timeout=60)


def _run(ctl: Sequence[str], *args: str) -> None:
    subprocess.run([*ctl, *args], check=True, capture_output=True, timeout=60)
