"""Files written whole or not at all (pyro_vae.files)."""

import os

import pytest

from pyro_vae.files import atomic_path, atomic_write, write_csv_atomically, write_text_atomically


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("durable", [False, True])
def test_the_new_content_replaces_the_old_and_nothing_else_is_left(tmp_path, durable):
    path = tmp_path / "deep" / "er" / "file.bin"  # folders made as needed
    with atomic_write(path, durable=durable) as f:
        f.write(b"first")
    with atomic_write(path, durable=durable) as f:
        f.write(b"second")
        assert path.read_bytes() == b"first"  # unchanged until the block ends
    assert path.read_bytes() == b"second"
    assert leftovers(path.parent) == []


def test_an_error_midway_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    write_text_atomically(path, "old\n")
    with pytest.raises(OSError, match="disk full"), atomic_write(path) as f:
        f.write(b"half of the new")
        raise OSError("disk full")
    assert path.read_text() == "old\n" and leftovers(tmp_path) == []


def test_a_full_disk_raises_and_leaves_the_old_file(tmp_path, monkeypatch):
    """Writes that really fail with ENOSPC: the file's bytes redirected to /dev/full."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    path = tmp_path / "report.html"
    write_text_atomically(path, "old")
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, mode: (os.close(fd), real_fdopen(
        os.open("/dev/full", os.O_WRONLY), mode))[1])
    with pytest.raises(OSError, match="No space left"):
        write_text_atomically(path, "new" * 100_000)
    monkeypatch.undo()
    assert path.read_text() == "old" and leftovers(tmp_path) == []


def test_writers_at_once_use_their_own_temporaries_and_the_last_rename_wins(tmp_path):
    path = tmp_path / "config.toml"
    with atomic_write(path) as first, atomic_write(path) as second:
        assert len(leftovers(tmp_path)) == 2
        first.write(b"a")
        second.write(b"b")
    # the inner block (second) ends, and renames, first; the outer one last
    assert path.read_bytes() == b"a" and leftovers(tmp_path) == []


def test_permissions_are_those_of_a_plain_open(tmp_path):
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    atomic = write_text_atomically(tmp_path / "atomic", "")
    assert atomic.stat().st_mode == plain.stat().st_mode


def test_text_is_utf8_whatever_the_locale(tmp_path):
    path = write_text_atomically(tmp_path / "note.md", "log p(x) ≥ ELBO – KL\n")
    assert path.read_bytes().decode("utf-8") == "log p(x) ≥ ELBO – KL\n"


def test_a_writer_that_takes_a_file_name_gets_a_temporary_one(tmp_path):
    """``atomic_path``: the writer is handed a fresh name beside the target (as NetCDF's
    writers want a name, not a file); the target changes only when the block ends."""
    path = tmp_path / "idata.nc"
    write_text_atomically(path, "old")
    with atomic_path(path) as tmp:
        assert tmp.parent == tmp_path and tmp != path and tmp.exists()
        tmp.write_text("new")
        assert path.read_text() == "old"
    assert path.read_text() == "new" and leftovers(tmp_path) == []
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("the writer failed")
    assert path.read_text() == "new" and leftovers(tmp_path) == []


def test_csv_rows_are_written_as_the_csv_module_writes_them(tmp_path):
    """The header, then the rows: commas and quotes quoted, csv's own CRLF line ends, UTF-8."""
    path = write_csv_atomically(tmp_path / "table.csv",
                                [["algorithm", "elbo"], ["svi, 5 particles", -1.5],
                                 ['nuts "4 chains"', ""], ["μ-fit", 2]])
    assert path.read_bytes() == ('algorithm,elbo\r\n"svi, 5 particles",-1.5\r\n'
                                 '"nuts ""4 chains""",\r\nμ-fit,2\r\n').encode()
    assert leftovers(tmp_path) == []
