"""The ``spikeshot-client`` command.

Each subcommand is a function that adds its parser to the subparsers and sets ``run`` to a
function of the parsed arguments returning the exit code; to add one, write such a function and
list it in ``COMMANDS``. Exit codes: 0 ok, 2 usage error, 3 a file that cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from spikeshot.events.array import EventError
from spikeshot.events.formats import FORMATS, info
from spikeshot.events.recording import FormatError

EXIT_OK, EXIT_USAGE, EXIT_BAD_FILE = 0, 2, 3


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


COMMANDS: tuple[Callable, ...] = (_add_info,)


def build_parser() -> argparse.ArgumentParser:
    """The command's parser, with every subcommand in ``COMMANDS``."""
    parser = argparse.ArgumentParser(
        prog="spikeshot-client", description="Client of the spikeshot few-shot service."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command with ``argv`` (default: the process's arguments); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # argparse exits 0 after --help and 2 on a usage error
        return stop.code if isinstance(stop.code, int) else EXIT_OK
    try:
        return args.run(args)
    except (FormatError, EventError, OSError) as error:
        print(f"spikeshot-client: error: {error}", file=sys.stderr)
        return EXIT_BAD_FILE


if __name__ == "__main__":
    sys.exit(main())
