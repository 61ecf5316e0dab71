"""A minimal robot loop: learn new classes from a few seconds of camera data each, then classify
the live stream and act on every prediction.

    spikeshot serve &
    python clients/examples/robot_loop.py cup ball                        # the first camera
    python clients/examples/robot_loop.py --source dv://127.0.0.1:7777 cup ball

For each class, show it to the camera and press Enter: the next ``--seconds`` of events are cut
into windows of the model's length, each one support example. After one Adapt, every window of
the live stream is classified; ``act`` is where the robot does something with the answer.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import closing

from spikeshot.clients import sources
from spikeshot.clients.client import Client
from spikeshot.clients.results import WindowPrediction


def act(window: WindowPrediction) -> None:
    """What the robot does with a prediction; here, say it."""
    confidence = window.probabilities[window.label]
    print(f"{window.end_us / 1e6:10.3f} s  {window.label}  ({100 * confidence:.0f}%)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("classes", nargs="+", metavar="LABEL", help="the classes to learn")
    parser.add_argument("--target", default="127.0.0.1:50051", help="server HOST:PORT")
    parser.add_argument(
        "--source", default="camera", help="camera, camera:SERIAL, dv://HOST:PORT or dv+unix://PATH"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=3.0,
        help="camera time recorded per class (default: %(default)s)",
    )
    parser.add_argument(
        "--no-prompt",
        action="store_true",
        help="record each class at once, without waiting for Enter",
    )
    parser.add_argument(
        "--predictions",
        type=int,
        default=0,
        help="stop after this many predictions (default: never)",
    )
    args = parser.parse_args(argv)

    with Client(args.target) as client:
        session = client.create_session(ways=len(args.classes))
        model = next(m for m in client.models() if m.name == session.info.settings.model)
        for label in args.classes:
            if not args.no_prompt:
                input(f"show '{label}' to the camera, then press Enter ")
            camera = sources.open_source(args.source)
            sensor = (camera.width, camera.height)
            events = sources.record(camera, args.seconds)
            for example, _ in sources.slices([events], model.window_us):
                session.add_support(label, example, sensor=sensor)
        result = session.adapt()
        print(
            f"learned {', '.join(result.classes)} from {result.examples} examples "
            f"(support accuracy {100 * result.support_accuracy:.0f}%)",
            flush=True,
        )
        with closing(session.classify_stream(sources.open_source(args.source))) as live:
            for count, window in enumerate(live, 1):
                act(window)
                if count == args.predictions:
                    break
    return 0


if __name__ == "__main__":
    sys.exit(main())
