"""``spikeshot demo``: the whole service on one machine, with no arguments and no network.

It starts a server in this process on loopback with the zoo's default model, records support and
query examples of Glyphs meta-test characters (scripts the model never saw in meta-training) with
the DVS simulator and writes them as AEDAT4 files, then, as any robot would, over gRPC: creates a
session, adapts it on the support files, classifies each query file, and prints accuracy, adapt
latency, classify latency (p50, p99), the events streamed and the metrics address.

Only the characters the demo needs are recorded (``GlyphsConfig.max_per_script`` keeps a few per
script, chosen after the same near-duplicate filtering as the full meta-dataset, and the first
instances of a character are those of the full meta-dataset), so it takes seconds, not the
minutes of building the whole meta-dataset.
"""

from __future__ import annotations

import argparse
import json
import math
import socket
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from spikeshot.clients.formatting import pairs

EXIT_NO_MODEL = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _label(name: str) -> str:
    """A Glyphs class name (``Old Italic/U+10300``) as a label and folder name."""
    return name.replace("/", "-").replace(" ", "_")


def write_recordings(
    folder: Path, cache: Path, ways: int, shots: int, queries: int, seed: int
) -> tuple[list[tuple[str, Path]], list[tuple[str, Path]]]:
    """Record ``ways`` random Glyphs meta-test characters, ``shots`` support and ``queries``
    query instances each, as ``support/<label>/*.aedat4`` and ``queries/<label>/*.aedat4`` in
    ``folder`` (the characters' cache goes to ``cache``): the (label, path) pairs of both."""
    from spikeshot.events.aedat4 import write
    from spikeshot.models.datasets.glyphs import Glyphs, GlyphsConfig

    base = GlyphsConfig()
    per_script = math.ceil(ways / len(base.test_scripts)) + 1
    config = replace(base, max_per_script=per_script, instances=shots + queries)
    split = Glyphs(config, cache, workers=1, progress=False).split("test")
    if ways > len(split.classes):
        raise ValueError(
            f"ways={ways}: the demo's meta-test split has {len(split.classes)} classes"
        )
    chosen = np.random.default_rng(seed).choice(len(split.classes), ways, replace=False)
    support, query = [], []
    for index in sorted(int(i) for i in chosen):
        label = _label(split.classes[index])
        for i in range(shots + queries):
            kind, name = ("support", f"shot{i}") if i < shots else ("queries", f"query{i - shots}")
            path = folder / kind / label / f"{name}.aedat4"
            path.parent.mkdir(parents=True, exist_ok=True)
            write(path, split.recording(index, i), split.sensor.width, split.sensor.height)
            (support if i < shots else query).append((label, path))
    return support, query


def demo(
    model: Path,
    folder: Path,
    cache: Path,
    ways: int,
    shots: int,
    queries: int,
    seed: int,
    say=lambda text: None,
) -> dict:
    """Run the demo with recordings in ``folder`` and scratch files in ``cache``; its results as
    a dict."""
    from spikeshot.clients.client import Client
    from spikeshot.events.formats import read
    from spikeshot.models import checkpoint
    from spikeshot.service.config import ServerConfig
    from spikeshot.service.server import start

    begin = time.perf_counter()
    outputs = checkpoint.load(model).config.ways
    if ways > outputs:
        raise ValueError(f"ways={ways} exceeds the {outputs} outputs of {model}")
    say(f"recording {ways} x {shots + queries} examples of unseen Glyphs characters ...")
    support, query = write_recordings(folder, cache, ways, shots, queries, seed)
    say("starting the server on loopback ...")
    config = ServerConfig(port=0, metrics_port=_free_port(), models=(str(model),))
    server = start(config)
    sent = [0]

    def count(n: int) -> None:
        sent[0] += n

    try:
        with Client(server.address) as client:
            session = client.create_session(ways=ways)
            for label, path in support:
                session.add_support(label, path)
            say(f"adapting session {session.id} on {len(support)} support files ...")
            # A process's first file read loads the readers' numba kernels (about 1 s): done here,
            # so that the adapt latency is the service's, as a running robot app sees it.
            read(support[0][1])
            start_adapt = time.perf_counter()
            adapted = session.adapt(on_sent=count)
            adapt_ms = 1000 * (time.perf_counter() - start_adapt)
            say(f"classifying {len(query)} query files ...")
            latencies, correct = [], 0
            for label, path in query:
                start_query = time.perf_counter()
                prediction = session.classify(path, on_sent=count)
                latencies.append(1000 * (time.perf_counter() - start_query))
                correct += prediction.label == label
            model_info = client.models()[0]
    finally:
        server.stop(grace=1)
    return {
        "model": model_info.name,
        "parameters": model_info.parameters,
        "ways": ways,
        "shots": shots,
        "queries": queries,
        "classified": len(query),
        "correct": correct,
        "accuracy": correct / len(query),
        "chance": 1 / ways,
        "support_accuracy": adapted.support_accuracy,
        "head": session.info.settings.head,
        "inner_steps": session.info.settings.inner_steps,
        "weight_bits": session.info.settings.weight_bits,
        "grid": session.info.settings.grid,
        "rounding": session.info.settings.rounding,
        "adapt_ms": adapt_ms,
        "classify_p50_ms": float(np.percentile(latencies, 50)),
        "classify_p99_ms": float(np.percentile(latencies, 99)),
        "events_streamed": sent[0],
        "classes": list(adapted.classes),
        "server": server.address,
        "metrics": f"http://127.0.0.1:{server.metrics_port}/metrics",
        "seconds": time.perf_counter() - begin,
    }


