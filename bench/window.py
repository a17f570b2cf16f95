"""The measured window of a load run; what it measured is a
:class:`devtools.load_stats.LoadResult`."""

from devtools.load_stats import LoadResult, summarize


class Window:
    """The measured window of a load run: warm-up first, then ``duration`` seconds.

    Workers record a completion only when it falls inside the window, so throughput is
    completions in the window over its length, whatever was in flight at its edges.
    """

    def __init__(self, start: float, duration: float) -> None:
        self.start = start
        self.end = start + duration
        self.latencies_ns: list[int] = []
        self.errors = 0
        self.statuses: dict[str, int] = {}

    def inside(self, t: float) -> bool:
        return self.start <= t < self.end

    def record(self, t: float, latency_ns: int, status: str, ok: bool) -> None:
        if not self.inside(t):
            return
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if ok:
            self.latencies_ns.append(latency_ns)
        else:
            self.errors += 1

    def result(self) -> LoadResult:
        return summarize(
            self.latencies_ns,
            errors=self.errors,
            elapsed_s=self.end - self.start,
            statuses=self.statuses,
        )
