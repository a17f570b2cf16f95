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

import resource

# The soft limit asked for when the hard one is unlimited (Linux then caps it at nr_open).
UNLIMITED_TARGET = 65_536


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft limit on open files to the hard one; the limits (soft, hard) it was
    and is. Never lowers it, and leaves it as it was where the system refuses."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = UNLIMITED_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0]
