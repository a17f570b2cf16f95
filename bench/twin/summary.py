"""The measurement's report: a Markdown table per level, and the ratios the bench will quote."""

from typing import Any


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| variant | db | conns | req/s | p50 ms | p99 ms | errors | CPU ms/req "
        "(api/credit-check/fulfilment/broker/receiver) | conserved | fulfilled | spans dropped |",
        "|---|---|--:|--:|--:|--:|--:|--:|---|---|--:|",
    ]
    for r in results:
        a, spans = r["audit"], r["spans"]
        for level in r["levels"]:
            cpu = level["cpu_ms_per_request"]
            roles = ("twin-api", "twin-credit-check", "twin-fulfilment", "broker", "receiver")
            lines.append(
                f"| {r['variant']} | {r['db']} | {level['connections']} | "
                f"{level['throughput_rps']:.0f} | {level['p50_ms']:.1f} | {level['p99_ms']:.1f} | "
                f"{level['errors']} | {'/'.join(f'{cpu.get(k, 0):.2f}' for k in roles)} | "
                f"{a['conserved']} | {a['all_fulfilled']} | "
                f"{'-' if spans is None else spans['dropped']} |"
            )
    return "\n".join(lines) + "\n" + "".join(f"\n{k}: {v}" for k, v in ratios(results).items())


def ratios(results: list[dict[str, Any]]) -> dict[str, float]:
    """Scaling from the fewest to the most connections, and traced over untraced, per level."""
    rps = {
        (r["variant"], level["connections"]): level["throughput_rps"]
        for r in results
        for level in r["levels"]
    }
    out = {}
    for variant in {v for v, _ in rps}:
        conns = sorted(c for v, c in rps if v == variant)
        if len(conns) > 1 and rps[(variant, conns[0])]:
            key = f"{variant}_scaling_{conns[-1]}_over_{conns[0]}"
            out[key] = round(rps[(variant, conns[-1])] / rps[(variant, conns[0])], 2)
    for (variant, conns), value in rps.items():
        untraced = rps.get(("untraced", conns))
        if variant == "traced" and untraced:
            out[f"traced_over_untraced_{conns}"] = round(value / untraced, 2)
    return out
