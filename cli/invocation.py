"""How to type this command in the user's shell, for the lines they copy from its output.

``make demo`` runs ``.venv/bin/reservations`` without putting ``.venv/bin`` on ``PATH``, so a
bare ``reservations users`` copied from the demo's output would be "command not found".
"""

import shutil
import sys
from functools import cache
from pathlib import Path

NAME = "reservations"


@cache
def command() -> str:
    """``reservations`` when the shell would find this very script; else its path, relative
    to the working directory when it lies under it (``.venv/bin/reservations``)."""
    script = Path(sys.argv[0])
    if script.name != NAME:  # not the installed script: a test, say
        return NAME
    found = shutil.which(NAME)
    here = script.resolve()
    if found is not None and Path(found).resolve() == here:
        return NAME
    try:
        return str(here.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(here)
