"""The services' garbage-collector settings (service/gc_tuning.py), checked in a fresh
interpreter: tuning is per process, and this one is pytest's."""

import json
import subprocess
import sys

from service.gc_tuning import OLDER_THRESHOLDS, YOUNG_THRESHOLD

PROBE = """
import gc, json
import api.app, workers.runtime  # what a service imports before it serves
before = gc.get_threshold()
from service.gc_tuning import tune_for_serving
tune_for_serving()
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
"""


def test_serving_processes_freeze_their_imports_and_collect_less_often() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    seen = json.loads(out)
    assert seen["before"] == [700, 10, 10]  # CPython's defaults, until the entry point tunes
    assert seen["after"] == [YOUNG_THRESHOLD, *OLDER_THRESHOLDS]
    # The imported frameworks' objects, moved out of every later collection's way.
    assert seen["frozen"] > 100_000, seen
