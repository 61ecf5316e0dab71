"""Cluster benchmarks: what a Redis session store costs a replica, and what a second replica behind
nginx gives on this machine.

    python bench/cluster.py [--quick] [--json PATH] [--model NAME|PATH] [--bits N]

Model and inputs are ``bench/service.py``'s: the zoo's default model (or ``--model``), sessions
adapted 5-way 1-shot with ``--bits``-bit weights (default 8) on synthetic examples of 4,000 events,
queries of 4,000 events, pre-encoded. Redis is a ``redis-server`` of the benchmark's own on a
loopback port, in a temporary folder, without persistence; it needs ``redis-server`` and ``nginx``
on the PATH.

- Store cost, one process (one replica): two Engines of the same model, one on the in-memory
  store, one on the Redis store, each with one adapted session. Calls alternate between the two
  request by request (which one goes first alternating too), so background load hits both alike.
  ``redis_overhead_classify``: Classify p50 through Redis (the replica's cache warm: one round
  trip that checks the version and refreshes the expiry) / in memory; ``redis_overhead_adapt``:
  the same for Adapt (replacing the support set: a read, the inner loop, a commit that writes the
  session's bytes). ``store_get_*_p50_ms``: the store's ``get`` alone, the round trip itself.
  ``*_cpu``: the same ratios in this process's CPU time (``time.process_time``, every thread) per
  call, which leaves out the time a thread blocked on a socket waits to get a core back on a
  busy machine.
- Balancer: two ``spikeshot serve`` replicas (default settings: one model worker per core) on that
  Redis, and two nginx (``deploy/nginx/spikeshot.conf``, upstream rewritten) in front, one of
  replica A only, one of A and B. N client threads (16; 4 with ``--quick``) in this process, each
  on a channel and session of its own, each send a fixed number of Classify calls per round,
  without retries; rounds alternate between the balancers. Per balancer: throughput (answered
  calls / wall time), p50 and p99, calls sent, answered and failed (by status code), the calls
  each replica served (its metrics page), and the CPU seconds of each replica, nginx, Redis and
  the clients over the rounds (``/proc/PID/stat`` utime + stime), so ``replica_cpu_ms_per_call``
  says what a call costs a replica wherever it runs: a machine with a free core per replica
  would serve about ``1000 / replica_cpu_ms_per_call`` calls a second per replica.

This is a shared, noisy 2-core machine: only ratios measured within one run mean much (the run
records the load average at its start and end).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from spikeshot.events.atomic import write_atomic
from spikeshot.models.checkpoint import save
from spikeshot.service.config import ServerConfig
from spikeshot.service.engine import Engine
from spikeshot.service.executor import configure_torch
from spikeshot.service.inputs import EventInput
from spikeshot.v1 import spikeshot_pb2 as pb
from spikeshot.v1 import spikeshot_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parents[1]
NGINX_CONF = ROOT / "deploy" / "nginx" / "spikeshot.conf"
TARGETS = {"redis_overhead_classify": ("<=", 1.1), "redis_overhead_adapt": ("<=", 1.2)}
TICK = os.sysconf("SC_CLK_TCK")
SERVING = health_pb2.HealthCheckResponse.SERVING


def _service_bench():
    """``bench/service.py`` as a module (its ``Inputs`` and ``load_model``)."""
    spec = importlib.util.spec_from_file_location("bench_service", ROOT / "bench" / "service.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (nginx's workers)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                text = (entry / "stat").read_text()
                if int(text[text.rindex(")") + 2 :].split()[1]) == pid:
                    out.append(int(entry.name))
    return out


def percentiles(samples: list[float]) -> dict:
    ms = 1000.0 * np.asarray(samples)
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "n": len(ms),
    }


# -- processes ---------------------------------------------------------------------------------


class Processes:
    """Subprocesses started by the benchmark, stopped at the end: SIGTERM first (a SIGKILLed
    nginx master leaves its worker running), SIGKILL what has not exited 10 s later."""

    def __init__(self):
        self.started: list[subprocess.Popen] = []

    def start(self, args: list, **kw) -> subprocess.Popen:
        p = subprocess.Popen([str(a) for a in args], **kw)
        self.started.append(p)
        return p

    def close(self) -> None:
        for p in self.started:
            p.terminate()
        for p in self.started:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(30)


def start_redis(procs: Processes, folder: Path) -> tuple[subprocess.Popen, str]:
    import redis

    port = free_port()
    p = procs.start(
        [shutil.which("redis-server"), "--port", port, "--bind", "127.0.0.1", "--save", ""]
        + ["--appendonly", "no", "--dir", folder],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, socket_timeout=1)
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(redis.ConnectionError):
            if client.ping():
                break
        if time.monotonic() > deadline or p.poll() is not None:
            raise RuntimeError(f"redis-server did not start on port {port}")
        time.sleep(0.05)
    client.close()
    return p, f"redis://127.0.0.1:{port}/0"


def start_nginx(procs: Processes, folder: Path, listen: int, upstream: list[int]):
    """nginx with the deploy configuration, listening on ``listen``, in front of ``upstream``."""
    conf = NGINX_CONF.read_text()
    servers = "".join(f"server 127.0.0.1:{p} max_fails=1 fail_timeout=10s;\n" for p in upstream)
    conf = re.sub(r"( *server 127\.0\.0\.1:5005[1-3].*\n)+", servers, conf)
    conf = conf.replace("127.0.0.1:50050", f"127.0.0.1:{listen}")
    folder.mkdir(parents=True)
    (folder / "nginx.conf").write_text(conf)
    return procs.start(
        [shutil.which("nginx"), "-c", folder / "nginx.conf", "-p", folder, "-e", "stderr"]
        + ["-g", "daemon off;"]
    )


def wait_serving(address: str, timeout_s: float = 300) -> None:
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(grpc.RpcError):
                if health.Check(health_pb2.HealthCheckRequest(), timeout=2).status == SERVING:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{address} did not start serving")
            time.sleep(0.2)


def classifications(metrics_port: int) -> float:
    """Classify calls a replica answered (its metrics page)."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    pattern = r'^spikeshot_classifications_total\{method="Classify"\} (\S+)$'
    return float(re.search(pattern, text, re.M).group(1))


