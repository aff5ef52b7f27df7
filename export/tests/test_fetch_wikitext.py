"""File handling of export/fetch_wikitext.py (h2o_export.wikitext) on local temporary files (no
network): rows -> raw text, the checksum (round trip of a WikiText-2 raw file: the committed
excerpt, or $H2O_DATA), refusal to overwrite, atomic writes, paging of the rows API through an
injected fetcher, parquet input (pyarrow, a test requirement)."""

from __future__ import annotations

import hashlib
import json
import urllib.parse

import pytest
from common import data_path  # noqa: E402

from h2o_export.commands import fetch_wikitext as cli  # noqa: E402  (export/fetch_wikitext.py)
from h2o_export import wikitext as fw  # noqa: E402

ROWS = ["", " = Title = \n", "", " Some text , here . \n", "", " = = Section = = \n", ""]
RAW = " \n = Title = \n \n Some text , here . \n \n = = Section = = \n \n"


def raw_to_rows(text: str) -> list[str]:
    """The hub's rows for a raw file: one per line, whitespace-only lines as ""."""
    lines = text.split("\n")
    assert lines[-1] == ""
    return ["" if not line.strip() else line + "\n" for line in lines[:-1]]


def api_pages(rows: list[str], page: int = fw.PAGE) -> list[dict]:
    return [{"rows": [{"row_idx": i + j, "row": {"text": t}, "truncated_cells": []}
                      for j, t in enumerate(rows[i:i + page])],
             "num_rows_total": len(rows), "num_rows_per_page": page, "partial": False}
            for i in range(0, len(rows), page)]


def test_rows_to_raw():
    assert fw.rows_to_raw(ROWS) == RAW
    assert raw_to_rows(RAW) == ROWS
    with pytest.raises(fw.FetchError):
        fw.rows_to_raw(["a\n", None])


@pytest.mark.parametrize("form", ["page", "pages", "dicts", "strings", "jsonl"])
def test_read_rows_file_forms(tmp_path, form):
    if form == "jsonl":
        p = tmp_path / "rows.jsonl"
        p.write_text("".join(json.dumps({"text": t}) + "\n" for t in ROWS), encoding="utf-8")
    else:
        doc = {"page": api_pages(ROWS)[0], "pages": api_pages(ROWS, page=3),
               "dicts": [{"text": t} for t in ROWS], "strings": ROWS}[form]
        p = tmp_path / "rows.json"
        p.write_text(json.dumps(doc), encoding="utf-8")
    assert fw.read_rows_file(p) == ROWS


def test_read_rows_file_errors(tmp_path):
    with pytest.raises(fw.FetchError, match="no such file"):
        fw.read_rows_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(fw.FetchError, match="not JSON"):
        fw.read_rows_file(bad)
    bad.write_text(json.dumps([{"text": 3}]), encoding="utf-8")
    with pytest.raises(fw.FetchError, match="row 0"):
        fw.read_rows_file(bad)
    bad.write_bytes(b"\xff\xfe[]")
    with pytest.raises(fw.FetchError, match="UTF-8"):
        fw.read_rows_file(bad)


def test_canonical_round_trip(tmp_path, capsys, monkeypatch):
    """Rows made from a WikiText-2 raw file convert back to the same bytes, checksum ok. The file
    is the committed excerpt, whose own size and sha256 then stand in for the whole file's; with
    H2O_DATA=.../wiki.test.raw the canonical checksum itself is checked."""
    src = data_path()
    original = src.read_bytes()
    sha = hashlib.sha256(original).hexdigest()
    if sha != fw.SPLITS["test"][3]:
        monkeypatch.setitem(fw.SPLITS, "test", fw.SPLITS["test"][:2] + (len(original), sha))
    rows_file = tmp_path / "rows.json"
    rows_file.write_text(json.dumps(api_pages(raw_to_rows(original.decode("utf-8")))), encoding="utf-8")
    out_dir = tmp_path / "out"
    assert cli.main(["--split", "test", "--from-rows", str(rows_file), "--out-dir", str(out_dir)]) == 0
    assert (out_dir / "wiki.test.raw").read_bytes() == original
    assert "sha256 ok" in capsys.readouterr().out
    assert sorted(p.name for p in out_dir.iterdir()) == ["wiki.test.raw"]  # no temporary file left


