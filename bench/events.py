"""Event-pipeline throughput: file readers (ours, numba and numpy, against independent decoders),
binning (ours and tonic's ToFrame), the wire codec, and the server's decode + validate + bin path
(and one query's path from this sensor to a 34x34 model card: the fused kernel against numpy, and
on packed chunks; a stream's ten windows through ``Windower``, fused and numpy), all on one pinned
core.

    python bench/events.py [--quick] [--json PATH]

Synthetic events: uniform over a 346x260 sensor and one second, time-sorted (10 million, or 1
million with --quick). Binning: the full sensor in 10 bins of 100 ms, float32 frames for ours and
tonic's int16 frames, checked equal before timing. Readers run on the real recordings in
``shared/realdata`` beside the repository (skipped when absent): ``formats.read`` (numba kernels),
the same reader on its numpy reference path, and each independent decoder installed here (the
``evt3`` package, ``expelliarmus``, ``aedat``, tonic's N-MNIST reader), each reading the whole
file into one array, in turns. Each figure is the median of repeated runs after one warm-up (a
run repeats a short call until it lasts 20 ms), in million events per second (Mev/s).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import tonic

from spikeshot.events.array import Limits, make_events, validate
from spikeshot.events.binning import FrameGeometry, bin_events
from spikeshot.events.codec import PackedEvents, decode, decode_columns, encode, pack
from spikeshot.service.inputs import EventInput, query
from spikeshot.service.windows import Windower

ROOT = Path(__file__).resolve().parents[1]
REALDATA = ROOT.parent / "shared" / "realdata"
WIDTH, HEIGHT, DURATION_US, BINS = 346, 260, 1_000_000, 10
TARGETS = {"bin_speedup_vs_tonic": 3.0, "pipeline_mev_s": 60.0}
READER_TARGET_MEV_S = 50.0  # every reader on every real recording
RUN_SECONDS = 0.02


def pin_one_core() -> int | None:
    """Pin this process, and so every thread it runs, to one CPU (the lowest allowed); None where
    the OS cannot."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def interleaved_seconds(fns: dict, repeats: int) -> dict[str, float]:
    """Median wall time of one call of each of ``fns`` (name -> function) over ``repeats`` rounds,
    after one warm-up call each. A round runs every function in turn, so that other load on the
    machine falls on them alike, calling each as many times as fit in ``RUN_SECONDS``."""
    calls = {}
    for name, fn in fns.items():
        start = time.perf_counter()
        fn()
        calls[name] = max(1, int(RUN_SECONDS / (time.perf_counter() - start)))
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            times[name].append((time.perf_counter() - start) / calls[name])
    return {name: float(np.median(t)) for name, t in times.items()}


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of one ``fn()`` (see ``interleaved_seconds``)."""
    return interleaved_seconds({"": fn}, repeats)[""]


def synthetic_events(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return make_events(
        np.sort(rng.integers(0, DURATION_US, n)),
        rng.integers(0, WIDTH, n),
        rng.integers(0, HEIGHT, n),
        rng.integers(0, 2, n),
    )


def _installed(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def independent_decoders(format: str) -> dict:
    """The independent decoders of ``format`` installed here: name -> read(path)."""
    evt3, expelliarmus, aedat = (_installed(n) for n in ("evt3", "expelliarmus", "aedat"))
    found = {}
    if format == "evt3" and evt3 is not None:
        found["evt3"] = lambda path: evt3.decode_file(str(path))
    if format in ("evt3", "evt2", "dat") and expelliarmus is not None:
        found["expelliarmus"] = lambda path: expelliarmus.Wizard(format, path).read()
    if format == "aedat4" and aedat is not None:
        found["aedat"] = lambda path: np.concatenate(
            [p["events"] for p in aedat.Decoder(str(path)) if "events" in p]
        )
    if format == "nmnist":
        dtype = tonic.datasets.NMNIST.dtype
        found["tonic"] = lambda path: tonic.io.read_mnist_file(str(path), dtype=dtype)
    return found


def bench_readers(repeats: int) -> tuple[dict, dict]:
    """The readers' figures and their targets. On each real recording: the Mev/s of
    ``formats.read`` (format detected), of the same with the format named (``_named_``, as the
    numpy path and the other decoders are called), of the same reader's numpy reference path and
    of each independent decoder, and our speed over each of theirs (``_vs_``). Also the first
    read's seconds (numba's import and kernel load, or compile) and our Mev/s over all
    recordings together."""
    if not REALDATA.is_dir():
        return {}, {}
    from spikeshot.events import formats
    from spikeshot.events.recording import collect

    paths = sorted(p for p in REALDATA.iterdir() if p.suffix not in (".md", ".json"))
    start = time.perf_counter()
    formats.read(paths[0])
    out = {"reader_first_call_s": time.perf_counter() - start}
    targets = {}
    total_events, total_seconds = 0, 0.0
    for path in paths:
        format = formats.detect_format(path)
        module = importlib.import_module(f"spikeshot.events.{format}")
        n = len(formats.read(path).events)
        runs = {
            "": lambda path=path: formats.read(path),
            "named": lambda path=path, format=format: formats.read(path, format),
            "numpy": lambda path=path, module=module: collect(module.source(path, native=False)),
        }
        for name, read in independent_decoders(format).items():
            runs[name] = lambda path=path, read=read: read(path)
        seconds = interleaved_seconds(runs, repeats)
        key = f"read_{path.name}"
        for name, s in seconds.items():
            out[f"{key}_{name}_mev_s" if name else f"{key}_mev_s"] = n / s / 1e6
        for name in (k for k in seconds if k not in ("", "named")):  # ours over each other path
            out[f"{key}_vs_{name}"] = seconds[name] / seconds[""]
            if name != "numpy":
                targets[f"{key}_vs_{name}"] = 1.0
        targets[f"{key}_mev_s"] = READER_TARGET_MEV_S
        total_events, total_seconds = total_events + n, total_seconds + seconds[""]
    out["read_all_mev_s"] = total_events / total_seconds / 1e6
    return out, targets


def bench_events(n: int, repeats: int) -> dict:
    events = synthetic_events(n)
    geometry = FrameGeometry(
        sensor_width=WIDTH, sensor_height=HEIGHT, bins=BINS, window_us=DURATION_US
    )
    t0 = int(events["t"][0])
    to_frame = tonic.transforms.ToFrame(
        sensor_size=(WIDTH, HEIGHT, 2),
        time_window=geometry.bin_us,
        start_time=t0,
        end_time=t0 + DURATION_US,
    )
    np.testing.assert_array_equal(bin_events(events, geometry), to_frame(events))
    encoded = encode(events)
    limits = Limits(width=WIDTH, height=HEIGHT)

    def pipeline():
        bin_events(validate(decode_columns(*encoded), limits), geometry)

    # The server's path for one query from this 346x260 sensor to a 34x34 card (Glyphs'), in
    # chunks of 100,000 events: the fused kernel and the numpy reference.
    card = FrameGeometry(
        sensor_width=34,
        sensor_height=34,
        crop=(1, 1, 32, 32),
        downsample=2,
        bins=BINS,
        window_us=DURATION_US,
    )
    pieces = [events[i : i + 100_000] for i in range(0, n, 100_000)]
    chunks = [EventInput(encode(p), WIDTH, HEIGHT) for p in pieces]
    packed = [
        EventInput(PackedEvents(o, dt.tobytes(), xyp.tobytes()), WIDTH, HEIGHT)
        for o, dt, xyp in map(pack, pieces)
    ]
    fused = query(chunks, card, n, native=True)
    np.testing.assert_array_equal(fused.frames, query(chunks, card, n, native=False).frames)
    np.testing.assert_array_equal(fused.frames, query(packed, card, n, native=True).frames)

    def stream(native: bool) -> list:  # ten windows of 100 ms, each a query's worth of work
        windower = Windower(card, n, window_us=DURATION_US // 10, native=native)
        return [w for c in chunks for w in windower.push(c)] + windower.finish()

    seconds = {
        "ingest_fused": median_seconds(lambda: query(chunks, card, n, native=True), repeats),
        "ingest_numpy": median_seconds(lambda: query(chunks, card, n, native=False), repeats),
        "ingest_packed": median_seconds(lambda: query(packed, card, n, native=True), repeats),
        "stream_fused": median_seconds(lambda: stream(True), repeats),
        "stream_numpy": median_seconds(lambda: stream(False), repeats),
        "bin": median_seconds(lambda: bin_events(events, geometry), repeats),
        "tonic_bin": median_seconds(lambda: to_frame(events), max(1, repeats // 2)),
        "encode": median_seconds(lambda: encode(events), repeats),
        "decode": median_seconds(lambda: decode(*encoded), repeats),
        "validate": median_seconds(lambda: validate(events, limits), repeats),
        "pipeline": median_seconds(pipeline, repeats),
    }
    out = {f"{name}_mev_s": n / s / 1e6 for name, s in seconds.items()}
    out["bin_speedup_vs_tonic"] = seconds["tonic_bin"] / seconds["bin"]
    out["ingest_fused_speedup"] = seconds["ingest_numpy"] / seconds["ingest_fused"]
    out["stream_fused_speedup"] = seconds["stream_numpy"] / seconds["stream_fused"]
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1M events, fewer repeats (< 30 s)")
    parser.add_argument(
        "--json",
        type=Path,
        default=ROOT / "bench" / "results" / "events.json",
        help="where to write the results (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    n, repeats = (1_000_000, 3) if args.quick else (10_000_000, 7)
    cpu = pin_one_core()

    readers, targets = bench_readers(3 * repeats)  # short runs on a shared machine: more of them
    results = {**readers, **bench_events(n, repeats)}
    targets.update(TARGETS)
    report = {
        "n_events": n,
        "sensor": [WIDTH, HEIGHT],
        "bins": BINS,
        "quick": args.quick,
        "repeats": repeats,
        "pinned_cpu": cpu,
        "load_average_1min": os.getloadavg()[0],  # other work on the machine skews the figures
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "tonic": tonic.__version__,
        **results,
        "targets": targets,
        "meets_targets": {k: results[k] >= v for k, v in targets.items()},
    }

    print(f"{n:,} events at {WIDTH}x{HEIGHT}, median of {repeats}, CPU {cpu}")
    print(f"{'figure':<42} {'value':>10}  target")
    for key, value in results.items():
        unit = "Mev/s" if key.endswith("mev_s") else "s" if key.endswith("_s") else "x"
        target = f">= {targets[key]:g}" if key in targets else ""
        print(f"{key:<42} {value:>10.2f}  {unit:<5} {target}")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_name(args.json.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(args.json)
    print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main()
