"""Children that never outlive the process that started them, whatever ends it.

A clean exit stops every child on purpose (:meth:`devtools.processes.Process.stop`), but a
SIGKILL, a crash or a closed terminal leaves no chance to do so: the children would be
re-parented to PID 1 and keep their ports. Linux has a parent-death signal for that (``prctl
PR_SET_PDEATHSIG``): the kernel sends it to the child the moment its parent thread ends.

The child arms it itself, before anything else runs: :func:`dying_with_parent` prefixes the
command with a tiny Python that calls ``prctl`` and then ``exec``s the real command (the signal
survives ``exec``; same pid, same arguments afterwards). A ``preexec_fn`` would do the same from
the parent's side, but it forces a plain ``fork()`` of a process that runs threads (gRPC's, the
log pumps'), which is unsafe and makes gRPC complain.

SIGKILL, not SIGTERM: the parent is already gone, nobody reads the child's output any more,
and the services are built to survive a kill (unacked messages are redelivered, a reservation
is charged once). Only on Linux; elsewhere the command is unchanged and a child may outlive a
killed parent. The signal fires when the *thread* that started the child ends, so start
long-lived children from a thread that lives as long as they should (the main thread).
"""

import os
import signal
import sys
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

# argv: signal, the parent's pid, then the command. If the parent died before the signal was
# armed, the child is already an orphan: it sends itself the signal at once.
_ARM_THEN_EXEC = (
    "import ctypes, os, sys\n"
    "sig, parent = int(sys.argv[1]), int(sys.argv[2])\n"
    f"ctypes.CDLL(None).prctl({PR_SET_PDEATHSIG}, sig, 0, 0, 0)\n"
    "if os.getppid() != parent:\n"
    "    os.kill(os.getpid(), sig)\n"
    "os.execvp(sys.argv[3], sys.argv[3:])\n"
)


def dying_with_parent(args: Sequence[str], sig: signal.Signals = signal.SIGKILL) -> list[str]:
    """``args``, started so that the kernel sends ``sig`` to it when this process dies."""
    if not sys.platform.startswith("linux"):
        return list(args)
    # -I -S: no site packages, no PYTHON* variables, for a fast and predictable start.
    arm = [sys.executable, "-I", "-S", "-c", _ARM_THEN_EXEC]
    return [*arm, str(int(sig)), str(os.getpid()), *args]
