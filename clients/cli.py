"""The ``spikeshot-client`` command.

Each subcommand is a function that adds its parser to the subparsers and sets ``run`` to a
function of the parsed arguments returning the exit code; to add one, write such a function and
list it in ``COMMANDS``. Commands that call the server share the connection options
(``--target``, TLS, token, deadline, retries); the token comes from ``--token-file`` or the
``SPIKESHOT_TOKEN`` environment variable, never from the command line, where other users of the
machine could read it.

Exit codes: 0 ok, 2 usage error (bad arguments), 3 an input that cannot be read (a file, a folder,
a camera stream, or a live source without dv-processing installed), 4 an error status from the
server, 5 the server cannot be reached, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from spikeshot.clients import formatting
from spikeshot.clients.client import Client
from spikeshot.clients.connection import DEFAULT_TARGET, MAX_ATTEMPTS, Connection
from spikeshot.clients.errors import ServerError, ServerUnavailable
from spikeshot.clients.results import EXPORT_FORMATS, GRIDS, HEADS, ROUNDINGS
from spikeshot.clients.sources import open_source
from spikeshot.events.array import EventError
from spikeshot.events.formats import FORMATS, info
from spikeshot.events.recording import FormatError

EXIT_OK, EXIT_USAGE, EXIT_BAD_FILE, EXIT_SERVER, EXIT_CONNECTION = 0, 2, 3, 4, 5
EXIT_INTERRUPTED = 130
PROGRESS_DELAY_S = 1.0  # uploads that finish sooner show no progress bar


def _count(n: int | None, unit: str = "") -> str:
    return "n/a" if n is None else f"{n:,}{unit}"


def format_info(summary: dict) -> str:
    """``info``'s summary as an aligned two-column table."""
    events, on = summary["events"], summary["on_events"]
    duration, rate = summary["duration_us"], summary["mean_rate_ev_s"]
    share = f" ({100 * on / events:.1f}%)" if events else ""
    rows = [
        ("file", summary["path"]),
        ("format", summary["format"]),
        ("sensor", f"{summary['width']} x {summary['height']}"),
        ("events", _count(events)),
        ("ON events", _count(on) + share),
        ("first timestamp", _count(summary["t_first_us"], " us")),
        ("last timestamp", _count(summary["t_last_us"], " us")),
        ("duration", "n/a" if duration is None else f"{duration:,} us ({duration / 1e6:.6f} s)"),
        ("mean rate", "n/a" if rate is None else f"{rate:,.0f} ev/s"),
        ("other streams", ", ".join(summary["other_streams"]) or "none"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _run_info(args: argparse.Namespace) -> int:
    summary = info(args.file, args.format)
    print(json.dumps(summary) if args.json else format_info(summary))
    return EXIT_OK


def _add_info(subparsers) -> None:
    parser = subparsers.add_parser(
        "info",
        help="summarise an event file",
        description="Sensor size, event counts, timestamps, rate and other streams of a file.",
    )
    parser.add_argument("file", help="an .aedat4, .bin, .raw, .dat, .npy or .npz file, or a FIFO")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--format", choices=FORMATS, help="the file's format (default: detected)")
    parser.set_defaults(run=_run_info)


def _connection_options() -> argparse.ArgumentParser:
    """The options of every command that calls the server."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--target",
        default=os.environ.get("SPIKESHOT_TARGET", DEFAULT_TARGET),
        help="server HOST:PORT (default: $SPIKESHOT_TARGET or %(default)s)",
    )
    group.add_argument(
        "--tls", action="store_true", help="use TLS with the system's root certificates"
    )
    group.add_argument(
        "--ca", help="PEM file of the CA that signed the server's certificate (implies --tls)"
    )
    group.add_argument("--cert", help="PEM file of this client's certificate chain")
    group.add_argument("--key", help="PEM file of this client's private key")
    group.add_argument("--server-name", help="name to check the server's certificate against")
    group.add_argument(
        "--token-file", help="file holding the bearer token (default: $SPIKESHOT_TOKEN)"
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="deadline in seconds of each call but live streams (default: %(default)s)",
    )
    group.add_argument(
        "--retries",
        type=int,
        default=4,
        choices=range(MAX_ATTEMPTS),
        metavar=f"0..{MAX_ATTEMPTS - 1}",
        help="retries of a call the server could not take (UNAVAILABLE), with "
        "backoff (default: %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON for machines")
    return parser


def _connect(args: argparse.Namespace) -> Client:
    token = os.environ.get("SPIKESHOT_TOKEN") or None
    if args.token_file:
        token = Path(args.token_file).read_text().strip()
    return Client(
        Connection(
            args.target,
            tls=args.tls,
            ca=args.ca,
            cert=args.cert,
            key=args.key,
            server_name=args.server_name,
            token=token,
            timeout=args.timeout,
            retries=args.retries,
        )
    )


def _print_json(value) -> None:
    print(json.dumps(value), flush=True)


@contextlib.contextmanager
def upload_bar(what: str, stream=None) -> Iterator[Callable[[int], None]]:
    """A progress bar of events sent, on ``stream`` (default stderr) when it is a terminal,
    shown once an upload has lasted ``PROGRESS_DELAY_S``; yields the callback of each message."""
    from tqdm import tqdm

    stream = sys.stderr if stream is None else stream
    with tqdm(
        desc=what,
        unit="ev",
        unit_scale=True,
        delay=PROGRESS_DELAY_S,
        file=stream,
        disable=not stream.isatty(),
        leave=False,
    ) as bar:
        yield bar.update


def _run_models(args: argparse.Namespace) -> int:
    with _connect(args) as client:
        models = client.models()
    if args.json:
        _print_json([m.to_dict() for m in models])
    else:
        print(formatting.models(models))
    return EXIT_OK


def _add_models(subparsers) -> None:
    parser = subparsers.add_parser(
        "models",
        parents=[_connection_options()],
        help="list the server's models",
        description="The meta-trained models the server holds: geometry, defaults, size.",
    )
    parser.set_defaults(run=_run_models)


def _print_session(args: argparse.Namespace, info) -> None:
    if args.json:
        _print_json(info.to_dict())
    else:
        print(formatting.session(info))


def _run_session_create(args: argparse.Namespace) -> int:
    with _connect(args) as client:
        session = client.create_session(
            model=args.model,
            ways=args.ways,
            inner_steps=args.inner_steps,
            step_size=args.step_size,
            weight_bits=args.weight_bits,
            rounding=args.rounding,
            grid=args.grid,
            seed=args.seed,
            head=args.head,
        )
    _print_session(args, session.info)
    return EXIT_OK


def _run_session_list(args: argparse.Namespace) -> int:
    with _connect(args) as client:
        infos = [s.info for s in client.sessions()]
    if args.json:
        _print_json([i.to_dict() for i in infos])
    else:
        print(formatting.sessions(infos))
    return EXIT_OK


def _run_session_show(args: argparse.Namespace) -> int:
    with _connect(args) as client:
        _print_session(args, client.session(args.id).info)
    return EXIT_OK


def _run_session_delete(args: argparse.Namespace) -> int:
    with _connect(args) as client:
        client.session(args.id).delete()
    if args.json:
        _print_json({"deleted": args.id})
    else:
        print(f"deleted session {args.id}")
    return EXIT_OK


def _add_session(subparsers) -> None:
    parser = subparsers.add_parser(
        "session",
        help="create, list, show or delete sessions",
        description="Manage this caller's sessions.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    options = _connection_options()
    create = actions.add_parser(
        "create",
        parents=[options],
        help="create a session",
        description="A new session; unset settings take the model card's defaults.",
    )
    create.add_argument("--model", default="", help="model name (default: the server's default)")
    create.add_argument("--ways", type=int, default=0, help="most classes the session learns")
    create.add_argument("--inner-steps", type=int, default=0, help="gradient steps per adapt")
    create.add_argument("--step-size", type=float, help="inner-loop step size")
    create.add_argument("--weight-bits", type=int, help="bits of the adapted weights (0: float32)")
    create.add_argument("--rounding", choices=ROUNDINGS, default="")
    create.add_argument("--grid", choices=GRIDS, default="")
    create.add_argument("--seed", type=int, default=0, help="seed of stochastic rounding")
    create.add_argument(
        "--head",
        choices=HEADS,
        default="",
        help="where each adapt starts: the meta-trained readout, or the class means "
        "(default: the model's)",
    )
    create.set_defaults(run=_run_session_create)
    listing = actions.add_parser("list", parents=[options], help="list this caller's sessions")
    listing.set_defaults(run=_run_session_list)
    for name, run, what in (
        ("show", _run_session_show, "describe a session"),
        ("delete", _run_session_delete, "delete a session"),
    ):
        action = actions.add_parser(name, parents=[options], help=what)
        action.add_argument("id", help="the session's id")
        action.set_defaults(run=run)


def _run_adapt(args: argparse.Namespace) -> int:
    with _connect(args) as client:
        session = client.session(args.session)
        session.add_support_folder(args.support)
        start = time.perf_counter()
        with upload_bar("support") as on_sent:
            result = session.adapt(replace_support=args.replace, on_sent=on_sent)
        round_trip_ms = 1000 * (time.perf_counter() - start)
    if args.json:
        _print_json({**result.to_dict(), "round_trip_ms": round_trip_ms})
    else:
        print(formatting.adapt(result, round_trip_ms))
    return EXIT_OK


def _add_adapt(subparsers) -> None:
    parser = subparsers.add_parser(
        "adapt",
        parents=[_connection_options()],
        help="adapt a session on a support folder",
        description="Send every recording of DIR/<label>/ as a support example of <label> and "
        "adapt the session on its whole support set.",
    )
    parser.add_argument("--session", required=True, help="the session's id")
    parser.add_argument(
        "--support",
        required=True,
        metavar="DIR",
        help="folder with one sub-folder of recordings per class",
    )
    parser.add_argument(
        "--replace", action="store_true", help="forget the support examples of earlier adapts"
    )
    parser.set_defaults(run=_run_adapt)


def _run_classify(args: argparse.Namespace) -> int:
    with _connect(args) as client:
        session = client.session(args.session)
        for path in args.files:
            start = time.perf_counter()
            with upload_bar(Path(path).name) as on_sent:
                prediction = session.classify(
                    path, candidates=args.candidates or (), on_sent=on_sent
                )
            round_trip_ms = 1000 * (time.perf_counter() - start)
            if args.json:
                _print_json({"file": path, **prediction.to_dict(), "round_trip_ms": round_trip_ms})
            else:
                print(formatting.prediction(path, prediction, round_trip_ms), flush=True)
    return EXIT_OK


def _add_classify(subparsers) -> None:
    parser = subparsers.add_parser(
        "classify",
        parents=[_connection_options()],
        help="classify recordings",
        description="Classify each file as one query (one line, or one JSON object, per file).",
    )
    parser.add_argument("--session", required=True, help="the session's id")
    parser.add_argument("files", nargs="+", metavar="FILE", help="event files")
    parser.add_argument(
        "--candidate",
        action="append",
        dest="candidates",
        metavar="LABEL",
        help="answer among these labels only (repeatable)",
    )
    parser.set_defaults(run=_run_classify)


def _run_stream(args: argparse.Namespace) -> int:
    source = open_source(
        args.source,
        realtime=args.realtime or args.rate is not None,
        rate=args.rate or 1.0,
        chunk_us=round(args.chunk_ms * 1000),
    )
    with source, _connect(args) as client:
        session = client.session(args.session)
        origin = None
        windows = session.classify_stream(
            source,
            window_us=round(args.window_ms * 1000),
            hop_us=round(args.hop_ms * 1000),
            candidates=args.candidates or (),
        )
        for window in windows:
            if args.json:
                _print_json(window.to_dict())
                continue
            origin = window.start_us if origin is None else origin
            print(formatting.window(window, origin), flush=True)
    return EXIT_OK


def _add_stream(subparsers) -> None:
    parser = subparsers.add_parser(
        "stream",
        parents=[_connection_options()],
        help="classify a live stream window by window",
        description="Stream events to the session and print one line (or JSON object) per "
        "window's prediction as it comes.",
    )
    parser.add_argument("--session", required=True, help="the session's id")
    parser.add_argument(
        "--source",
        required=True,
        metavar="SOURCE",
        help="an event file, dv://HOST:PORT or dv+unix://PATH (a DV network "
        "stream), camera or camera:SERIAL",
    )
    parser.add_argument(
        "--realtime", action="store_true", help="replay a file at its recorded pace"
    )
    parser.add_argument(
        "--rate", type=float, help="replay a file this many times faster than recorded"
    )
    parser.add_argument(
        "--chunk-ms",
        type=float,
        default=10.0,
        help="duration of each chunk of a replay (default: %(default)s)",
    )
    parser.add_argument(
        "--window-ms", type=float, default=0.0, help="window length (default: the model card's)"
    )
    parser.add_argument(
        "--hop-ms",
        type=float,
        default=0.0,
        help="start-to-start distance of windows (default: the window)",
    )
    parser.add_argument(
        "--candidate",
        action="append",
        dest="candidates",
        metavar="LABEL",
        help="answer among these labels only (repeatable)",
    )
    parser.set_defaults(run=_run_stream)


def _run_export(args: argparse.Namespace) -> int:
    with _connect(args) as client:
        data = client.session(args.session).export(format=args.format)
    Path(args.out).write_bytes(data)
    if args.json:
        summary = {"session_id": args.session, "format": args.format, "path": args.out}
        _print_json({**summary, "bytes": len(data)})
    else:
        what = "as a NIR graph " if args.format == "nir" else ""
        print(f"exported session {args.session} {what}to {args.out} ({len(data):,} bytes)")
    return EXIT_OK


def _add_export(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        parents=[_connection_options()],
        help="save an adapted session to a file",
        description="Write the session (settings, labels, support set, weights) to a file that "
        "'import' turns into a session again, on this or another server with the same model; "
        "or, with --format nir, its adapted network as a NIR graph file for neuromorphic "
        "toolchains (built by the server).",
    )
    parser.add_argument("--session", required=True, help="the session's id")
    parser.add_argument("--out", "-o", required=True, metavar="FILE", help="where to write it")
    parser.add_argument(
        "--format",
        choices=EXPORT_FORMATS,
        default="session",
        help="session: a file for 'import'; nir: a NIR graph (default: %(default)s)",
    )
    parser.set_defaults(run=_run_export)


def _run_import(args: argparse.Namespace) -> int:
    data = Path(args.file).read_bytes()
    with _connect(args) as client:
        _print_session(args, client.import_session(data).info)
    return EXIT_OK


def _add_import(subparsers) -> None:
    parser = subparsers.add_parser(
        "import",
        parents=[_connection_options()],
        help="create a session from an exported file",
        description="A new session of this caller's from a file that 'export' wrote.",
    )
    parser.add_argument("file", metavar="FILE", help="a file written by 'export'")
    parser.set_defaults(run=_run_import)


COMMANDS: tuple[Callable, ...] = (
    _add_info,
    _add_models,
    _add_session,
    _add_adapt,
    _add_classify,
    _add_stream,
    _add_export,
    _add_import,
)


def build_parser() -> argparse.ArgumentParser:
    """The command's parser, with every subcommand in ``COMMANDS``."""
    parser = argparse.ArgumentParser(
        prog="spikeshot-client", description="Client of the spikeshot few-shot service."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(subparsers)
    return parser


def _fail(code: int, message: str) -> int:
    print(f"spikeshot-client: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command with ``argv`` (default: the process's arguments); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # argparse exits 0 after --help and 2 on a usage error
        return stop.code if isinstance(stop.code, int) else EXIT_OK
    try:
        return args.run(args)
    except ServerUnavailable as error:
        return _fail(
            EXIT_CONNECTION,
            f"cannot reach the server at {getattr(args, 'target', '?')}: {error.details}",
        )
    except ServerError as error:
        return _fail(EXIT_SERVER, f"the server answered {error}")
    except (FormatError, EventError, OSError, ImportError) as error:
        return _fail(EXIT_BAD_FILE, str(error))
    except ValueError as error:
        return _fail(EXIT_USAGE, str(error))
    except KeyboardInterrupt:
        return _fail(EXIT_INTERRUPTED, "interrupted")


if __name__ == "__main__":
    sys.exit(main())
