"""``spikeshot-client`` against a real server on loopback: every subcommand in text and ``--json``,
streams from files (replayed at their recorded pace or faster) and from a fake live camera, the
exit codes of usage, input, server and connection errors, tokens, and the upload progress bar."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from client_fixtures import fake_camera, sequence
from service_fixtures import events, free_port, serving

from spikeshot.clients import sources
from spikeshot.clients.cli import (
    EXIT_BAD_FILE,
    EXIT_CONNECTION,
    EXIT_SERVER,
    EXIT_USAGE,
    main,
    upload_bar,
)
from spikeshot.events.formats import read, write

WAVE = Path(__file__).resolve().parents[1] / "clients" / "examples" / "wave.aedat4"
TOKEN = "robot-token-0123456789"


@pytest.fixture
def server():
    with serving() as running:
        yield running


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def json_lines(out: str) -> list:
    return [json.loads(line) for line in out.strip().splitlines()]


def rows(out: str) -> dict[str, str]:
    """A two-column table (names and values apart by two or more spaces) as a dict."""
    return dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in out.splitlines())


def support_folder(root: Path) -> Path:
    for cls, label in enumerate(("a", "b")):
        (root / label).mkdir(parents=True)
        for k in range(2):
            write(root / label / f"{k}.npz", events(cls, 10 * cls + k), 16, 16)
    (root / "a" / "notes.txt").write_text("ignored")
    return root


@pytest.fixture
def adapted(server, tmp_path, capsys) -> str:
    """The id of a session adapted on quadrant 0 as 'a' and quadrant 1 as 'b'."""
    code, out, _ = run(capsys, "session", "create", "--target", server.address, "--json")
    sid = json.loads(out)["session_id"]
    assert (
        run(
            capsys,
            "adapt",
            "--target",
            server.address,
            "--session",
            sid,
            "--support",
            support_folder(tmp_path / "support"),
        )[0]
        == 0
    )
    return sid


def test_models(server, capsys):
    code, out, _ = run(capsys, "models", "--target", server.address)
    assert code == 0
    header, line = out.strip().splitlines()
    assert header.split()[:4] == ["model", "default", "arch", "ways"]
    assert line.split()[:5] == ["tiny", "yes", "snn", "4", "4x2x8x8"]
    code, out, _ = run(capsys, "models", "--target", server.address, "--json")
    (model,) = json.loads(out)
    assert code == 0 and model["name"] == "tiny" and model["window_us"] == 4000
    assert model["card"]["model"]["arch"] == "snn"


def test_session_create_list_show_delete(server, capsys):
    target = ("--target", server.address)
    code, out, _ = run(
        capsys,
        "session",
        "create",
        *target,
        "--ways",
        "2",
        "--weight-bits",
        "6",
        "--rounding",
        "stochastic",
    )
    assert code == 0
    table = rows(out)
    sid = table["session"]
    assert table["ways"] == "2" and table["weights"] == "6-bit (global grid, stochastic rounding)"
    assert table["adapted"] == "not yet" and table["classes"] == "none yet"
    assert table["starts from"] == "meta-trained readout" and table["inner steps"] == "2"
    code, out, _ = run(capsys, "session", "create", *target, "--head", "prototype")
    assert code == 0 and rows(out)["starts from"] == "class means"
    assert rows(out)["inner steps"] == "0"
    assert run(capsys, "session", "delete", *target, rows(out)["session"])[0] == 0
    code, out, _ = run(capsys, "session", "create", *target, "--json")
    second = json.loads(out)
    assert code == 0 and second["settings"]["model"] == "tiny" and second["classes"] == []
    assert second["settings"]["head"] == "meta"
    code, out, _ = run(capsys, "session", "list", *target)
    assert code == 0 and sid in out and second["session_id"] in out
    code, out, _ = run(capsys, "session", "list", *target, "--json")
    assert [s["session_id"] for s in json.loads(out)] == [sid, second["session_id"]]
    code, out, _ = run(capsys, "session", "show", *target, sid, "--json")
    assert code == 0 and json.loads(out)["settings"]["ways"] == 2
    code, out, _ = run(capsys, "session", "delete", *target, sid)
    assert (code, out.strip()) == (0, f"deleted session {sid}")
    code, out, _ = run(capsys, "session", "delete", *target, second["session_id"], "--json")
    assert json.loads(out) == {"deleted": second["session_id"]}
    code, out, err = run(capsys, "session", "show", *target, sid)
    assert code == EXIT_SERVER and out == "" and "NOT_FOUND" in err and sid in err
    code, out, _ = run(capsys, "session", "list", *target)
    assert out.strip() == "no sessions"


def test_adapt_classify_export_import(server, tmp_path, capsys):
    target = ("--target", server.address)
    sid = json.loads(run(capsys, "session", "create", *target, "--json")[1])["session_id"]
    folder = support_folder(tmp_path / "support")
    code, out, _ = run(capsys, "adapt", *target, "--session", sid, "--support", folder)
    table = rows(out)
    assert code == 0 and table["classes"] == "a, b" and table["support examples"] == "4 (4 new)"
    assert table["support accuracy"] == "100.0%"
    code, out, _ = run(
        capsys, "adapt", *target, "--session", sid, "--support", folder, "--json", "--replace"
    )
    result = json.loads(out)
    assert (result["examples"], result["weights_version"]) == (4, 2)
    assert result["round_trip_ms"] >= result["timings"]["adapt_ms"] > 0

    queries = []
    for cls in (0, 1, 0):
        queries.append(tmp_path / f"q{len(queries)}.npz")
        write(queries[-1], events(cls, 90 + len(queries)), 16, 16)
    code, out, _ = run(capsys, "classify", *target, "--session", sid, *queries)
    lines = out.strip().splitlines()
    assert code == 0 and [line.split()[:2] for line in lines] == [
        [str(queries[0]), "a"],
        [str(queries[1]), "b"],
        [str(queries[2]), "a"],
    ]
    code, out, _ = run(
        capsys, "classify", *target, "--session", sid, "--candidate", "b", *queries, "--json"
    )
    answers = json_lines(out)
    assert [a["file"] for a in answers] == [str(q) for q in queries]
    assert all(a["label"] == "b" and a["probabilities"] == {"b": 1.0} for a in answers)

    exported = tmp_path / "session.bin"
    code, out, _ = run(capsys, "export", *target, "--session", sid, "--out", exported)
    assert code == 0 and f"to {exported}" in out and exported.stat().st_size > 0
    code, out, _ = run(capsys, "export", *target, "--session", sid, "-o", exported, "--json")
    assert json.loads(out)["bytes"] == exported.stat().st_size
    assert json.loads(out)["format"] == "session"
    nir_file = tmp_path / "session.nir"
    code, out, err = run(
        capsys, "export", *target, "--session", sid, "-o", nir_file, "--format", "nir"
    )  # the tiny model pools by maximum (test_nir exports an average-pooling one)
    assert code == EXIT_SERVER and "FAILED_PRECONDITION" in err and 'pool_kind = "avg"' in err
    assert not nir_file.exists()
    code, out, _ = run(capsys, "import", *target, exported, "--json")
    copy = json.loads(out)
    assert code == 0 and copy["classes"] == ["a", "b"] and copy["session_id"] != sid
    code, out, _ = run(capsys, "import", *target, exported)
    assert code == 0 and rows(out)["classes"] == "a, b" and rows(out)["adapted"] == "version 2"


def test_stream_a_file_prints_one_line_per_window(server, adapted, tmp_path, capsys):
    path = tmp_path / "stream.npz"
    write(path, sequence([0, 1, 1, 0]), 16, 16)
    target = ("--target", server.address, "--session", adapted)
    code, out, _ = run(capsys, "stream", *target, "--source", path, "--json")
    windows = json_lines(out)
    assert code == 0 and [w["label"] for w in windows] == ["a", "b", "b", "a"]
    assert [w["start_us"] for w in windows] == [0, 4000, 8000, 12000]
    code, out, _ = run(
        capsys, "stream", *target, "--source", path, "--window-ms", "8", "--hop-ms", "4"
    )
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 4
    assert lines[0].split()[:4] == ["0.000", "-", "0.008", "s"]
    assert lines[-1].endswith("(incomplete)")


def test_realtime_and_rate_replay_the_file_at_its_pace(server, adapted, capsys, monkeypatch):
    """--realtime and --rate pace the file through ``sources.replay`` (whose pacing
    test_sources checks on a fake clock); without them it streams as fast as it goes."""
    target = ("--target", server.address, "--session", adapted, "--source", WAVE)
    t = read(WAVE).events["t"]
    paced = []
    real_replay = sources.replay

    def replay(source, **kw):
        paced.append((kw["rate"], kw["chunk_us"]))
        return real_replay(source, **kw, sleep=lambda s: None)

    monkeypatch.setattr(sources, "replay", replay)
    code, out, _ = run(capsys, "stream", *target, "--realtime", "--window-ms", "100")
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == (t[-1] - t[0]) // 100_000 + 1
    assert lines[-1].endswith("(incomplete)")
    code, out, _ = run(capsys, "stream", *target, "--rate", "5", "--window-ms", "100")
    assert code == 0 and out.strip().splitlines() == lines
    assert run(capsys, "stream", *target, "--window-ms", "100")[0] == 0
    assert paced == [(1.0, 10_000), (5.0, 10_000)]  # the plain stream was not paced


def test_stream_from_a_fake_live_camera(server, adapted, tmp_path, capsys):
    port = free_port()
    with fake_camera(tmp_path, sequence([1, 0, 0, 1]), port=port):
        code, out, _ = run(
            capsys,
            "stream",
            "--target",
            server.address,
            "--session",
            adapted,
            "--source",
            f"dv://127.0.0.1:{port}",
            "--json",
        )
    assert code == 0 and [w["label"] for w in json_lines(out)] == ["b", "a", "a", "b"]


def test_exit_codes_tell_usage_input_server_and_connection_errors(
    server, adapted, tmp_path, capsys
):
    target = ("--target", server.address)
    assert run(capsys, "adapt", *target, "--support", tmp_path)[0] == EXIT_USAGE  # no --session
    assert run(capsys, "session", "create", *target, "--rounding", "up")[0] == EXIT_USAGE
    code, _, err = run(capsys, "stream", *target, "--session", adapted, "--source", "dv://camera")
    assert code == EXIT_USAGE and "expected dv://HOST:PORT" in err
    code, _, err = run(
        capsys, "adapt", *target, "--session", adapted, "--support", tmp_path / "support" / "a"
    )
    assert code == EXIT_USAGE and "no class sub-folders" in err

    code, _, err = run(capsys, "classify", *target, "--session", adapted, tmp_path / "none.npz")
    assert code == EXIT_BAD_FILE and "none.npz" in err
    broken = tmp_path / "broken.aedat4"
    broken.write_bytes(WAVE.read_bytes()[:5000])
    code, _, err = run(capsys, "classify", *target, "--session", adapted, broken)
    assert code == EXIT_BAD_FILE and "broken.aedat4" in err
    assert (
        run(
            capsys,
            "stream",
            *target,
            "--session",
            adapted,
            "--source",
            f"dv://127.0.0.1:{free_port()}",
        )[0]
        == EXIT_BAD_FILE
    )

    code, _, err = run(capsys, "session", "show", *target, "no-such-session")
    assert code == EXIT_SERVER and "NOT_FOUND" in err
    code, _, err = run(
        capsys,
        "classify",
        *target,
        "--session",
        adapted,
        tmp_path / "support" / "a" / "0.npz",
        "--candidate",
        "zebra",
    )
    assert code == EXIT_SERVER and "INVALID_ARGUMENT" in err and "zebra" in err

    gone = f"127.0.0.1:{free_port()}"
    code, _, err = run(capsys, "models", "--target", gone, "--retries", "0")
    assert code == EXIT_CONNECTION and f"cannot reach the server at {gone}" in err


def test_the_installed_command_exits_with_its_code(server):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "spikeshot.clients.cli",
            "models",
            "--json",
            "--target",
            f"127.0.0.1:{free_port()}",
            "--retries",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == EXIT_CONNECTION and done.stdout == ""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "spikeshot.clients.cli",
            "models",
            "--json",
            "--target",
            server.address,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and json.loads(done.stdout)[0]["name"] == "tiny"


def test_tokens_come_from_a_file_or_the_environment(tmp_path, capsys, monkeypatch):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN} robot\n")
    with serving(tokens_file=str(tokens)) as running:
        target = ("--target", running.address)
        code, _, err = run(capsys, "models", *target)
        assert code == EXIT_SERVER and "UNAUTHENTICATED" in err
        (tmp_path / "token").write_text(TOKEN + "\n")
        assert run(capsys, "models", *target, "--token-file", tmp_path / "token")[0] == 0
        monkeypatch.setenv("SPIKESHOT_TOKEN", TOKEN)
        assert run(capsys, "models", *target)[0] == 0


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_shows_only_on_uploads_of_more_than_a_second():
    quick, slow, piped = Terminal(), Terminal(), io.StringIO()
    with upload_bar("support", quick) as sent:
        sent(1000)
    with upload_bar("support", piped) as sent:
        sent(1000)
        time.sleep(1.1)
        sent(1000)
    with upload_bar("support", slow) as sent:
        sent(1000)
        time.sleep(1.1)
        sent(1000)
    assert quick.getvalue() == "" and piped.getvalue() == ""
    assert "support" in slow.getvalue() and "2.00kev" in slow.getvalue()
