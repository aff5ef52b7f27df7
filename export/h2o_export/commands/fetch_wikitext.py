"""Fetch WikiText-2 raw (test, valid) from the Hugging Face hub into data/wikitext-2-raw-v1/.

    python export/fetch_wikitext.py                      # wiki.test.raw and wiki.valid.raw (needs internet)
    python export/fetch_wikitext.py --split test --from-rows rows.json   # convert local rows, no network
    python export/fetch_wikitext.py --split test --from-parquet test-00000-of-00001.parquet  # needs pyarrow

Source: the dataset `Salesforce/wikitext`, config `wikitext-2-raw-v1`, read through the
datasets-server rows API (JSON, stdlib only, 100 rows a request). The hub stores one row per
line of the original file with whitespace-only lines turned into ""; the original raw file is
rebuilt by writing every row in order, an empty row as " \\n" (how blank lines appear in the
original files) and any other row unchanged (it already ends in "\\n"). The result is checked
against the sha256 of the canonical files (the same bytes as ../shared/data/wikitext-2-raw-v1);
a mismatch writes nothing and exits 1 unless --no-verify.

An existing output is not overwritten without --force; files are written to a temporary file
beside the output and renamed into place. Exit status: 0 ok, 1 checksum mismatch, 2 bad input
or network error. Then point the engine at it: `--data data/wikitext-2-raw-v1/wiki.test.raw`
or H2O_DATA. The command line over h2o_export.wikitext.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from . import checkout
from ..wikitext import CONFIG, SPLITS, FetchError, check, fetch_rows, read_rows_file, rows_to_raw, write_atomic  # noqa: E501

DEFAULT_OUT = checkout() / "data" / CONFIG


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Exit status: 0 ok, 1 checksum mismatch, 2 bad input or network error.")
    ap.add_argument("--split", choices=list(SPLITS), action="append",
                    help="test or valid (repeatable; default both, or test with --from-*)")
    ap.add_argument("--out-dir", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--from-rows", type=Path, metavar="FILE",
                     help="convert local rows instead of fetching: rows-API JSON page(s), a JSON list, or JSON lines")
    src.add_argument("--from-parquet", type=Path, metavar="FILE", help="convert a local parquet file (needs pyarrow)")
    ap.add_argument("--force", action="store_true", help="replace existing output files")
    ap.add_argument("--no-verify", action="store_true", help="write even if the sha256 differs from the canonical file")
    args = ap.parse_args(argv)

    local = args.from_rows or args.from_parquet
    splits = args.split or (["test"] if local else list(SPLITS))
    try:
        if local and len(splits) != 1:
            raise FetchError("--from-rows/--from-parquet convert one file: give one --split")
        for split in splits:
            out = args.out_dir / SPLITS[split][1]
            if out.exists() and not args.force:  # before any download
                raise FetchError(f"{out} exists; pass --force to replace it")
            rows = read_rows_file(local) if local else fetch_rows(split)
            data = rows_to_raw(rows).encode("utf-8")
            bad = check(split, data)
            if bad and not args.no_verify:
                print(f"error: {split}: {bad}; nothing written (--no-verify writes it anyway)", file=sys.stderr)
                return 1
            write_atomic(out, data, args.force)
            print(f"{out}: {len(rows)} lines, {len(data)} bytes" + (f" (not canonical: {bad})" if bad else ", sha256 ok"))
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
