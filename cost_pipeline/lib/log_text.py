"""Bytes of a text log (plain or gzip) cut into chunks of whole, numbered lines.

Blocks are read in large pieces and cut at line ends with numpy. Lines longer than
`MAX_LINE_BYTES` are reported and replaced by an empty line without ever being held whole, so a
file of binary junk with no line breaks costs no more memory than a block. A read error (a
truncated or corrupt gzip stream) ends the stream after every byte that could be read, and is
kept for the caller to report.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

MAX_LINE_BYTES = 1 << 20
READ_BYTES = 8 << 20
CHUNK_BYTES = 64 << 20
RAW_CHARS = 2000
READ_ERRORS = (OSError, EOFError, zlib.error, ValueError)


def bounded(text: str) -> str:
    """Raw text as kept in the quarantine: at most `RAW_CHARS` characters."""
    return text if len(text) <= RAW_CHARS else text[: RAW_CHARS - 1] + "…"


class SafeReader:
    """A binary stream whose read errors end the stream and are kept in `error`."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.error: str | None = None
        self.bytes_read = 0

    def read(self, size: int) -> bytes:
        return self._call(self.fh.read, size)

    def readline(self, limit: int) -> bytes:
        return self._call(self.fh.readline, limit)

    def _call(self, method: Callable[[int], bytes], size: int) -> bytes:
        if self.error is not None:
            return b""
        try:
            data = method(size)
        except READ_ERRORS as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            return b""
        self.bytes_read += len(data)
        return data


def open_binary(path: Path) -> IO[bytes]:
    raw = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    return Gunzip(raw) if path.name.lower().endswith(".gz") else raw