# -- the store's cost in one replica -----------------------------------------------------------


def bench_store(ckpt, inputs, url: str, classifies: int, adapts: int) -> dict:
    configs = {
        "memory": ServerConfig(port=0, metrics_port=0),
        "redis": ServerConfig(port=0, metrics_port=0, session_store=url),
    }
    configure_torch(configs["memory"].torch_thread_count)
    engines = {name: Engine([ckpt], c) for name, c in configs.items()}
    try:
        engines["memory"].warm_up()
        sids = {}
        for name, e in engines.items():
            sids[name] = e.create_session(owner="bench", weight_bits=inputs.bits).session_id
            e.adapt(sids[name], inputs.chunks(), owner="bench")

        def classify(name, i):
            query = EventInput(inputs.queries[i % len(inputs.queries)], inputs.width, inputs.height)
            engines[name].classify(sids[name], query, owner="bench")

        def adapt(name, i):
            engines[name].adapt(sids[name], inputs.chunks(), owner="bench", replace_support=True)

        def get(name, i):
            engines[name].sessions.get("bench", sids[name])

        out = {}
        for rpc, call, count in (
            ("get", get, 10 * classifies),
            ("classify", classify, classifies),
            ("adapt", adapt, adapts),
        ):
            for i in range(3):  # caches warm, one-time allocations done
                for name in engines:
                    call(name, i)
            samples = {name: [] for name in engines}
            cpu = {name: [] for name in engines}
            for i in range(count):
                for name in ("memory", "redis")[:: 1 if i % 2 else -1]:
                    start, start_cpu = time.perf_counter(), time.process_time()
                    call(name, i)
                    samples[name].append(time.perf_counter() - start)
                    cpu[name].append(time.process_time() - start_cpu)
            prefix = "store_get" if rpc == "get" else rpc
            for name, s in samples.items():
                for key, v in percentiles(s).items():
                    out[f"{prefix}_{name}_{key}"] = v
                out[f"{prefix}_{name}_cpu_p50_ms"] = 1000 * float(np.median(cpu[name]))
            if rpc != "get":
                out[f"redis_overhead_{rpc}"] = float(
                    np.median(samples["redis"]) / np.median(samples["memory"])
                )
                out[f"redis_overhead_{rpc}_cpu"] = float(
                    np.median(cpu["redis"]) / np.median(cpu["memory"])
                )
        info = engines["redis"].get_session(sids["redis"], owner="bench")
        out["session_examples"] = info.examples
    finally:
        for e in engines.values():
            e.close()
    return out


