"""The line scan of the audit's logs: the files behind each source, their bytes read once beside DuckDB.

A source is a file, a list of files (rotated logs, oldest first; ``.gz`` is read as gzip), text, bytes or a list
of lines; text is written to a file first (`files_of`). One pass over a file's bytes (`scan_file`) counts its
lines and indexes the newlines per block of `BLOCK` bytes, so the raw text of a given line is read back without
counting from the start (`raw_lines`); `find_blank` finds the whitespace-only lines DuckDB skips, and
`LineNumbers` turns a row of the reader into its line number in its file. `kubectl logs` prefixes in front of
the JSON records are stripped into a copy (`prefixed`, `strip_prefixes`).
"""
from __future__ import annotations

import bisect
import gzip
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Union

SCAN_BYTES = 16 << 20
BLOCK_BITS = 14
BLOCK = 1 << BLOCK_BITS           # the line index counts newlines per block of this many bytes

# kubectl logs output: optional "[pod/NAME/CONTAINER] " and "--timestamps" prefixes before the JSON record
_PREFIX = re.compile(rb"^(\[pod/[^\]]*\] )?(\d{4}-\d\d-\d\dT[0-9:.]+(Z|[+-]\d\d:\d\d) )?(?=\{)")
_HAS_PREFIX = re.compile(rb"(?m)^(\[pod/[^\]]*\] )?(\d{4}-\d\d-\d\dT[0-9:.]+(Z|[+-]\d\d:\d\d) )?(?<= )\{")

Source = Union[Path, str, bytes, Iterable[str], list]


def gzip_damage(path: Path) -> Optional[str]:
    """Why a .gz log cannot be read to its end (truncated, corrupt), or None (also for files that are not .gz)."""
    import zlib

    if not Path(path).name.endswith(".gz"):
        return None
    try:
        with gzip.open(path, "rb") as f:
            while f.read(SCAN_BYTES):
                pass
    except (OSError, EOFError, zlib.error) as exc:        # BadGzipFile is an OSError
        return (str(exc) or type(exc).__name__)[:200]
    return None


def _open(path: Path):
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


_WS = b" \t\r\x0b\x0c"


def _blank_lines(chunk: bytes, first: int) -> list[int]:
    """Line numbers (1-based, first line of the chunk = first + 1) of whitespace-only lines of a chunk of whole
    lines. Cheap when there are none (the usual case)."""
    if not (chunk.startswith((b"\n", b" ", b"\t", b"\r")) or b"\n\n" in chunk or b"\n\r\n" in chunk
            or b"\n " in chunk or b"\n\t" in chunk):
        return []
    import numpy as np

    arr = np.frombuffer(chunk, dtype=np.uint8)
    nl = np.flatnonzero(arr == 10)
    starts = np.concatenate(([0], nl + 1))
    ends = np.concatenate((nl, [len(arr)]))
    if len(arr) and arr[-1] == 10:
        starts, ends = starts[:-1], ends[:-1]
    ws = np.isin(arr, np.frombuffer(_WS + b"\n", dtype=np.uint8))
    cs = np.concatenate(([0], np.cumsum(~ws)))
    blank = (cs[ends] - cs[starts]) == 0
    return (np.flatnonzero(blank) + first + 1).tolist()


@dataclass
class FileScan:
    """A file's lines: how many, whether the last one is complete, and (plain files) the newlines before each
    block of `BLOCK` bytes, so the raw text of a given line is found without counting from the start."""
    path: Path
    lines: int = 0
    blank: Optional[list] = None         # found only when DuckDB's row count says there are blank lines
    ends_with_newline: bool = True
    before: Optional[object] = None      # numpy int64: newlines before block k (plain files)


def scan_file(path: Path) -> FileScan:
    """One pass over the file's bytes (numpy over a memory map: no copy) counting newlines per block."""
    import numpy as np

    s = FileScan(path)
    if path.name.endswith(".gz"):
        last = b"\n"
        with _open(path) as f:
            while True:
                chunk = f.read(SCAN_BYTES)
                if not chunk:
                    break
                s.lines += chunk.count(b"\n")
                last = chunk[-1:]
    else:
        # read into one reused buffer (a memory map would count the whole file as this process's memory)
        buf = bytearray(BLOCK << 8)
        view = np.frombuffer(buf, dtype=np.uint8)
        counts, last = [], b"\n"
        with open(path, "rb") as f:
            while True:
                got = f.readinto(buf)
                if not got:
                    break
                nl = np.flatnonzero(view[:got] == 10)
                counts.append(np.bincount(nl >> BLOCK_BITS, minlength=(got + BLOCK - 1) >> BLOCK_BITS))
                last = bytes(buf[got - 1:got])
        if not counts:
            return s
        s.before = np.concatenate(([0], np.cumsum(np.concatenate(counts))))
        s.lines = int(s.before[-1])
    if last != b"\n":
        s.lines += 1
    s.ends_with_newline = last == b"\n"
    return s