def _inner_loop(r: dict) -> str:
    """Where the session's inner loop started, its steps, and which weights it adapted: float32,
    or the fixed-point grid."""
    start = "class means" if r["head"] == "prototype" else "meta-trained readout"
    steps = r["inner_steps"]
    weights = (
        f"{r['weight_bits']}-bit weights, {r['grid']} grid, {r['rounding']} rounding"
        if r["weight_bits"]
        else "float32 weights"
    )
    return f"from the {start}, {steps} step{'' if steps == 1 else 's'}; {weights}"


def format_results(r: dict) -> str:
    """The demo's results as a two-column table."""
    return pairs(
        [
            ("model", f"{r['model']} ({r['parameters']:,} parameters)"),
            ("task", f"{r['ways']}-way {r['shots']}-shot on Glyphs characters the model never saw"),
            ("classes", ", ".join(r["classes"])),
            ("inner loop", _inner_loop(r)),
            (
                "accuracy",
                f"{100 * r['accuracy']:.1f}% ({r['correct']}/{r['classified']} queries; "
                f"chance {100 * r['chance']:.1f}%)",
            ),
            (
                "adapt latency",
                f"{r['adapt_ms']:.1f} ms ({r['ways'] * r['shots']} support examples)",
            ),
            (
                "classify latency",
                f"p50 {r['classify_p50_ms']:.1f} ms, p99 {r['classify_p99_ms']:.1f} ms",
            ),
            ("events streamed", f"{r['events_streamed']:,}"),
            ("server", r["server"]),
            ("metrics", f"{r['metrics']} (while it ran)"),
            ("total time", f"{r['seconds']:.1f} s"),
        ]
    )


def run_demo(
    json_output: bool = False,
    *,
    model: str | Path | None = None,
    ways: int = 5,
    shots: int = 1,
    queries: int = 5,
    seed: int = 0,
    keep: str | Path | None = None,
) -> int:
    """The ``spikeshot demo`` command: print the results (as one JSON object when
    ``json_output``); recordings go to ``keep`` when given, else to a temporary folder. Exit
    code 0, or ``EXIT_NO_MODEL`` when the model is not installed."""
    from spikeshot.models import checkpoint

    default = checkpoint.ZOO / checkpoint.ZOO_DEFAULT
    weights_path, json_path = checkpoint.paths(model if model is not None else default)
    missing = [p.name for p in (json_path, weights_path) if not p.is_file()]
    if missing:
        what = "the default model is not installed" if model is None else "no checkpoint"
        name = checkpoint.ZOO_DEFAULT
        hint = (
            f" Meta-train it with `spikeshot meta-train --config models/zoo/{name}.toml "
            f"--run-dir runs/{name}` and add it with `spikeshot add-to-zoo runs/{name} {name}`, "
            "or pass --model."
            if model is None
            else ""
        )
        print(
            f"spikeshot demo: {what}: {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} missing from {json_path.parent}.{hint}",
            file=sys.stderr,
        )
        return EXIT_NO_MODEL
    for name, value in (("ways", ways), ("shots", shots), ("queries", queries)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")

    def say(text: str) -> None:
        if not json_output:
            print(text, file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="spikeshot-demo-") as scratch:
        folder = Path(keep) if keep is not None else Path(scratch) / "recordings"
        results = demo(json_path, folder, Path(scratch) / "cache", ways, shots, queries, seed, say)
    print(json.dumps(results) if json_output else format_results(results))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(
        args.json,
        model=args.model,
        ways=args.ways,
        shots=args.shots,
        queries=args.queries,
        seed=args.seed,
        keep=args.keep,
    )


def add_demo_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``demo`` to the ``spikeshot`` command's subparsers (its ``func`` runs it)."""
    p = subparsers.add_parser(
        "demo",
        help="adapt and classify unseen classes over gRPC, all on this machine",
        description="Start a server in-process, record support and query examples of Glyphs "
        "characters the model never saw, adapt a session on them over gRPC and classify the "
        "queries; print accuracy and latencies.",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--model", help="checkpoint (default: the zoo's default model)")
    p.add_argument("--ways", type=int, default=5, help="classes (default: %(default)s)")
    p.add_argument(
        "--shots", type=int, default=1, help="support examples per class (default: %(default)s)"
    )
    p.add_argument(
        "--queries", type=int, default=5, help="queries per class (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=0, help="which classes (default: %(default)s)")
    p.add_argument("--keep", metavar="DIR", help="write the recordings here and keep them")
    p.set_defaults(func=_cmd_demo)
    return p
