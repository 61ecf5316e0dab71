"""Human-readable text of the server's answers, for ``spikeshot-client`` (``--json`` prints the
results' ``to_dict`` instead)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from spikeshot.clients.results import (
    AdaptResult,
    ModelInfo,
    Prediction,
    SessionInfo,
    Timings,
    WindowPrediction,
)


def pairs(rows: Sequence[tuple[str, object]]) -> str:
    """``name  value`` lines with the names left-aligned in one column."""
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns separated by two spaces, each as wide as its widest cell."""
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def _when(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch_s))


def _bits(bits: int) -> str:
    return f"{bits}-bit" if bits else "float32"


MODEL_COLUMNS = (
    "arch",
    "ways",
    "input",
    "sensor",
    "window",
    "head",
    "steps",
    "weights",
    "parameters",
)


def models(
    items: Sequence[ModelInfo], *, mark_default: bool = False, fingerprints: bool = False
) -> str:
    """The models table: ``spikeshot-client models`` (a ``default`` column) and ``spikeshot
    models`` (``mark_default``: the default's name marked ``*``, with a footnote; ``fingerprints``:
    a column of the weights' fingerprints, their first 12 hex digits)."""
    header = ("name",) if mark_default else ("model", "default")
    header += MODEL_COLUMNS + (("fingerprint",) if fingerprints else ())
    rows = []
    for m in items:
        if mark_default:
            first = (m.name + (" *" if m.is_default else ""),)
        else:
            first = (m.name, "yes" if m.is_default else "")
        row = first + (
            m.arch,
            m.ways,
            f"{m.bins}x2x{m.height}x{m.width}",
            f"{m.sensor_width}x{m.sensor_height}",
            f"{m.window_us / 1000:g} ms",
            m.card.get("inner_loop", {}).get("head", "meta"),
            m.inner_steps,
            _bits(m.weight_bits),
            f"{m.parameters:,}",
        )
        rows.append(row + ((m.fingerprint[:12],) if fingerprints else ()))
    text = table(header, rows)
    return text + "\n* the default model" if mark_default else text


def session(info: SessionInfo) -> str:
    s = info.settings
    weights = _bits(s.weight_bits)
    if s.weight_bits:
        weights += f" ({s.grid} grid, {s.rounding} rounding)"
    return pairs(
        [
            ("session", info.session_id),
            ("model", s.model),
            ("ways", s.ways),
            ("starts from", "class means" if s.head == "prototype" else "meta-trained readout"),
            ("inner steps", s.inner_steps),
            ("step size", "learned" if s.step_size is None else f"{s.step_size:g}"),
            ("weights", weights),
            ("classes", ", ".join(info.classes) or "none yet"),
            ("support examples", info.examples),
            ("adapted", f"version {info.weights_version}" if info.weights_version else "not yet"),
            ("created", _when(info.created_at)),
            ("expires if idle", _when(info.expires_at)),
        ]
    )


def sessions(items: Sequence[SessionInfo]) -> str:
    if not items:
        return "no sessions"
    rows = [
        (
            i.session_id,
            i.settings.model,
            ", ".join(i.classes) or "-",
            i.examples,
            i.weights_version,
            _when(i.last_used_at),
        )
        for i in items
    ]
    return table(("session", "model", "classes", "examples", "version", "last used"), rows)


def _timings(t: Timings, *stages: str) -> str:
    parts = ", ".join(f"{stage} {getattr(t, stage + '_ms'):.1f}" for stage in stages)
    return f"{t.total_ms:.1f} ms ({parts})"


def adapt(result: AdaptResult, round_trip_ms: float) -> str:
    return pairs(
        [
            ("session", result.session_id),
            ("classes", ", ".join(result.classes)),
            ("support examples", f"{result.examples} ({result.new_examples} new)"),
            ("loss", f"{result.loss_before:.3f} -> {result.loss_after:.3f}"),
            ("support accuracy", f"{100 * result.support_accuracy:.1f}%"),
            ("inner steps", result.steps),
            ("weights version", result.weights_version),
            ("server time", _timings(result.timings, "decode", "bin", "queue", "adapt")),
            ("round trip", f"{round_trip_ms:.1f} ms"),
        ]
    )


def prediction(name: str, p: Prediction, round_trip_ms: float) -> str:
    return (
        f"{name}  {p.label}  {100 * p.probabilities[p.label]:.1f}%  {p.events:,} events  "
        f"{round_trip_ms:.1f} ms"
    )


def window(w: WindowPrediction, origin_us: int) -> str:
    """One stream window, its times in seconds from ``origin_us``."""
    start, end = (w.start_us - origin_us) / 1e6, (w.end_us - origin_us) / 1e6
    note = "" if w.complete else "  (incomplete)"
    return (
        f"{start:8.3f} - {end:.3f} s  {w.label}  {100 * w.probabilities[w.label]:.1f}%  "
        f"{w.events:,} events{note}"
    )