def prefixed(path: Path) -> bool:
    """Whether the file's first lines carry `kubectl logs` prefixes in front of the JSON records."""
    with _open(path) as f:
        return bool(_HAS_PREFIX.search(f.read(1 << 16)))


def find_blank(path: Path) -> list[int]:
    """Line numbers of the whitespace-only lines of a file (DuckDB skips them)."""
    out: list[int] = []
    n = 0
    with _open(path) as f:
        rest = b""
        while True:
            chunk = f.read(SCAN_BYTES)
            if not chunk:
                break
            chunk = rest + chunk
            cut = chunk.rfind(b"\n")
            if cut < 0:
                rest = chunk
                continue
            whole, rest = chunk[:cut + 1], chunk[cut + 1:]
            out += _blank_lines(whole, n)
            n += whole.count(b"\n")
        if rest:
            out += _blank_lines(rest, n)
    return out


def strip_prefixes(path: Path, out: Path) -> None:
    """Copy of a `kubectl logs` file without the pod and timestamp prefixes in front of each JSON record."""
    with _open(path) as f, open(out, "wb") as w:
        for line in f:
            w.write(_PREFIX.sub(b"", line, count=1))


def raw_lines(scan: FileScan, wanted: list[int]) -> dict[int, bytes]:
    """The raw bytes (without the line end) of the given 1-based line numbers."""
    want = sorted(set(wanted))
    if not want:
        return {}
    if scan.before is None:
        return _raw_lines_streamed(scan.path, want)
    import numpy as np

    out: dict[int, bytes] = {}
    with open(scan.path, "rb") as f:
        for n in want:
            k = n - 1                                    # newlines before the line
            if k == 0:
                start = 0
            else:
                b = int(np.searchsorted(scan.before, k, side="left")) - 1     # block holding the k-th newline
                f.seek(b * BLOCK)
                nl = np.flatnonzero(np.frombuffer(f.read(BLOCK), dtype=np.uint8) == 10)
                start = b * BLOCK + int(nl[k - int(scan.before[b]) - 1]) + 1
            f.seek(start)
            parts = []
            while True:
                piece = f.read(BLOCK)
                cut = piece.find(b"\n")
                if cut >= 0 or not piece:
                    parts.append(piece[:cut] if cut >= 0 else piece)
                    break
                parts.append(piece)
            out[n] = b"".join(parts).rstrip(b"\r")
    return out


def _raw_lines_streamed(path: Path, want: list[int]) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    k, n, rest = 0, 0, b""
    with _open(path) as f:
        while k < len(want):
            chunk = f.read(SCAN_BYTES)
            if not chunk:
                if rest:
                    chunk, rest = rest + b"\n", b""
                else:
                    break
            else:
                chunk, rest = rest + chunk, b""
                cut = chunk.rfind(b"\n")
                chunk, rest = chunk[:cut + 1], chunk[cut + 1:]
            c = chunk.count(b"\n")
            if want[k] <= n + c:
                lines = chunk.split(b"\n")
                while k < len(want) and want[k] <= n + c:
                    out[want[k]] = lines[want[k] - n - 1].rstrip(b"\r")
                    k += 1
            n += c
    return out


def files_of(level: str, src: Source, tmp: Path, k: int) -> list[Path]:
    if isinstance(src, Path):
        return [src]
    if isinstance(src, (list, tuple)) and src and all(isinstance(x, Path) for x in src):
        return list(src)
    f = tmp / f"source-{k}.log"
    if isinstance(src, str):
        f.write_bytes(src.encode("utf-8", "surrogateescape"))
    elif isinstance(src, (bytes, bytearray)):
        f.write_bytes(bytes(src))
    else:
        lines = list(src)
        f.write_bytes(b"\n".join(x.encode("utf-8", "surrogateescape") if isinstance(x, str) else bytes(x)
                                 for x in lines) + (b"\n" if lines else b""))
    return [f]



class LineNumbers:
    """A row's line number in its file: its place among the file's rows plus the blank lines before it."""

    def __init__(self, files: list, scans: list):
        self.r0 = {f[0]: f[3] for f in files}
        self.before = {fid: [b - (j + 1) for j, b in enumerate(s.blank or [])] for fid, (_, s, _) in enumerate(scans)}
        # files in row order (an empty file shares its first row id with the next: the later one holds the rows)
        self._starts = sorted((r0, fid) for fid, r0 in self.r0.items())

    def at(self, rowid: int) -> tuple[int, int]:
        """(file, line number) of a row id."""
        fid = self._starts[bisect.bisect_right(self._starts, (int(rowid), float("inf"))) - 1][1]
        return fid, self(fid, rowid)

    def __call__(self, fid: int, rowid: int) -> int:
        p = int(rowid) - self.r0[fid]
        return p + 1 + bisect.bisect_right(self.before[fid], p)