class Gunzip(io.RawIOBase):
    """A gzip stream (one or more members) that hands out every byte it could decompress
    before reporting a truncated or corrupt stream (`gzip.open` loses the last read's data)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.inflate = zlib.decompressobj(31)
        self.pending = b""  # compressed input not yet inflated
        self.out = bytearray()
        self.error: Exception | None = None
        self.started = False

    def read(self, size: int = -1) -> bytes:
        size = size if size >= 0 else 1 << 62
        while len(self.out) < size and self.error is None and self._inflate(size - len(self.out)):
            pass
        if not self.out and self.error is not None:
            raise self.error
        data = bytes(self.out[:size])
        del self.out[:size]
        return data

    def readline(self, limit: int = -1) -> bytes:
        limit = limit if limit >= 0 else 1 << 62
        while b"\n" not in self.out and len(self.out) < limit and self.error is None:
            if not self._inflate(1 << 16):
                break
        cut = self.out.find(b"\n")
        end = min(cut + 1 if cut >= 0 else len(self.out), limit)
        if not end and self.error is not None:
            raise self.error
        data = bytes(self.out[:end])
        del self.out[:end]
        return data

    def _inflate(self, want: int) -> bool:
        """Inflate up to `want` more bytes; False at the end of the stream."""
        try:
            if not self.pending:
                self.pending = self.raw.read(1 << 20)
                if not self.pending:
                    if self.started and not self.inflate.eof:
                        raise EOFError("the gzip stream is truncated")
                    return False
                if self.inflate.eof:  # the next member of a multi-member file
                    self.inflate = zlib.decompressobj(31)
            self.started = True
            self.out += self.inflate.decompress(self.pending, max(want, 1 << 16))
            self.pending = self.inflate.unconsumed_tail
            if self.inflate.eof and self.inflate.unused_data:
                self.pending = self.inflate.unused_data + self.pending
                self.inflate = zlib.decompressobj(31)
                self.started = False
            return True
        except (zlib.error, EOFError, OSError) as exc:
            self.error = exc
            return False

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.raw.close()
        super().close()


# -- cutting text into chunks of whole lines ----------------------------------------------------


@dataclass
class TextChunk:
    data: bytes
    starts: np.ndarray  # offset of each line in `data`
    ends: np.ndarray  # offset after each line's content (no line end)
    first_line: int  # 1-based line number of the first line
    oversize: list[tuple[int, str]]  # (line, raw prefix) of lines over MAX_LINE_BYTES

    def line(self, i: int) -> bytes:
        return self.data[self.starts[i] : self.ends[i]]

    def raw(self, i: int) -> str:
        return bounded(self.line(i)[: RAW_CHARS * 4].decode("utf-8", "replace"))


def text_chunks(reader: SafeReader, chunk_rows: int, first_line: int = 1) -> Iterator[TextChunk]:
    """Chunks of at most `chunk_rows` whole lines (and about `CHUNK_BYTES`)."""
    blocks: list[bytes] = []  # unconsumed data, starting at the beginning of line `line_no`
    size = 0
    newlines = np.zeros(0, dtype=np.int64)  # positions of b"\n" in the unconsumed data
    line_no = first_line
    skipping = False
    oversize: list[tuple[int, str]] = []
    eof = False
    while not eof:
        block = reader.read(READ_BYTES)
        eof = not block
        if skipping and block:
            cut = block.find(b"\n")
            if cut < 0:
                continue
            skipping, block = False, block[cut + 1 :]
        if block:
            found = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10) + size
            blocks.append(block)
            size += len(block)
            newlines = np.concatenate((newlines, found)) if len(found) else newlines
        tail = size - (int(newlines[-1]) + 1 if len(newlines) else 0)
        if tail > MAX_LINE_BYTES:
            # An endless line: keep a prefix for the quarantine, drop the rest as it streams by,
            # and leave an empty line in its place so that line numbers stay right.
            data = b"".join(blocks)
            start = size - tail
            oversize.append((line_no + len(newlines), _prefix(data[start : start + 8000])))
            blocks, size = [data[:start] + b"\n"], start + 1
            newlines = np.append(newlines, start)
            skipping = not eof
        data, base = b"", 0  # joined once, then cut into as many chunks as it holds
        while (
            len(newlines) >= chunk_rows or (len(newlines) and size >= CHUNK_BYTES) or (eof and size)
        ):
            if not data:
                data, blocks = b"".join(blocks), []
            if len(newlines) >= chunk_rows:
                count = chunk_rows
            elif len(newlines) and (not eof or newlines[-1] == size - 1):
                count = len(newlines)
            else:
                count = len(newlines) + 1  # the last line has no line end
            end = int(newlines[count - 1]) + 1 if count <= len(newlines) else size
            piece = data[base : base + end] if (base, end) != (0, len(data)) else data
            mine = [o for o in oversize if o[0] < line_no + count]
            yield _chunk(piece, line_no, count, newlines[:count], mine)
            base += end
            size -= end
            newlines = newlines[count:] - end
            line_no += count
            oversize = [o for o in oversize if o[0] >= line_no]
        if data:
            blocks = [data[base:]] if size else []


def _prefix(data: bytes) -> str:
    return bounded(data.decode("utf-8", "replace"))


def _chunk(
    data: bytes, first_line: int, count: int, newlines: np.ndarray, oversize: list
) -> TextChunk:
    arr = np.frombuffer(data, dtype=np.uint8)
    ends = newlines if len(newlines) == count else np.append(newlines, len(data))
    ends = ends.astype(np.int64)
    starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)[:count]
    if count:
        # A line's content stops before a CR of a CRLF line end.
        has_cr = (ends > starts) & (arr[np.maximum(ends - 1, 0)] == 13)
        ends = ends - has_cr
    lengths = ends - starts
    mine = list(oversize)
    long_lines = np.flatnonzero(lengths > MAX_LINE_BYTES)
    if len(long_lines):
        blanked = bytearray(data)
        for i in long_lines.tolist():
            mine.append((first_line + i, _prefix(data[starts[i] : starts[i] + RAW_CHARS * 4])))
            blanked[starts[i] : ends[i]] = b" " * int(lengths[i])
        data = bytes(blanked)
        ends[long_lines] = starts[long_lines]
    return TextChunk(data, starts, ends, first_line, sorted(mine))
