"""Tables of a run's results against the issue's targets, as text and as Markdown."""

from __future__ import annotations

from typing import Any

from .routes import LABELS, ROUTES

RATIO_TARGETS = {"pay": 0.80, "status": 0.85, "webhook": 0.60}
P99_MS = 25.0
SERVER_RATIO = 2.0
SCALE_RATIO = 0.80
WAITER_RSS_MB = 400.0
WAITER_P99_MS = 100.0

Table = tuple[str, list[str], list[list[str]], list[str]]
BUSY_CORES = 0.1  # other processes' CPU worth a footnote
WORKERS = [2]  # worker processes of the run reported (set by tables())


def _uneven(measured: dict[str, dict[str, Any]]) -> list[str]:
    """A footnote for measurements whose connections one worker mostly held."""
    uneven = {
        name: result["connections_per_worker"]
        for name, result in measured.items()
        if WORKERS[0] > 1
        and len(result.get("connections_per_worker") or []) >= 1
        and result["connections_per_worker"][0] > 0.75 * sum(result["connections_per_worker"])
    }
    if not uneven:
        return []
    listed = ", ".join(
        f"{name} {'/'.join(str(count) for count in counts)}" for name, counts in uneven.items()
    )
    return [f"connections per worker process, unevenly spread, during: {listed}"]


def _by_round(part: dict[str, Any], first: str, second: str) -> list[str]:
    """A footnote: each round's ratio, measured minutes apart, to show the spread."""
    shown = []
    for route in ROUTES:
        top = part[first][route].get("rounds") or []
        bottom = part[second][route].get("rounds") or []
        if len(top) > 1 and len(top) == len(bottom):
            ratios = "/".join(f"{a / b:.2f}" for a, b in zip(top, bottom, strict=True) if b)
            shown.append(f"{route} {ratios}")
    return [f"ratio in each round: {'; '.join(shown)}"] if shown else []


def _busy(measured: dict[str, dict[str, Any]]) -> list[str]:
    """Footnotes for measurements other processes shared the machine with, or whose
    connections were spread unevenly over the workers."""
    return _other_load(measured) + _uneven(measured)


def _other_load(measured: dict[str, dict[str, Any]]) -> list[str]:
    busy = {
        name: result["other_cores"]
        for name, result in measured.items()
        if result.get("other_cores", 0) >= BUSY_CORES
    }
    if not busy:
        return []
    listed = ", ".join(f"{name} {cores:.2f}" for name, cores in busy.items())
    return [f"other processes used CPU (cores, average) during: {listed}"]


def p99_limit(twin_p99: float) -> float:
    """Under 25 ms, or within 1.5x of the twin's own p99 where the twin is slower than that."""
    return P99_MS if twin_p99 <= P99_MS else 1.5 * twin_p99


def _lat(result: dict[str, Any]) -> str:
    return f"{result['p50_ms']:.1f} / {result['p99_ms']:.1f}"


def _rate(value: float) -> str:
    return f"{value:,.0f}"


def _met(failures: list[str]) -> str:
    return "yes" if not failures else "NO: " + ", ".join(failures)


def _errors(result: dict[str, Any]) -> str:
    count = sum(result["errors"].values())
    return "" if not count else f" ({count} errors)"


def _side_by_side(
    route: str, first: dict[str, Any], second: dict[str, Any]
) -> tuple[float, list[str]]:
    """One route measured on two servers: the ratio of their rates, and the row's cells up to
    the target (route, both rates, ratio, both latencies)."""
    ratio = first["rate"] / second["rate"] if second["rate"] else 0.0
    return ratio, [
        LABELS[route],
        _rate(first["rate"]) + _errors(first),
        _rate(second["rate"]) + _errors(second),
        f"{ratio:.2f}",
        _lat(first),
        _lat(second),
    ]


def _pair_notes(part: dict[str, Any], first: str, second: str) -> list[str]:
    """The ratio in each round, and the footnotes on both servers' measurements."""
    measured = {
        f"{side} {route}": part[side][route] for side in (first, second) for route in ROUTES
    }
    return _by_round(part, first, second) + _busy(measured)


