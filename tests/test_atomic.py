"""The atomic file write: a new file or the old one, never a torn one, and no temporary left."""

import pytest

from spikeshot.events.atomic import write_atomic


def test_write_replaces_the_file_and_leaves_nothing_beside_it(tmp_path):
    target = tmp_path / "deep" / "result.json"
    assert write_atomic(target, "first\n") == target
    write_atomic(target, b"\x00second")
    assert target.read_bytes() == b"\x00second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "card.json"
    write_atomic(target, "old")
    with pytest.raises(TypeError):
        write_atomic(target, 42)  # not bytes or text: fails while writing the temporary file
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.json"]
