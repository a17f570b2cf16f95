"""The garbage collector's settings for a long-running service, applied before it serves.

Each reservation allocates thousands of short-lived container objects (spans and their
attribute dicts, contexts, AMQP frames, SQL rows, log records). With CPython's default
thresholds (700, 10, 10) a young collection runs every 700 net allocations and a full one every
70,000, and every full collection walks all the objects start-up created: the imported
modules of FastAPI, SQLAlchemy, aio-pika and OpenTelemetry, some hundreds of thousands. The
collector does no useful work there (those objects live as long as the process), yet a profile
of the traced API under load put it at about 10 % of the process's CPU time.

:func:`tune_for_serving`, called by each service's entry point (``python -m api``,
:func:`workers.runtime.run`) once its modules are imported, before it serves; never on import,
and not by the in-process composition roots the tests drive:

- collects once, then ``gc.freeze()``: what survived the imports moves to a permanent
  generation that later collections never walk (what CPython's documentation suggests for
  long-lived processes);
- raises the young generation's threshold to :data:`YOUNG_THRESHOLD`: young collections run
  about 30 times less often, and fewer of the objects a request has in flight (its spans,
  frames, rows) are found alive by one and promoted to an older generation, only to die
  there. Reference cycles are still collected, in larger batches.
"""

import gc

# Net container allocations between two young collections (CPython's default is 700).
YOUNG_THRESHOLD = 20_000
# Young collections per middle one, and middle per full one (CPython's defaults: 10, 10).
OLDER_THRESHOLDS = (10, 10)


def tune_for_serving() -> None:
    """Freeze what the imports made and collect the young generation less often. Call once
    per process, before it serves."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