def routes_table(part: dict[str, Any]) -> Table:
    rows = []
    for route in ROUTES:
        bridge, twin = part["bridge"][route], part["twin"][route]
        ratio, cells = _side_by_side(route, bridge, twin)
        limit = p99_limit(twin["p99_ms"])
        failures = []
        if ratio < RATIO_TARGETS[route]:
            failures.append("ratio")
        if bridge["p99_ms"] >= limit:
            failures.append("p99")
        if sum(bridge["errors"].values()):
            failures.append("errors")
        target = f">= {RATIO_TARGETS[route]:.2f}, p99 < {limit:.0f} ms"
        rows.append([*cells, target, _met(failures)])
    headers = [
        "route",
        "bridge req/s",
        "twin req/s",
        "ratio",
        "bridge p50 / p99 ms",
        "twin p50 / p99 ms",
        "target",
        "met?",
    ]
    notes = _pair_notes(part, "bridge", "twin")
    sizes, check = part.get("sizes", {}), part.get("webhook_check", {})
    if sizes:
        notes.append(
            f"bytes: /pay page {sizes['bridge_page']:,} (twin {sizes['twin_page']:,}), status"
            f" answer {sizes['status_answer']}, webhook body {sizes['webhook_body']}"
        )
    if check:
        notes.append(
            f"webhooks: {check.get('requests', 0):,} answered, {check['stored']:,} stored, pool"
            f" of {check['pool']:,} never reused ({check['wrapped']} wraps)"
            + (
                f"; the log takes {check['bytes_per_webhook']:,} bytes per webhook"
                if check.get("bytes_per_webhook")
                else ""
            )
        )
    return (
        "The bridge and its bare twin (same server, same workers)",
        headers,
        rows,
        notes,
    )


def servers_table(part: dict[str, Any]) -> Table:
    rows = []
    for route in ROUTES:
        ratio, cells = _side_by_side(route, part["uvicorn"][route], part["hypercorn"][route])
        rows.append(
            [*cells, f">= {SERVER_RATIO:.1f}", _met([] if ratio >= SERVER_RATIO else ["ratio"])]
        )
    headers = [
        "route",
        "serve (uvicorn) req/s",
        "hypercorn req/s",
        "ratio",
        "uvicorn p50 / p99 ms",
        "hypercorn p50 / p99 ms",
        "target",
        "met?",
    ]
    notes = _pair_notes(part, "uvicorn", "hypercorn")
    return "The production server against Quart's default Hypercorn", headers, rows, notes


def scale_table(part: dict[str, Any]) -> Table:
    rows = []
    for engine, result in part.items():
        for size in ("small", "large"):
            measured = result[size]
            stored = measured["size"]
            per_session = stored["table_bytes"] / stored["sessions"] if stored["sessions"] else 0
            large = size == "large"
            rows.append(
                [
                    engine,
                    f"{measured['sessions']:,}",
                    _rate(measured["rate"]) + _errors(measured),
                    _lat(measured),
                    f"{result['ratio']:.2f}" if large else "1.00",
                    f"{per_session:,.0f}",
                    f">= {SCALE_RATIO:.2f}" if large else "",
                    _met([] if result["ratio"] >= SCALE_RATIO else ["ratio"]) if large else "",
                ]
            )
    headers = [
        "engine",
        "sessions",
        "status req/s",
        "p50 / p99 ms",
        "ratio to 1,000",
        "bytes / session",
        "target",
        "met?",
    ]
    measured = {
        f"{engine} {result[size]['sessions']:,}": result[size]
        for engine, result in part.items()
        for size in ("small", "large")
    }
    return "Status lookups by sessions stored", headers, rows, _busy(measured)


