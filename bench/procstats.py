"""CPU time per process, read with psutil at the edges of a measured window, and each
process's resident memory at its end.

Roles are what the report calls them: ``api``, ``worker``, ``fulfilment``, ``broker`` (the
RabbitMQ ``beam.smp``), ``receiver`` (the OTLP receiver), ``loadgen``; in the baseline,
``client`` and ``server``.
"""

import resource
from collections.abc import Mapping

import psutil


def find_broker_pid() -> int | None:
    """The RabbitMQ node's Erlang VM on this machine, if there is exactly one to see."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        name = proc.info.get("name") or ""
        cmdline = " ".join(proc.info.get("cmdline") or [])
        # The node boots the rabbit application; rabbitmqctl's short-lived VMs do not.
        if name.startswith("beam") and "-s rabbit boot" in cmdline:
            found.append(proc.pid)
    return found[0] if len(found) == 1 else None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a live process (None once it is gone)."""
    try:
        times = psutil.Process(pid).cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return float(times.user + times.system)


def resident_mib(pid: int) -> float | None:
    """Resident set size of a live process, in MiB (None once it is gone)."""
    try:
        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def children_cpu_seconds() -> float:
    """CPU of this process's reaped children (for wrk, which exits before we can ask it)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# The processes whose memory the bench reports: the services of the system and of the twin.
MEMORY_ROLES = ("api", "worker", "fulfilment")


class CpuMeter:
    """Snapshots the CPU seconds of named processes; ``used()`` is the difference."""

    def __init__(self, pids: Mapping[str, int | None]) -> None:
        self._pids = {role: pid for role, pid in pids.items() if pid is not None}
        self._start: dict[str, float] = {}

    def add(self, role: str, pid: int) -> None:
        self._pids[role] = pid

    def snapshot(self) -> dict[str, float]:
        values = {role: cpu_seconds(pid) for role, pid in self._pids.items()}
        return {role: v for role, v in values.items() if v is not None}

    def begin(self) -> None:
        self._start = self.snapshot()

    def resident_mib(self) -> dict[str, float]:
        """Each process's resident memory now (MiB); the broker and helpers left out."""
        values = {
            role: resident_mib(pid) for role, pid in self._pids.items() if role in MEMORY_ROLES
        }
        return {role: round(v, 1) for role, v in values.items() if v is not None}

    def used(self) -> dict[str, float]:
        end = self.snapshot()
        return {
            role: round(end[role] - self._start[role], 4) for role in end if role in self._start
        }
