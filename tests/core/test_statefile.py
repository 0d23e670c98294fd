import os
import stat

from logflume.statefile import make_state_dir, remove_durably, write_atomic


def test_write_atomic_replaces_whole_file_owner_only(tmp_path):
    path = tmp_path / "positions.json"
    path.write_bytes(b"old content that is longer than the new one")
    os.chmod(path, 0o644)
    # a temporary file left by a crash, with loose bits, must not hand them on
    stale = tmp_path / ".positions.json.tmp"
    stale.write_bytes(b"torn")
    os.chmod(stale, 0o666)
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not stale.exists()


def test_write_atomic_refuses_a_symlinked_temporary(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    (tmp_path / ".state.tmp").symlink_to(victim)
    try:
        write_atomic(tmp_path / "state", b"x")
    except OSError:
        pass
    assert victim.read_bytes() == b"keep"


def test_remove_durably_and_state_dir(tmp_path):
    d = make_state_dir(tmp_path / "a" / "b")
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    f = d / "f"
    f.write_bytes(b"1")
    remove_durably(f)
    remove_durably(f)  # already gone: no error
    assert not f.exists()