def waiters_table(part: dict[str, Any]) -> Table:
    delay = part["delay_ms"]
    rss_mb = part["rss_bytes"] / 1e6
    failures = []
    if rss_mb >= WAITER_RSS_MB:
        failures.append("memory")
    if delay["p99"] >= WAITER_P99_MS:
        failures.append("p99")
    if part["wrong"]:
        failures.append(f"{part['wrong']} wrong answers")
    rows = [
        [
            f"{part['waiters']:,} (server counts {part['waiting_reported']})",
            f"{rss_mb:,.0f} MB (idle {part['rss_before_bytes'] / 1e6:,.0f})",
            f"{part['woken']:,}, {part['webhook_concurrency']} webhooks in flight",
            f"{delay['min']:.1f} / {delay['p50']:.1f} / {delay['p99']:.1f} / {delay['max']:.1f}",
            f"< {WAITER_RSS_MB:.0f} MB, p99 < {WAITER_P99_MS:.0f} ms",
            _met(failures),
        ]
    ]
    headers = [
        "long-polls held",
        "server RSS",
        "woken by a webhook",
        "webhook 200 to answer min / p50 / p99 / max ms",
        "target",
        "met?",
    ]
    notes = _busy({"waiters": part})
    if delay["min"] < 0:
        notes.append("below zero: a waiter's answer left before the webhook's own 200")
    return "Long-poll waiters on one instance (one worker)", headers, rows, notes


def relay_table(part: dict[str, Any]) -> Table:
    """The webhook route with the relay on and off; how far behind the partner heard."""
    off, on = part["off"], part["on"]
    ratio = on["rate"] / off["rate"] if off["rate"] else 0.0
    kept = [
        check
        for check in part["checks"]["on"]
        if check.get("requests") == on["requests"] and check.get("delivered")
    ]
    relayed = kept[0] if kept else {}
    rows = [
        [
            "off",
            _rate(off["rate"]) + _errors(off),
            _lat(off),
            "1.00",
            "",
            "",
        ],
        [
            "on (a partner answering 200 at once)",
            _rate(on["rate"]) + _errors(on),
            _lat(on),
            f"{ratio:.2f}",
            f"{relayed.get('relay_rate', 0):,.0f}" if relayed else "",
            f"{relayed['lag_p50_ms']:,.0f} / {relayed['lag_p99_ms']:,.0f}" if relayed else "",
        ],
    ]
    headers = [
        "relay",
        "webhook req/s",
        "p50 / p99 ms",
        "ratio to off",
        "relayed /s while receiving",
        "receipt to partner's 200 p50 / p99 ms",
    ]
    notes = []
    top, bottom = on.get("rounds") or [], off.get("rounds") or []
    if len(top) > 1 and len(top) == len(bottom):
        ratios = "/".join(f"{a / b:.2f}" for a, b in zip(top, bottom, strict=True) if b)
        notes.append(f"ratio in each round: {ratios}")
    if relayed:
        notes.append(
            f"the median round's {relayed['deliveries']:,} deliveries: "
            f"{relayed['delivered_while_receiving']:,} reached the partner while wrk sent,"
            f" the rest within {relayed['backlog_cleared_s']} s after the last webhook;"
            f" {relayed['retried']} retried"
        )
    received, recorded = part.get("partner_received"), part.get("deliveries_recorded")
    if received is not None:
        notes.append(
            f"the partner got {received:,} POSTs for {recorded:,} deliveries recorded"
            " (warm-up included)"
        )
    notes += _busy({"relay off": off, "relay on": on})
    title = f"The webhook route with the relay on and off ({part.get('engine', '')})"
    return title, headers, rows, notes


def text(table: Table) -> str:
    title, headers, rows, notes = table
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    line = "  ".join("-" * width for width in widths)
    out = [title, line, "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    out += [f"  ({note})" for note in notes]
    return "\n".join(out)


def markdown(table: Table) -> str:
    title, headers, rows, notes = table
    out = [
        f"**{title}**",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    out += [f"\n_{note}_" for note in notes]
    return "\n".join(out)


def tables(results: dict[str, Any], workers: int = 2) -> list[Table]:
    WORKERS[0] = workers
    found = []
    if "routes" in results:
        found.append(routes_table(results["routes"]))
    if "servers" in results:
        found.append(servers_table(results["servers"]))
    if "scale" in results:
        found.append(scale_table(results["scale"]))
    if "waiters" in results:
        found.append(waiters_table(results["waiters"]))
    if "relay" in results:
        found.append(relay_table(results["relay"]))
    return found
