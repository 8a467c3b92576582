"""Medians, ratios against the reference variants and the target verdicts."""

import statistics

# Targets, as ratios between variants measured in the same invocation.
MIN_E2E_VS_POSTFIX = 4.0
MIN_E2E_VS_DIRECT = 0.40
MAX_RSS_VS_POSTFIX_PSS = 0.20
MAX_IDLE_TLS_SESSION_KIB = 64.0
IDLE_SESSIONS_REQUIRED = 10000


def spread(values):
    """Return (median, minimum, maximum) or None for no values."""
    values = [value for value in values if value is not None]
    if not values:
        return None
    return statistics.median(values), min(values), max(values)


def format_spread(values, digits=0, scale=1.0):
    figures = spread([None if value is None else value * scale for value in values])
    if figures is None:
        return "-"
    median, low, high = figures
    return f"{median:.{digits}f} ({low:.{digits}f}–{high:.{digits}f})"


def median_of(results, key):
    figures = spread([result.get(key) for result in results if result["ok"]])
    return figures[0] if figures else None


def throughput_table(results, scenarios, variants):
    lines = [
        "| scenario | variant | runs ok | injection msg/s | end-to-end msg/s | relay CPU ms/msg | peak RSS MiB | peak PSS MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for scenario in scenarios:
        for variant in variants:
            runs = [r for r in results if r["scenario"] == scenario and r["variant"] == variant]
            if not runs:
                continue
            good = [r for r in runs if r["ok"]]
            lines.append(
                f"| {scenario} | {variant} | {len(good)}/{len(runs)} "
                f"| {format_spread([r.get('injection_rate') for r in good])} "
                f"| {format_spread([r.get('end_to_end_rate') for r in good])} "
                f"| {format_spread([r.get('cpu_ms_per_message') for r in good], 2)} "
                f"| {format_spread([r.get('peak_rss_kib') for r in good], 1, 1 / 1024)} "
                f"| {format_spread([r.get('peak_pss_kib') for r in good], 1, 1 / 1024)} |"
            )
    return "\n".join(lines)


def handshake_table(results):
    lines = ["| server | handshakes/s | server CPU ms/handshake | result |", "|---|---|---|---|"]
    for result in results:
        rate = result.get("handshakes_per_second")
        cpu = result.get("server_cpu_ms_per_handshake")
        lines.append(
            f"| {result['variant']} | {'-' if rate is None else f'{rate:.0f}'} "
            f"| {'-' if cpu is None else f'{cpu:.2f}'} | {'ok' if result['ok'] else result['error']} |"
        )
    return "\n".join(lines)


def idle_table(results):
    lines = [
        "| sessions | TLS | opened | seconds to open | RSS KiB/session | PSS KiB/session | relay RSS MiB | result |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        def number(key, digits=1, scale=1.0):
            value = result.get(key)
            return "-" if value is None else f"{value * scale:.{digits}f}"

        lines.append(
            f"| {result['connections']} | {'yes' if result['tls'] else 'no'} | {result.get('opened', '-')} "
            f"| {number('open_seconds')} | {number('rss_kib_per_session')} | {number('pss_kib_per_session')} "
            f"| {number('relay_rss_kib', 1, 1 / 1024)} | {'ok' if result['ok'] else result['error']} |"
        )
    return "\n".join(lines)


def verdicts(throughput, idle):
    """Return (target, measured, met) rows; met is None when not measured."""
    rows = []

    def ratio(scenario, key, numerator, denominator):
        top = median_of([r for r in throughput if r["scenario"] == scenario and r["variant"] == numerator], key)
        bottom = median_of([r for r in throughput if r["scenario"] == scenario and r["variant"] == denominator], key)
        if top is None or bottom in (None, 0):
            return None
        return top / bottom

    value = ratio("plain", "end_to_end_rate", "tlsrelay", "postfix")
    rows.append((f"plain end-to-end ≥ {MIN_E2E_VS_POSTFIX:.0f}× Postfix",
                 "-" if value is None else f"{value:.2f}×", None if value is None else value >= MIN_E2E_VS_POSTFIX))
    value = ratio("plain", "end_to_end_rate", "tlsrelay", "direct")
    rows.append((f"plain end-to-end ≥ {MIN_E2E_VS_DIRECT:.0%} of direct",
                 "-" if value is None else f"{value:.1%}", None if value is None else value >= MIN_E2E_VS_DIRECT))
    value = ratio("tls-out", "end_to_end_rate", "tlsrelay", "postfix")
    rows.append((f"outbound-TLS end-to-end ≥ {MIN_E2E_VS_POSTFIX:.0f}× Postfix",
                 "-" if value is None else f"{value:.2f}×", None if value is None else value >= MIN_E2E_VS_POSTFIX))

    relay_rss = median_of([r for r in throughput if r["scenario"] == "plain" and r["variant"] == "tlsrelay"],
                          "peak_rss_kib")
    postfix_pss = median_of([r for r in throughput if r["scenario"] == "plain" and r["variant"] == "postfix"],
                            "peak_pss_kib")
    value = relay_rss / postfix_pss if relay_rss is not None and postfix_pss else None
    rows.append((f"peak RSS < {MAX_RSS_VS_POSTFIX_PSS:.0%} of Postfix PSS (plain load)",
                 "-" if value is None else f"{value:.1%} ({relay_rss / 1024:.1f} vs {postfix_pss / 1024:.1f} MiB)",
                 None if value is None else value < MAX_RSS_VS_POSTFIX_PSS))

    tls_idle = [r for r in idle if r["tls"] and r["ok"] and r.get("rss_kib_per_session") is not None]
    if tls_idle:
        worst = max(r["rss_kib_per_session"] for r in tls_idle)
        rows.append((f"idle TLS session ≤ {MAX_IDLE_TLS_SESSION_KIB:.0f} KiB", f"{worst:.1f} KiB (largest)",
                     worst <= MAX_IDLE_TLS_SESSION_KIB))
    else:
        rows.append((f"idle TLS session ≤ {MAX_IDLE_TLS_SESSION_KIB:.0f} KiB", "-", None))
    big = [r for r in idle if r["connections"] >= IDLE_SESSIONS_REQUIRED]
    rows.append((f"{IDLE_SESSIONS_REQUIRED:,} idle sessions held without errors",
                 ", ".join(f"{'TLS' if r['tls'] else 'plain'}: {'ok' if r['ok'] else r['error']}" for r in big) or "-",
                 all(r["ok"] for r in big) if big else None))
    return rows


def verdict_table(rows):
    lines = ["| target | measured | met |", "|---|---|---|"]
    for target, measured, met in rows:
        lines.append(f"| {target} | {measured} | {'-' if met is None else ('yes' if met else 'no')} |")
    return "\n".join(lines)
