"""Load statistics: nearest-rank percentiles and one LoadResult for every load generator."""

from devtools.load_stats import LoadResult, percentile, summarize


def test_percentiles_are_observed_values_by_nearest_rank() -> None:
    latencies = [i / 1000 for i in range(1, 101)]  # 1..100 ms, ascending
    assert percentile(latencies, 50) == 0.050
    assert percentile(latencies, 99) == 0.099
    assert percentile([0.2], 99) == 0.2
    assert percentile([], 99) == 0.0


def test_summarize_and_the_round_trip_through_a_dict() -> None:
    latencies_ns = [3_000_000, 1_000_000, 2_000_000]
    result = summarize(latencies_ns, errors=1, elapsed_s=2.0, statuses={"201": 3, "Reset": 1})
    assert (result.completed, result.errors, result.requests) == (3, 1, 4)
    assert (result.p50_ms, result.max_ms, result.mean_ms) == (2.0, 3.0, 2.0)
    assert result.throughput == 1.5
    assert LoadResult.from_dict(result.to_dict()) == result