def test_checksum_mismatch_writes_nothing_unless_no_verify(tmp_path, capsys):
    rows_file = tmp_path / "rows.json"
    rows_file.write_text(json.dumps(ROWS), encoding="utf-8")
    out_dir = tmp_path / "out"
    args = ["--split", "valid", "--from-rows", str(rows_file), "--out-dir", str(out_dir)]
    assert cli.main(args) == 1
    assert "canonical" in capsys.readouterr().err
    assert not (out_dir / "wiki.valid.raw").exists()
    assert cli.main(args + ["--no-verify"]) == 0
    assert (out_dir / "wiki.valid.raw").read_text(encoding="utf-8") == RAW


def test_refuses_overwrite_without_force(tmp_path, capsys):
    rows_file = tmp_path / "rows.jsonl"
    rows_file.write_text("".join(json.dumps({"text": t}) + "\n" for t in ROWS), encoding="utf-8")
    out = tmp_path / "wiki.test.raw"
    out.write_text("keep me", encoding="utf-8")
    args = ["--from-rows", str(rows_file), "--out-dir", str(tmp_path), "--no-verify"]
    assert cli.main(args) == 2
    assert "--force" in capsys.readouterr().err
    assert out.read_text(encoding="utf-8") == "keep me"
    assert cli.main(args + ["--force"]) == 0
    assert out.read_text(encoding="utf-8") == RAW


def test_bad_input_exit_2(tmp_path, capsys):
    assert cli.main(["--from-rows", str(tmp_path / "nope.json"), "--out-dir", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err
    rows_file = tmp_path / "rows.json"
    rows_file.write_text(json.dumps(ROWS), encoding="utf-8")
    assert cli.main(["--split", "test", "--split", "valid", "--from-rows", str(rows_file),
                    "--out-dir", str(tmp_path)]) == 2
    assert "one --split" in capsys.readouterr().err
    assert not list(tmp_path.glob("wiki.*"))


def test_write_atomic_failure_keeps_old_file(tmp_path, monkeypatch):
    out = tmp_path / "wiki.test.raw"
    out.write_bytes(b"old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(fw.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        fw.write_atomic(out, b"new", force=True)
    assert out.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["wiki.test.raw"]  # temporary file removed


def test_write_atomic_creates_folder(tmp_path):
    out = tmp_path / "a" / "b" / "wiki.valid.raw"
    fw.write_atomic(out, b"x \n", force=False)
    assert out.read_bytes() == b"x \n"
    with pytest.raises(fw.FetchError, match="exists"):
        fw.write_atomic(out, b"y", force=False)


def test_fetch_rows_pages_through_the_api():
    rows = [f" line {i} \n" if i % 3 else "" for i in range(250)]
    pages = api_pages(rows)
    seen = []

    def get(url: str) -> bytes:
        q = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)
        assert q["dataset"] == [fw.DATASET] and q["config"] == [fw.CONFIG] and q["split"] == ["validation"]
        off, length = int(q["offset"][0]), int(q["length"][0])
        seen.append(off)
        assert length == fw.PAGE and off % fw.PAGE == 0
        return json.dumps(pages[off // fw.PAGE]).encode()

    assert fw.fetch_rows("valid", get=get, log=lambda *a, **k: None) == rows
    assert seen == [0, 100, 200]


def test_fetch_rows_network_error_is_fetch_error():
    def get(url: str) -> bytes:
        raise OSError("no route to host")

    with pytest.raises(fw.FetchError, match="no route to host"):
        fw.fetch_rows("test", get=get, log=lambda *a, **k: None)


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="pyarrow not installed (export/requirements-torch.txt: `make venv`)")
    import pyarrow.parquet as pq

    p = tmp_path / "test-00000-of-00001.parquet"
    pq.write_table(pa.table({"text": ROWS}), p)
    assert fw.read_rows_file(p) == ROWS
