"""The ``spikeshot`` command: demo, serve, models, meta-train, evaluate, compare-runs,
add-to-zoo, export-nir."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tomllib
from pathlib import Path

from spikeshot.clients.results import HEADS
from spikeshot.service.config import ServerConfig, add_flags, flag_overrides
from spikeshot.service.demo import add_demo_parser

EXIT_USAGE, EXIT_ERROR = 2, 3


def _need_server_extra():
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.exit(
            "spikeshot: this command needs the server extra: pip install 'spikeshot[server,train]'"
        )


def parse_override(text: str) -> tuple[str, str, object]:
    """``table.field=value`` -> (table, field, value parsed as TOML, or as a string)."""
    key, sep, raw = text.partition("=")
    table, dot, name = key.partition(".")
    if not sep or not dot or not name:
        raise argparse.ArgumentTypeError(f"expected TABLE.FIELD=VALUE, got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return table, name, value


def load_run_config(path: str | None, overrides: list[tuple[str, str, object]]):
    from spikeshot.models.metatrain import RunConfig

    data = tomllib.loads(Path(path).read_text()) if path else {}
    for table, name, value in overrides:
        data.setdefault(table, {})[name] = value
    if "geometry" not in data:
        raise ValueError("the config has no [geometry] table (the input geometry of the model)")
    return RunConfig.from_dict(data)


def cmd_meta_train(args) -> int:
    _need_server_extra()
    import torch

    from spikeshot.models.metatrain import MetaTrainer

    torch.set_num_threads(args.threads)
    run_dir = Path(args.run_dir)
    if (run_dir / "config.json").exists():
        from spikeshot.models.metatrain import RunConfig

        cfg = RunConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
        if args.set or args.config:
            print(f"resuming {run_dir}: its config.json wins over --config/--set", file=sys.stderr)
    else:
        cfg = load_run_config(args.config, args.set or [])
    dist_on = _maybe_init_distributed()
    trainer = MetaTrainer(cfg, run_dir, cache_dir=args.cache, progress=not args.quiet)
    trainer.run(until=args.until)
    if dist_on:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0


def _maybe_init_distributed() -> bool:
    """Join a process group when launched by torchrun (WORLD_SIZE > 1)."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    import torch.distributed as dist

    dist.init_process_group("gloo")
    return True


def cmd_evaluate(args) -> int:
    _need_server_extra()
    import torch

    from spikeshot.models import checkpoint
    from spikeshot.models.datasets import open_dataset
    from spikeshot.models.evaluate import (
        Setting,
        grid,
        load_results,
        markdown_table,
        plot_bits,
        record_evaluation,
        result_key,
        save_results,
    )

    torch.set_num_threads(args.threads)
    ckpts = [checkpoint.load(args.checkpoint)]
    if args.baseline:
        ckpts.append(checkpoint.load(args.baseline))
    spec = args.dataset or ckpts[0].training.get("dataset")
    if not spec:
        raise ValueError("the model card names no training dataset: pass --dataset")
    dataset = open_dataset(spec, cache_dir=args.cache, progress=not args.json)
    single = (
        args.within_group
        or args.split != "test"
        or any(v is not None for v in (args.ways, args.shots, args.steps, args.bits))
    )

    def settings(ck) -> list[Setting]:
        """``ck``'s settings: from the head it was meta-trained with, unless --head says, and by
        default its card's inner steps."""
        head = args.head or ck.head
        own = args.dataset in (None, ck.training.get("dataset"))
        if not single:
            groups = dataset.split("test").groups is not None
            full = grid(args.tasks, args.queries, groups, head, ck.inner_steps)
            return [dataclasses.replace(st, dataset="" if own else spec) for st in full]
        return [
            Setting(
                ways=args.ways or 5,
                shots=args.shots or 1,
                steps=ck.inner_steps if args.steps is None else args.steps,
                bits=args.bits,
                queries=args.queries,
                tasks=args.tasks,
                split=args.split,
                seed=args.seed,
                within_group=args.within_group,
                head=head,
                dataset="" if own else spec,
            )
        ]

    out = Path(args.out) if args.out else None
    results = None if out is None else out / "evaluation.json"
    done = {} if results is None else load_results(results)
    # the folder's other results for these weights stay (a single setting adds to a grid), and
    # those of other models (a baseline evaluated apart); results of these models' other weights
    # are dropped, and those of other weights that name no model (rows before the field)
    fingerprints = [checkpoint.fingerprint(ck) for ck in ckpts]
    names = {ck.name for ck in ckpts}
    stored = {
        k: r
        for k, r in done.items()
        if r["fingerprint"] in fingerprints or r.get("model", "") not in names | {""}
    }
    rows = []
    for ck, weights in zip(ckpts, fingerprints, strict=True):
        for st in settings(ck):
            key = result_key(weights, st)
            row = done.get(key) or _evaluate_one(ck, dataset, st, quiet=args.json)
            rows.append({**row, "fingerprint": weights, "model": ck.name})
            stored.pop(key, None)
            if not args.json:
                print(markdown_table(rows[-1:]).splitlines()[-1], file=sys.stderr)
            if results is not None:  # kept after each setting: a rerun resumes from here
                save_results(results, [*stored.values(), *rows])
    if args.json:
        print(json.dumps(rows[0] if len(rows) == 1 else rows, indent=2))
    else:
        print(markdown_table(rows))
    if args.record:
        for path, weights in zip([args.checkpoint, args.baseline], fingerprints, strict=False):
            record_evaluation(path, [r for r in rows if r["fingerprint"] == weights])
    if out is not None:
        (out / "evaluation.md").write_text(markdown_table([*stored.values(), *rows]) + "\n")
        if not single:
            plot_bits(rows, out / "accuracy_vs_bits.png")
    return 0