# -- replicas behind nginx ---------------------------------------------------------------------


def run_clients(calls, per_client: int) -> tuple[list[float], Counter, float]:
    """``per_client`` sequential calls ``calls[k](i)`` on each client thread ``k``, started
    together: latencies of those answered, failures by status code and message, wall time."""
    barrier = threading.Barrier(len(calls) + 1)

    def client(k: int):
        latencies, failed = [], Counter()
        barrier.wait()
        for i in range(per_client):
            start = time.perf_counter()
            try:
                calls[k](i)
            except grpc.RpcError as e:
                failed[f"{e.code().name}: {(e.details() or '')[:200]}"] += 1
            else:
                latencies.append(time.perf_counter() - start)
        return latencies, failed

    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(client, k) for k in range(len(calls))]
        barrier.wait()
        start = time.perf_counter()
        results = [f.result() for f in futures]
        wall = time.perf_counter() - start
    return [s for lat, _ in results for s in lat], sum((f for _, f in results), Counter()), wall


def bench_balancer(
    procs: Processes,
    folder: Path,
    model: Path,
    inputs,
    url: str,
    redis_pid: int,
    clients: int,
    per_client: int,
    rounds: int,
) -> dict:
    replicas = [(free_port(), free_port()) for _ in range(2)]
    servers = []
    for port, metrics_port in replicas:
        args = [Path(sys.executable).parent / "spikeshot", "serve", "--models", model]
        args += ["--port", port, "--metrics-port", metrics_port, "--session-store", url]
        servers.append(procs.start(args, stderr=subprocess.DEVNULL))
    front = {1: free_port(), 2: free_port()}
    nginx = {
        n: start_nginx(procs, folder / f"nginx{n}", front[n], [p for p, _ in replicas[:n]])
        for n in front
    }
    for port, _ in replicas:
        wait_serving(f"127.0.0.1:{port}")
    for n in front:
        wait_serving(f"127.0.0.1:{front[n]}", 30)
    nginx_pids = {n: [p.pid, *children(p.pid)] for n, p in nginx.items()}

    channels = {
        n: [grpc.insecure_channel(f"127.0.0.1:{front[n]}") for _ in range(clients)] for n in front
    }
    stubs = {n: [pb_grpc.SpikeShotStub(c) for c in cs] for n, cs in channels.items()}
    settings = pb.SessionSettings(weight_bits=inputs.bits)
    sids = []
    for k in range(clients):
        sid = stubs[2][k].CreateSession(pb.CreateSessionRequest(settings=settings)).session_id
        stubs[2][k].Adapt(inputs.adapt_requests(sid), timeout=60)
        sids.append(sid)
    # pre-built requests: the clients' own work is sending bytes
    requests = [[list(inputs.classify_requests(sid, i)) for i in range(5)] for sid in sids]
    calls = {
        n: [
            (lambda i, s=stubs[n][k], r=requests[k]: s.Classify(iter(r[i % 5]), timeout=60))
            for k in range(clients)
        ]
        for n in front
    }
    for n in front:  # warm: every replica has read every session
        run_clients(calls[n], 2)

    totals = {
        n: {
            "latencies": [],
            "failed": Counter(),
            "wall": 0.0,
            "cpu": Counter(),
            "served": Counter(),
        }
        for n in front
    }

    def cpu() -> dict:
        out = {f"replica{'AB'[j]}": cpu_seconds(p.pid) for j, p in enumerate(servers)}
        out["redis"] = cpu_seconds(redis_pid)
        out["clients"] = sum(os.times()[:2])
        for n, pids in nginx_pids.items():
            out[f"nginx{n}"] = sum(cpu_seconds(pid) for pid in pids)
        return out

    for r in range(rounds):
        for n in (1, 2)[:: 1 if r % 2 else -1]:
            before_cpu = cpu()
            before_served = [classifications(m) for _, m in replicas]
            latencies, failed, wall = run_clients(calls[n], per_client)
            after_cpu = cpu()
            t = totals[n]
            t["latencies"] += latencies
            t["failed"] += failed
            t["wall"] += wall
            for key in after_cpu:
                t["cpu"][key] += after_cpu[key] - before_cpu[key]
            for j, (_, m) in enumerate(replicas):
                t["served"][f"replica{'AB'[j]}"] += classifications(m) - before_served[j]
    for cs in channels.values():
        for c in cs:
            c.close()

    out = {}
    for n, t in totals.items():
        key = f"balancer_{n}r"
        sent = rounds * clients * per_client
        answered = len(t["latencies"])
        names = [f"replica{'AB'[j]}" for j in range(n)]
        replica_cpu = sum(t["cpu"][name] for name in names)
        out.update(
            {
                f"{key}_calls_sent": sent,
                f"{key}_calls_answered": answered,
                f"{key}_errors": dict(t["failed"]),
                f"{key}_nothing_lost": answered == sent and not t["failed"],
                f"{key}_throughput_calls_s": answered / t["wall"],
                **{f"{key}_{k}": v for k, v in percentiles(t["latencies"]).items()},
                f"{key}_served": {name: int(t["served"][name]) for name in names},
                f"{key}_wall_s": t["wall"],
                f"{key}_cpu_s": {
                    **{name: t["cpu"][name] for name in names},
                    "nginx": t["cpu"][f"nginx{n}"],
                    "redis": t["cpu"]["redis"],
                    "clients": t["cpu"]["clients"],
                },
                f"{key}_replica_cores": {name: t["cpu"][name] / t["wall"] for name in names},
                f"{key}_replica_cpu_ms_per_call": 1000 * replica_cpu / max(answered, 1),
            }
        )
    out["balancer_throughput_2r_over_1r"] = (
        out["balancer_2r_throughput_calls_s"] / out["balancer_1r_throughput_calls_s"]
    )
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="few repeats, 4 clients (under a minute)"
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=ROOT / "bench" / "results" / "cluster.json",
        help="where to write the results (default: %(default)s)",
    )
    parser.add_argument("--model", help="zoo name or checkpoint (default: the zoo's default)")
    parser.add_argument("--bits", type=int, default=8, help="weight bits of the sessions")
    args = parser.parse_args(argv)
    for binary in ("redis-server", "nginx"):
        if shutil.which(binary) is None:
            parser.error(f"{binary} is not on the PATH (Debian: apt-get install {binary})")
    classifies, adapts, clients, per_client, rounds = (
        (30, 8, 4, 5, 2) if args.quick else (400, 80, 16, 30, 4)
    )

    service = _service_bench()
    ckpt, source = service.load_model(args.model)
    inputs = service.Inputs(ckpt, args.bits)
    load_before = os.getloadavg()[0]
    procs = Processes()
    with tempfile.TemporaryDirectory(prefix="spikeshot-cluster-") as tmp:
        folder = Path(tmp)
        try:
            redis_process, url = start_redis(procs, folder)
            results = bench_store(ckpt, inputs, url, classifies, adapts)
            model = folder / "model" / f"{ckpt.name}.json"
            save(ckpt, model)
            results.update(
                bench_balancer(
                    procs,
                    folder,
                    model,
                    inputs,
                    url,
                    redis_process.pid,
                    clients,
                    per_client,
                    rounds,
                )
            )
        finally:
            procs.close()

    report = {
        "model": ckpt.name,
        "model_source": source,
        "weight_bits": args.bits,
        "quick": args.quick,
        "store_requests": {"classify": classifies, "adapt": adapts},
        "balancer": {
            "clients": clients,
            "calls_per_client_and_round": per_client,
            "rounds": rounds,
        },
        "load_average_1min": load_before,  # other work on the machine skews the figures
        "load_average_1min_end": os.getloadavg()[0],
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "grpc": grpc.__version__,
        **results,
        "targets": {k: f"{op} {v:g}" for k, (op, v) in TARGETS.items()},
        "meets_targets": {k: results[k] <= v for k, (_, v) in TARGETS.items()},
    }

    r = results
    print(f"model {ckpt.name} ({source}), {args.bits}-bit sessions, one replica in process")
    print(
        f"{'store':<8} {'get p50':>8} {'Classify p50':>13} {'p99':>8}"
        f" {'Adapt p50':>10} {'p99':>8} ms"
    )
    for name in ("memory", "redis"):
        print(
            f"{name:<8} {r[f'store_get_{name}_p50_ms']:>8.3f} {r[f'classify_{name}_p50_ms']:>13.2f}"
            f" {r[f'classify_{name}_p99_ms']:>8.2f} {r[f'adapt_{name}_p50_ms']:>10.2f}"
            f" {r[f'adapt_{name}_p99_ms']:>8.2f}"
        )
    for key, (op, target) in TARGETS.items():
        print(
            f"{key:<28} {r[key]:>8.3f}  target {op} {target:g}  (CPU time: {r[key + '_cpu']:.3f})"
        )
    print(
        f"\n{clients} clients through nginx, Classify, {rounds} rounds of {per_client} calls each"
    )
    print(
        f"{'replicas':>8} {'calls/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'answered':>10} {'errors':>7}"
        f" {'replica cores':>14} {'cpu ms/call':>12} {'nginx s':>8} {'redis s':>8}"
    )
    for n in (1, 2):
        k = f"balancer_{n}r"
        cores = "+".join(f"{v:.2f}" for v in r[f"{k}_replica_cores"].values())
        print(
            f"{n:>8} {r[f'{k}_throughput_calls_s']:>8.1f} {r[f'{k}_p50_ms']:>8.1f}"
            f" {r[f'{k}_p99_ms']:>8.1f} {r[f'{k}_calls_answered']:>4}/{r[f'{k}_calls_sent']:<5}"
            f" {sum(r[f'{k}_errors'].values()):>7} {cores:>14}"
            f" {r[f'{k}_replica_cpu_ms_per_call']:>12.2f} {r[f'{k}_cpu_s']['nginx']:>8.2f}"
            f" {r[f'{k}_cpu_s']['redis']:>8.2f}"
        )
    print(f"{'balancer_throughput_2r_over_1r':<32} {r['balancer_throughput_2r_over_1r']:>6.2f}")
    print(
        f"load average {load_before:.2f} at the start,"
        f" {report['load_average_1min_end']:.2f} at the end"
    )

    write_atomic(args.json, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")
    lost = [n for n in (1, 2) if not r[f"balancer_{n}r_nothing_lost"]]
    if lost:
        print(f"calls lost or failed through the balancer of {lost} replica(s)", file=sys.stderr)
        sys.exit(1)
    return report


if __name__ == "__main__":
    main()
