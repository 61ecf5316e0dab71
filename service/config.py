"""Every server setting, in one dataclass, from defaults, a TOML file, ``SPIKESHOT_*`` environment
variables and command-line flags, each overriding the one before.

- TOML: a ``[server]`` table whose keys are the field names (``port = 50052``, ``models = [...]``).
- Environment: ``SPIKESHOT_`` + the field name in capitals (``SPIKESHOT_PORT=50052``); a list is
  comma-separated (``SPIKESHOT_MODELS=a,b``).
- Flags: ``--`` + the field name with dashes (``--port 50052``, ``--models a b``), from
  ``add_flags`` and ``flag_overrides``.

Unknown keys and values of the wrong type are errors that name the setting and its source.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

from spikeshot.service.executor import usable_cores

ENV_PREFIX = "SPIKESHOT_"
REDIS_SCHEMES = ("redis", "rediss", "unix")  # session_store URLs: TCP, TCP with TLS, a socket


def _setting(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ServerConfig:
    """The server's settings (see each field's help)."""

    host: str = _setting("127.0.0.1", "address to listen on (0.0.0.0: every interface)")
    port: int = _setting(50051, "gRPC port (0: any free port)")
    metrics_port: int = _setting(9464, "Prometheus metrics HTTP port (0: no metrics endpoint)")
    models: tuple[str, ...] = _setting(
        (),
        "checkpoints (NAME, NAME.json or NAME.safetensors) or folders of them; "
        "none: the shipped zoo",
    )
    default_model: str = _setting(
        "",
        "model of sessions that name none (empty: the zoo's default if loaded, else the first)",
    )
    session_ttl_s: float = _setting(3600.0, "seconds an idle session lives")
    max_sessions: int = _setting(1000, "sessions held in total")
    max_sessions_per_owner: int = _setting(32, "sessions one caller may hold")
    max_support_examples: int = _setting(200, "support examples one session may hold")
    max_events: int = _setting(
        2_000_000, "events in one support example, one query or one stream window"
    )
    max_inner_steps: int = _setting(100, "the most inner-loop steps a session may ask for")
    max_message_bytes: int = _setting(16 * 1024 * 1024, "largest gRPC message, in bytes")
    snapshot_dir: str = _setting(
        "",
        "folder where sessions are saved to survive a restart "
        "(empty: sessions live in memory only)",
    )
    session_store: str = _setting(
        "memory",
        "where sessions live: memory (this process), or a Redis that replicas share: "
        "redis://HOST:PORT/DB, rediss://HOST:PORT/DB (TLS) or unix://PATH?db=DB",
    )
    session_store_timeout_s: float = _setting(
        2.0, "seconds one call to a Redis session store may take before a request is UNAVAILABLE"
    )
    workers: int = _setting(0, "threads of model work (0: one per usable core)")
    queue_limit: int = _setting(
        64, "model jobs that may wait for a worker before new requests get RESOURCE_EXHAUSTED"
    )
    torch_threads: int = _setting(0, "torch intra-op threads (0: usable cores / workers, >= 1)")
    malloc_arenas: int = _setting(
        0,
        "glibc malloc arenas `spikeshot serve`'s process may use "
        "(0: one per usable core; MALLOC_ARENA_MAX, where set, wins)",
    )
    malloc_trim_s: float = _setting(
        1.0,
        "after model work, hand the C heap's free pages back to the system at most once in "
        "this many seconds (glibc's malloc_trim; 0: never)",
    )
    prepared_sessions: int = _setting(
        32,
        "sessions whose weights Classify keeps prepared for forward passes, about 2 MB each, "
        "once for all sessions that share their model's hidden layers (0: prepare them on "
        "every call)",
    )
    classify_batch: int = _setting(
        16,
        "Classify calls of one model that run as one forward pass when they wait together "
        "(1: one at a time)",
    )
    io_threads: int = _setting(16, "gRPC threads that read and write streams")
    tls_cert: str = _setting("", "PEM certificate chain of the server (with tls_key: TLS on)")
    tls_key: str = _setting("", "PEM private key of the server")
    tls_client_ca: str = _setting(
        "", "PEM CA bundle; when set, clients must present a certificate it signed"
    )
    tokens_file: str = _setting("", "file of accepted bearer tokens (empty: no token needed)")
    shutdown_grace_s: float = _setting(
        30.0, "on SIGTERM or SIGINT, seconds that requests in flight may still run"
    )

    def __post_init__(self):
        problems = []
        for name in ("port", "metrics_port"):
            if not 0 <= getattr(self, name) <= 65535:
                problems.append(f"{name} must be in 0..65535, got {getattr(self, name)}")
        for name in (
            "max_sessions",
            "max_sessions_per_owner",
            "max_support_examples",
            "max_events",
            "max_inner_steps",
            "max_message_bytes",
            "classify_batch",
            "io_threads",
        ):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in (
            "workers",
            "queue_limit",
            "torch_threads",
            "malloc_arenas",
            "prepared_sessions",
        ):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.malloc_trim_s < 0:
            problems.append(f"malloc_trim_s must be >= 0, got {self.malloc_trim_s}")
        if self.shutdown_grace_s < 0:
            problems.append(f"shutdown_grace_s must be >= 0, got {self.shutdown_grace_s}")
        if self.session_ttl_s <= 0:
            problems.append(f"session_ttl_s must be > 0, got {self.session_ttl_s}")
        if self.session_store_timeout_s <= 0:
            problems.append(
                f"session_store_timeout_s must be > 0, got {self.session_store_timeout_s}"
            )
        if self.session_store != "memory":
            if urlsplit(self.session_store).scheme not in REDIS_SCHEMES:
                schemes = ", ".join(f"{s}://" for s in REDIS_SCHEMES)
                problems.append(
                    f"session_store must be memory or a URL of {schemes}, "
                    f"got {self.session_store.split('@')[-1]!r}"
                )
            if self.snapshot_dir:
                problems.append(
                    "snapshot_dir is for the memory session store; Redis keeps the sessions"
                )
        if bool(self.tls_cert) != bool(self.tls_key):
            problems.append("tls_cert and tls_key go together: set both or neither")
        if self.tls_client_ca and not self.tls_cert:
            problems.append("tls_client_ca needs tls_cert and tls_key")
        if problems:
            raise ValueError("invalid server config: " + "; ".join(problems))

    @property
    def worker_count(self) -> int:
        """``workers``, or the usable cores when 0."""
        return self.workers or usable_cores()

    @property
    def torch_thread_count(self) -> int:
        """``torch_threads``, or the usable cores shared among the workers when 0."""
        return self.torch_threads or max(1, usable_cores() // self.worker_count)

    @property
    def malloc_arena_count(self) -> int:
        """``malloc_arenas``, or the usable cores when 0."""
        return self.malloc_arenas or usable_cores()

    @classmethod
    def load(
        cls,
        toml_path: str | Path | None = None,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, object] | None = None,
    ) -> ServerConfig:
        """Defaults, then the TOML file's ``[server]`` table, then ``environ`` (default
        ``os.environ``), then ``overrides`` (e.g. from ``flag_overrides``)."""
        values: dict[str, object] = {}
        if toml_path is not None:
            table = tomllib.loads(Path(toml_path).read_text()).get("server", {})
            values.update(_parse(table, f"{toml_path} [server]", from_text=False))
        env = os.environ if environ is None else environ
        found = {
            k[len(ENV_PREFIX) :].lower(): v for k, v in env.items() if k.startswith(ENV_PREFIX)
        }
        values.update(_parse(found, "environment SPIKESHOT_*", from_text=True, strict=False))
        values.update(_parse(dict(overrides or {}), "flags", from_text=False))
        return cls(**values)


_FIELDS = {f.name: f for f in fields(ServerConfig)}


def _parse(raw: Mapping[str, object], source: str, from_text: bool, strict: bool = True) -> dict:
    """Typed values of known settings; unknown keys are an error when ``strict`` (the environment
    may hold other SPIKESHOT_ variables, e.g. of the client)."""
    out = {}
    for name, value in raw.items():
        if name not in _FIELDS:
            if strict:
                raise ValueError(f"{source}: unknown setting {name!r}; known: {', '.join(_FIELDS)}")
            continue
        kind = type(_FIELDS[name].default)
        try:
            if kind is tuple:
                items = value.split(",") if from_text else value
                if isinstance(items, str) or not all(isinstance(v, str) for v in items):
                    raise TypeError("expected a list of strings")
                out[name] = tuple(v.strip() for v in items if v.strip())
            elif from_text:
                out[name] = kind(value)
            elif kind is float and isinstance(value, int) and not isinstance(value, bool):
                out[name] = float(value)
            elif type(value) is not kind:
                raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
            else:
                out[name] = value
        except (TypeError, ValueError) as e:
            raise ValueError(f"{source}: setting {name!r}: {e}") from None
    return out


def add_flags(parser: argparse.ArgumentParser) -> None:
    """A ``--name`` flag per setting (default: not given, so lower sources stand)."""
    for f in fields(ServerConfig):
        kind = type(f.default)
        extra = {"nargs": "+"} if kind is tuple else {"type": kind}
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            default=None,
            help=f"{f.metadata['help']} (default: {f.default!r})",
            **extra,
        )


def flag_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The settings given as flags, for ``ServerConfig.load(overrides=...)``."""
    out = {}
    for f in fields(ServerConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            out[f.name] = tuple(value) if isinstance(value, list) else value
    return out