def _evaluate_one(ck, dataset, setting, quiet: bool) -> dict:
    """``evaluate`` with a progress bar over the tasks (none when ``quiet``)."""
    from tqdm import tqdm

    from spikeshot.models.evaluate import evaluate

    bits = "float32" if setting.bits is None else f"{setting.bits}-bit"
    desc = f"{ck.config.arch.upper()} {bits} {setting.shots}-shot {setting.steps}-step"
    desc += ", prototype head" if setting.head == "prototype" else ""
    desc += ", one group" if setting.within_group else ""
    with tqdm(total=setting.tasks, desc=desc, unit="task", disable=quiet, leave=False) as bar:
        return evaluate(ck, dataset, setting, progress=lambda _i: bar.update())


def server_config(args) -> ServerConfig:
    """The server's settings from defaults, ``--config``, ``SPIKESHOT_*`` and the flags, with
    zoo names among ``models`` resolved to their files."""
    from spikeshot.models import checkpoint

    overrides = flag_overrides(args)
    if getattr(args, "model", None):
        if "models" in overrides:
            raise ValueError("give --model or --models, not both")
        overrides["models"] = (args.model,)
    config = ServerConfig.load(args.config, overrides=overrides)
    return dataclasses.replace(config, models=tuple(map(checkpoint.resolve, config.models)))


def cmd_compare_runs(args) -> int:
    from spikeshot.models.runs import compare

    c = compare(Path(args.run), Path(args.reference), args.start)
    if args.json:
        print(json.dumps(c.to_dict(), indent=2))
        return 0
    print(f"| iteration | {args.run} | {args.reference} | difference |")
    print("|---|---|---|---|")
    for it, a, b in zip(c.iterations, c.run, c.reference, strict=True):
        print(f"| {it:,} | {100 * a:.1f}% | {100 * b:.1f}% | {100 * (a - b):+.1f} |")
    se = "" if c.standard_error is None else f" ± {100 * c.standard_error:.1f}"
    print(
        f"\nmean paired difference {100 * c.mean_difference:+.1f}{se} points (standard error), "
        f"{len(c.iterations)} validations, iterations {c.iterations[0]:,}-{c.iterations[-1]:,}"
    )
    return 0


def cmd_serve(args) -> int:
    _need_server_extra()
    import logging

    from spikeshot.service.server import serve

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    serve(server_config(args))
    return 0


def cmd_models(args) -> int:
    _need_server_extra()
    from spikeshot.clients import formatting
    from spikeshot.models import checkpoint
    from spikeshot.service.engine import Engine

    config = dataclasses.replace(
        server_config(args), snapshot_dir="", session_store="memory", workers=1
    )
    engine = Engine(checkpoint.find(config.models), config)
    try:
        models = engine.list_models()
    finally:
        engine.close()
    if args.json:
        print(json.dumps([m.to_dict() for m in models], indent=2))
    else:
        print(formatting.models(models, mark_default=True, fingerprints=True))
    return 0


