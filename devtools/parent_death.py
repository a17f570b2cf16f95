"""Children that never outlive the process that started them, whatever ends it.

A clean exit stops every child on purpose (:meth:`devtools.processes.Process.stop`), but a
SIGKILL, a crash or a closed terminal leaves no chance to do so: the children would be re-parented
to PID 1 and keep their ports. Linux has a parent-death signal for that (``prctl
PR_SET_PDEATHSIG``): the kernel sends it to the child the moment its parent thread ends. It is
set in the child between ``fork`` and ``exec``, so it holds from the child's first instruction.

SIGKILL, not SIGTERM: the parent is already gone, nobody reads the child's output any more,
and the services are built to survive a kill (unacked messages are redelivered, a reservation
is charged once). Only on Linux; elsewhere :func:`parent_death_signal` gives nothing and a
child may outlive a killed parent. The signal fires when the *thread* that started the child
ends, so start long-lived children from a thread that lives as long as they should (the main
thread).
"""

import ctypes
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def parent_death_signal(sig: signal.Signals = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel send ``sig`` to the child when this process dies,
    or None where that is not available."""
    if not sys.platform.startswith("linux"):
        return None
    # Resolved here, in the parent: the child only makes one call, without imports or locks.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def set_in_child() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), sig)

    return set_in_child
