"""Soak: N clients mixing CreateSession, Adapt, Classify and DeleteSession against one
``spikeshot serve`` for M minutes, with latency percentiles and the server's resident memory per
minute.

    python bench/soak.py [--clients 16] [--minutes 10] [--model NAME|PATH] [--quick] [--json PATH]

The server runs the zoo's default model (or ``--model``) in a process of its own on loopback, with
its default settings (8-bit sessions). Each client, on a channel of its own, loops until the time is
up: create a 5-way session, adapt it on five synthetic examples of 4,000 events, classify five
queries, delete it. Every call's latency is kept with the minute it ended in; the server's resident
set size (``VmRSS``) is read every second, and a minute's figure is the median of its readings
(one reading swings by the transient memory of the calls in flight: +-30 MiB on the mid-width
model).

The first minute is the warm-up. It fails (exit status 1) when the last minute's resident memory
is more than 5% above the minute after the warm-up's, or when the last minute's Classify p99 is
more than twice the first minute's: on a quiet machine either means the service leaks or degrades.
``--quick``: 4 clients, 4 intervals of 10 s, the first two the warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from spikeshot.events.atomic import write_atomic

ROOT = Path(__file__).resolve().parents[1]
WAYS, EVENTS = 5, 4000
RSS_GROWTH_LIMIT, P99_DRIFT_LIMIT = 1.05, 2.0
RSS_EVERY_S = 1.0


def synthetic(width: int, height: int, window_us: int, seed: int) -> list[np.ndarray]:
    """One recording per class: events around a class's own column of the sensor."""
    from spikeshot.events.array import make_events

    rng = np.random.default_rng(seed)
    out = []
    for c in range(WAYS):
        x = np.clip(rng.normal((c + 1) * width / (WAYS + 1), width / 10, EVENTS), 0, width - 1)
        y = np.clip(rng.normal(height / 2, height / 4, EVENTS), 0, height - 1)
        t = np.sort(rng.integers(0, window_us, EVENTS))
        out.append(make_events(t, x.astype(int), y.astype(int), rng.integers(0, 2, EVENTS)))
    return out


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def start_server(model: str | None) -> tuple[subprocess.Popen, str]:
    """``spikeshot serve`` on a free loopback port; returns the process and its address once it
    answers."""
    import socket

    from spikeshot.clients import Client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [sys.executable, "-m", "spikeshot.service.cli", "serve", "--port", str(port)]
    args += ["--metrics-port", "0"] + (["--model", model] if model else [])
    server = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited: {server.stderr.read()[-2000:]}")
        try:
            with Client(address, retries=0, timeout=2) as client:
                client.models()
            return server, address
        except Exception:  # not listening yet
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("the server did not answer within 120 s")


def client_loop(address: str, stop: float, interval: float, start: float, log: list, seed: int):
    from spikeshot.clients import Client

    with Client(address, timeout=60) as client:
        model = client.models()[0]
        sensor = (model.sensor_width, model.sensor_height)
        examples = synthetic(*sensor, model.window_us, seed)
        queries = synthetic(*sensor, model.window_us, seed + 1000)

        def timed(op, fn):
            t0 = time.monotonic()
            result = fn()
            log.append((int((time.monotonic() - start) // interval), op, time.monotonic() - t0))
            return result

        while time.monotonic() < stop:
            session = timed("CreateSession", lambda: client.create_session(ways=WAYS))
            for c, ev in enumerate(examples):
                session.add_support(f"class{c}", ev, sensor=sensor)
            timed("Adapt", session.adapt)
            for q in queries:
                timed("Classify", lambda q=q, s=session: s.classify(q, sensor=sensor))
            timed("DeleteSession", session.delete)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--model", help="a zoo name or checkpoint (default: the zoo's default)")
    parser.add_argument(
        "--quick", action="store_true", help="4 clients, 4 intervals of 10 s (20 s of warm-up)"
    )
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    args = parser.parse_args(argv)
    clients, intervals, interval, warmup = (
        (4, 4, 10.0, 2) if args.quick else (args.clients, args.minutes, 60.0, 1)
    )
    if intervals <= warmup:
        parser.error(f"--minutes must be more than the {warmup} of the warm-up")

    server, address = start_server(args.model)
    log: list[tuple[int, str, float]] = []
    readings: list[list[float]] = [[] for _ in range(intervals)]
    try:
        start = time.monotonic()
        stop = start + intervals * interval
        threads = [
            threading.Thread(target=client_loop, args=(address, stop, interval, start, log, i))
            for i in range(clients)
        ]
        for t in threads:
            t.start()
        for k in range(intervals):
            end = start + (k + 1) * interval
            while (now := time.monotonic()) < end:
                time.sleep(min(RSS_EVERY_S, end - now))
                readings[k].append(rss_mib(server.pid))
            print(
                f"interval {k + 1}/{intervals}: server RSS median {np.median(readings[k]):.0f} "
                f"MiB, max {max(readings[k]):.0f}",
                flush=True,
            )
        for t in threads:
            t.join()
    finally:
        server.terminate()
        server.wait(60)

    rows = []
    for k in range(intervals):
        row = {
            "interval": k + 1,
            "rss_mib": round(float(np.median(readings[k])), 1),
            "rss_max_mib": round(max(readings[k]), 1),
        }
        for op in ("Adapt", "Classify"):
            ms = [1000 * s for i, o, s in log if i == k and o == op]
            row[op] = {
                "calls": len(ms),
                "p50_ms": round(float(np.percentile(ms, 50)), 1) if ms else None,
                "p99_ms": round(float(np.percentile(ms, 99)), 1) if ms else None,
            }
        rows.append(row)
    rss_growth = rows[-1]["rss_mib"] / rows[warmup]["rss_mib"]
    p99_drift = rows[-1]["Classify"]["p99_ms"] / rows[0]["Classify"]["p99_ms"]
    passed = rss_growth <= RSS_GROWTH_LIMIT and p99_drift <= P99_DRIFT_LIMIT
    unit = "s" if args.quick else "min"
    print(
        f"\n| {unit} | Adapt calls | Adapt p50 / p99 (ms) | Classify calls | Classify p50 / p99 "
        "(ms) | server RSS (MiB) |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        a, c = r["Adapt"], r["Classify"]
        end = r["interval"] * (interval if args.quick else 1)
        print(
            f"| {end:g} | {a['calls']} | {a['p50_ms']} / {a['p99_ms']} | {c['calls']} | "
            f"{c['p50_ms']} / {c['p99_ms']} | {r['rss_mib']:.0f} |"
        )
    print(
        f"\nRSS (medians) last / first after the warm-up x{rss_growth:.3f} (limit "
        f"{RSS_GROWTH_LIMIT}); Classify p99 last / "
        f"first x{p99_drift:.2f} (limit {P99_DRIFT_LIMIT}): {'pass' if passed else 'FAIL'}"
    )
    report = {
        "clients": clients,
        "intervals": intervals,
        "interval_s": interval,
        "quick": args.quick,
        "warmup_intervals": warmup,
        "rss_every_s": RSS_EVERY_S,
        "rows": rows,
        "rss_growth_after_warmup": round(rss_growth, 4),
        "classify_p99_drift": round(p99_drift, 3),
        "passed": passed,
        "load_average_1min": os.getloadavg()[0],
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
    write_atomic(args.json, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
