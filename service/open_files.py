"""The soft limit on open files, raised to the hard limit before the API serves.

Every HTTP connection holds a file descriptor, idle or not: uvicorn with httptools has no
timeout for a request's headers, and keeps an idle keep-alive connection 75 s. Many systems
start a process with a soft limit of 1,024 (systemd's default, most shells) under a far higher
hard limit, which the process may raise itself. With 1,024, a fault campaign's 1,100 idle
connections took every descriptor: the API accepted nothing more, its health checks included,
and said nothing in its log, until they closed. What nginx's ``worker_rlimit_nofile`` does for
its workers, :func:`raise_open_files_limit` does here, once, from ``python -m api``. A reverse
proxy in front still bounds slow clients (README, "Access and credentials").
"""

import logging
import resource

log = logging.getLogger(__name__)

# The soft limit asked for when the hard one is unlimited (Linux then caps it at nr_open), and
# the lower ones tried where the system refuses it (macOS caps it at OPEN_MAX, 10,240).
TARGETS_WHEN_UNLIMITED = (65_536, 10_240, 4_096)


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft limit on open files towards the hard one; the soft limit it was and the
    one it is. Never lowers it; a limit the system would not raise is logged, and kept."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    targets = TARGETS_WHEN_UNLIMITED if hard == resource.RLIM_INFINITY else (hard,)
    for target in targets:
        if soft == resource.RLIM_INFINITY or soft >= target:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            break
        except (ValueError, OSError):
            continue
    now = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if now == soft and soft != resource.RLIM_INFINITY and soft < targets[-1]:
        log.warning("could not raise the limit on open files above %d", soft)
    return soft, now
