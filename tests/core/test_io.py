"""Atomic writes and JSON Lines reading: no half files, the usual file mode, errors that name the line."""

import gzip
import os
import stat

import pytest

from circuitlab.core.errors import CircuitlabError
from circuitlab.core.io import read_json, read_jsonl, write_json_atomic, write_text_atomic


def test_atomic_write_replaces_whole_files_with_the_usual_mode(tmp_path):
    path = write_text_atomic(tmp_path / "sub" / "a.txt", "one")
    write_text_atomic(path, "two")
    assert path.read_text() == "two" and os.listdir(path.parent) == ["a.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = write_json_atomic(tmp_path / "c.json", {"a": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"a": object()})
    assert read_json(path) == {"a": 1} and os.listdir(tmp_path) == ["c.json"]


def test_jsonl_rows_and_errors(tmp_path):
    plain = tmp_path / "rows.jsonl"
    plain.write_text('{"a": 1}\n\n{"a": 2}\n')
    packed = tmp_path / "rows.jsonl.gz"
    with gzip.open(packed, "wt") as f:
        f.write('{"a": 1}\n{"a": 2}\n')
    assert [row for _, row in read_jsonl(plain)] == [{"a": 1}, {"a": 2}] == [row for _, row in read_jsonl(packed)]
    assert read_jsonl(plain)[1][0] == f"{plain} line 3"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(CircuitlabError, match=r"bad.jsonl line 2: malformed JSON"):
        read_jsonl(bad)
    bad.write_text('[1, 2]\n')
    with pytest.raises(CircuitlabError, match="line 1: expected a JSON object"):
        read_jsonl(bad)
    with pytest.raises(CircuitlabError, match="cannot read"):
        read_jsonl(tmp_path / "missing.jsonl")


def test_nan_is_written_as_null_and_read_back_as_nan(tmp_path):
    import json
    import math

    from circuitlab.core.io import nan_to_null, null_to_nan

    obj = {"t": [[1.0, math.nan], [math.inf, 2]], "x": (math.nan,), "s": "NaN"}
    assert nan_to_null(obj) == {"t": [[1.0, None], [None, 2]], "x": [None], "s": "NaN"}
    path = write_json_atomic(tmp_path / "n.json", obj)
    assert "NaN" not in path.read_text().replace('"NaN"', "") and json.loads(path.read_text())["x"] == [None]
    back = null_to_nan([1, None, 2.5])
    assert back[0] == 1.0 and math.isnan(back[1]) and back[2] == 2.5


def test_writable_paths_are_checked_before_any_work(tmp_path):
    from circuitlab.core.io import check_writable

    (tmp_path / "f").write_text("")
    assert check_writable(tmp_path / "new" / "deeper" / "c.json") == tmp_path / "new" / "deeper" / "c.json"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    for path, kind, message in [
        (tmp_path / "f" / "c.json", "file", "f is a file, not a directory"),
        (tmp_path / "f", "dir", "is a file, not a directory"),
        (tmp_path, "file", "is a directory, not a file"),
    ]:
        with pytest.raises(CircuitlabError, match=message):
            check_writable(path, kind)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # the probe files went


def test_a_directory_is_replaced_whole_or_not_at_all(tmp_path):
    from circuitlab.core.io import write_dir_atomic

    target = tmp_path / "model"
    write_dir_atomic(target, lambda d: (d / "a.txt").write_text("1"))
    assert [p.name for p in target.iterdir()] == ["a.txt"]

    def half(d):
        (d / "b.txt").write_text("2")
        raise RuntimeError("killed while writing")

    with pytest.raises(RuntimeError):
        write_dir_atomic(target, half)
    assert [p.name for p in target.iterdir()] == ["a.txt"] and sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_written_directory_gets_the_usual_mode(tmp_path):
    from circuitlab.core.io import write_dir_atomic

    umask = os.umask(0)
    os.umask(umask)
    target = write_dir_atomic(tmp_path / "d", lambda d: (d / "f").write_text("x"))
    assert stat.S_IMODE(target.stat().st_mode) == 0o777 & ~umask


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_a_place_where_no_file_can_be_made_is_refused_even_for_root():
    from circuitlab.core.io import check_writable

    with pytest.raises(CircuitlabError, match="cannot be written"):
        check_writable("/proc/circuitlab-test/c.json")
