"""Atomic writes and JSON Lines reading: no half files, the usual file mode, errors that name the line."""

import gzip
import os
import stat

import pytest

from circuitlab.errors import CircuitlabError
from circuitlab.io import read_json, read_jsonl, write_json_atomic, write_text_atomic


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