def cmd_add_to_zoo(args) -> int:
    from spikeshot.models import checkpoint

    zoo = Path(args.zoo) if args.zoo else checkpoint.ZOO
    weights, card = checkpoint.add_to_zoo(args.source, args.name, zoo, args.replace)
    print(f"wrote {card} and {weights}")
    return 0


def cmd_export_nir(args) -> int:
    _need_server_extra()
    import time

    from spikeshot.models.nir_export import to_bytes, to_nir

    start = time.perf_counter()
    ckpt, adaptation = _export_source(args.file, args.model)
    graph = to_nir(ckpt, adaptation)
    Path(args.output).write_bytes(to_bytes(graph))  # ExportSession's EXPORT_FORMAT_NIR bytes
    seconds = time.perf_counter() - start
    what = f"model {ckpt.name!r}" if adaptation is None else f"a session of model {ckpt.name!r}"
    print(
        f"{args.output}: {what}, {len(graph.nodes)} nodes, {len(graph.edges)} edges, "
        f"{Path(args.output).stat().st_size:,} bytes, in {seconds:.2f} s"
    )
    return 0


def _export_source(spec: str, model: str | None):
    """What ``export-nir`` exports: a checkpoint, and for a session file (``ExportSession``'s
    bytes) its ``Adaptation``, on the checkpoint ``model`` (default: the one the session names)."""
    from spikeshot.models import checkpoint

    path = Path(spec)
    if not path.is_file() or checkpoint.paths(path)[1].is_file():
        if model:
            raise ValueError(f"--model is for session files; {spec} names a model")
        return checkpoint.load(checkpoint.resolve(spec)), None
    return _session_export(path, model)


