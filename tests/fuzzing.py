"""Run one fuzzing target (``tests/fuzz_targets.py``) under atheris, coverage-guided by libFuzzer.

    python tests/fuzzing.py TARGET [--seconds S] [--corpus DIR] [libFuzzer flags]
    python tests/fuzzing.py --list

The corpus (default ``fuzz-corpus/TARGET``, kept between runs) starts from the target's seeds and
the inputs of past findings (``tests/fuzz_regressions/TARGET/``); a
finding stops the run and is saved as ``fuzz-findings/TARGET-crash-*`` (replay it with
``python tests/fuzzing.py TARGET FILE``). ``make fuzz FUZZ_SECONDS=S`` runs every target in turn.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REGRESSIONS = HERE / "fuzz_regressions"  # TARGET/FILE: inputs that were findings once
TIMEOUT_S = 20  # libFuzzer's limit on one input: past it, a hang


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", nargs="?")
    parser.add_argument("--list", action="store_true", help="name the targets")
    parser.add_argument("--seconds", type=int, default=0, help="stop after this long (0: never)")
    parser.add_argument("--corpus", type=Path, help="corpus folder (default fuzz-corpus/TARGET)")
    args, libfuzzer = parser.parse_known_args(argv)

    import atheris

    sys.path.insert(0, str(HERE))
    with atheris.instrument_imports(include=["spikeshot"]):
        import fuzz_targets

    targets = fuzz_targets.TARGETS
    if args.list:
        print("\n".join(targets))
        return
    if args.target not in targets:
        parser.error(f"no target {args.target!r}; the targets: {', '.join(targets)}")
    target = targets[args.target]
    replay = [a for a in libfuzzer if not a.startswith("-")]
    if not replay:
        corpus = args.corpus or Path("fuzz-corpus") / args.target
        corpus.mkdir(parents=True, exist_ok=True)
        if not any(corpus.iterdir()):
            for seed in target.seeds():
                (corpus / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
        libfuzzer.append(str(corpus))
        if (REGRESSIONS / args.target).is_dir():  # past findings, replayed first
            libfuzzer.append(str(REGRESSIONS / args.target))
    findings = Path("fuzz-findings")
    findings.mkdir(exist_ok=True)
    flags = [
        f"-timeout={TIMEOUT_S}",
        "-rss_limit_mb=4096",
        f"-artifact_prefix={findings}/{args.target}-",
    ]
    if args.seconds:
        flags.append(f"-max_total_time={args.seconds}")
    atheris.Setup([sys.argv[0], *flags, *libfuzzer], target.fuzz)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