def _session_export(path: Path, model: str | None):
    """The checkpoint and ``Adaptation`` of the session file ``path``, checked against each
    other: the session's model fingerprint, its number of classes, its tensors' names and shapes."""
    from spikeshot.models import checkpoint
    from spikeshot.service import sessions
    from spikeshot.service.engine import nir_adaptation

    try:
        info, settings, state = sessions.load(path.read_bytes())
    except ValueError as e:
        raise ValueError(f"{path}: neither a model checkpoint nor a session file: {e}") from None
    if state.weights is None:
        raise ValueError(
            f"{path}: the session is not adapted yet: Adapt it first, or export its model "
            f"{settings.model!r} itself"
        )
    ckpt = checkpoint.load(checkpoint.resolve(model or settings.model))
    weights = checkpoint.fingerprint(ckpt)
    if info["fingerprint"] != weights:
        raise ValueError(
            f"{path}: the session was adapted on other weights than model {ckpt.name!r} "
            f"(fingerprint {info['fingerprint'][:12]}..., the model's {weights[:12]}...): pass "
            f"--model with the model {settings.model!r} it was adapted on"
        )
    if len(state.classes) > ckpt.config.ways:
        raise ValueError(
            f"{path}: {len(state.classes)} classes exceed the {ckpt.config.ways} outputs of "
            f"model {ckpt.name!r}"
        )
    shapes = ckpt.network.shapes()
    for k, v in state.weights.tensors.items():
        if shapes.get(k) != tuple(v.shape):
            raise ValueError(
                f"{path}: weight {k!r} of shape {list(v.shape)} does not fit model "
                f"{ckpt.name!r} ({list(shapes[k]) if k in shapes else 'no such parameter'})"
            )
    return ckpt, nir_adaptation(settings, state)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spikeshot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("meta-train", help="meta-train a network (resumable)")
    p.add_argument("--config", help="TOML file with [model], [geometry], [training] tables")
    p.add_argument("--run-dir", required=True, help="where state, log and best checkpoint go")
    p.add_argument(
        "--set",
        action="append",
        type=parse_override,
        metavar="TABLE.FIELD=VALUE",
        help="override one config field (repeatable)",
    )
    p.add_argument("--until", type=int, help="stop at this iteration (resume later)")
    p.add_argument("--cache", help="meta-dataset cache directory")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_meta_train)

    p = sub.add_parser("evaluate", help="N-way K-shot accuracy on meta-test classes")
    p.add_argument("checkpoint", help="checkpoint (NAME, NAME.json or NAME.safetensors)")
    p.add_argument(
        "--baseline", help="a second checkpoint (e.g. the ANN) evaluated on the same tasks"
    )
    p.add_argument("--dataset", help="meta-dataset spec (default: the one on the model card)")
    p.add_argument("--ways", type=int)
    p.add_argument("--shots", type=int)
    p.add_argument("--steps", type=int, help="inner-loop steps (default: the model card's)")
    p.add_argument("--bits", type=int, help="inner-loop weight bits (default: float)")
    p.add_argument(
        "--within-group",
        action="store_true",
        help="each task's classes all from one group of the split (one script for Glyphs); "
        "the grid (no --ways/--shots/--steps/--bits) has both protocols where the split has groups",
    )
    p.add_argument(
        "--head",
        choices=HEADS,
        help="where the inner loop starts: the meta-trained readout, or one set to the support "
        "set's class means (Proto-MAML; with --steps 0 a nearest-mean classifier); default: "
        "as each model was meta-trained",
    )
    p.add_argument("--queries", type=int, default=10, help="query examples per class and task")
    p.add_argument(
        "--split",
        default="test",
        help="the meta-dataset split whose classes the tasks draw (default test; val, or "
        "val_shift for the cross-simulator validation split of glyphs_broad)",
    )
    p.add_argument("--tasks", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--out",
        help="also write evaluation.json/.md and the accuracy-vs-bits plot here; the folder's "
        "results of the same weights in other settings are kept, and those of other models; "
        "those of these models' other weights are dropped",
    )
    p.add_argument(
        "--record",
        action="store_true",
        help="also store each checkpoint's results in its model card (metrics.evaluation)",
    )
    p.add_argument("--cache", help="meta-dataset cache directory")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "serve",
        help="serve the gRPC API (flags, SPIKESHOT_* variables and a TOML file's "
        "[server] table set the same settings)",
    )
    p.add_argument("--config", help="TOML file with a [server] table")
    p.add_argument(
        "--model",
        metavar="NAME|PATH",
        help="serve this one model: a zoo name or a checkpoint (default: the zoo)",
    )
    add_flags(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "compare-runs",
        help="two meta-training runs' in-run validations, paired at their common iterations",
    )
    p.add_argument("run", help="a run directory (its log.csv)")
    p.add_argument("reference", help="the run directory it is compared against")
    p.add_argument("--start", type=int, default=0, help="only iterations from this one on")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_compare_runs)

    p = sub.add_parser("models", help="list the models a server would hold (default: the zoo)")
    p.add_argument("--config", help="TOML file with a [server] table")
    p.add_argument(
        "--models", nargs="+", metavar="NAME|PATH", help="zoo names, checkpoints or folders of them"
    )
    p.add_argument("--default-model", help="the default model's name")
    p.add_argument("--json", action="store_true", help="print JSON (with the model cards)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser(
        "add-to-zoo", help="copy a run's best checkpoint into the zoo under a name of its own"
    )
    p.add_argument("source", help="a run directory (its best checkpoint) or a checkpoint")
    p.add_argument("name", help="the zoo name: NAME.json and NAME.safetensors, the card's name")
    p.add_argument("--zoo", help="the zoo folder (default: the shipped zoo, models/zoo)")
    p.add_argument("--replace", action="store_true", help="overwrite a model of that name")
    p.set_defaults(func=cmd_add_to_zoo)

    p = sub.add_parser(
        "export-nir",
        help="export a model's meta-trained initialisation or an adapted session as a NIR graph",
    )
    p.add_argument(
        "file",
        metavar="MODEL_OR_SESSION_FILE",
        help="a checkpoint (NAME, NAME.json or NAME.safetensors, or a zoo name) or a session "
        "file (ExportSession's bytes)",
    )
    p.add_argument("-o", "--output", required=True, metavar="FILE.nir", help="the NIR file")
    p.add_argument(
        "--model",
        metavar="NAME|PATH",
        help="a session's model: a zoo name or a checkpoint (default: the zoo's model of the "
        "name the session records)",
    )
    p.set_defaults(func=cmd_export_nir)

    add_demo_parser(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as e:
        print(f"spikeshot: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # torchrun -m spikeshot.service.cli meta-train ...
    sys.exit(main())
