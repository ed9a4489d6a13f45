"""Private keys printed over many lines, collapsed into one marker line.

Redaction sees one event, one line, at a time and cannot see a PEM block spread over
many lines, so `LineSplitter` passes its lines through `KeyBlocks` first. Only key
material is hidden: the lines of a block are base64 of one width (PEM writes 64,
OpenSSH 70), a shorter last line, and the armor headers of legacy PEM and PGP, each
after the prefix the BEGIN line had, if any (a log's or docker compose's). The first
line that is anything else ends the block there with
`[REDACTED PRIVATE KEY (cut: no END line)]`, and that line and everything after it
pass through: a key whose END line never comes cannot swallow real output.
"""

from __future__ import annotations

import re

REDACTED_KEY = "[REDACTED PRIVATE KEY]"
CUT_KEY = "[REDACTED PRIVATE KEY (cut: no END line)]"
KEY_MARK = "PRIVATE KEY"  # a chunk without it, outside a block, skips the filter
BODY_MIN = 16  # characters on a block's first base64 line; shorter is a word, not a key
BODY_MAX = 80  # characters on a base64 line: PEM writes 64, OpenSSH 70, some tools 76

_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")
_END = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_CHECKSUM = re.compile(r"=[A-Za-z0-9+/]{4}")  # PGP armor's CRC line, after the body
_HEADER = re.compile(r"(?:Proc-Type|DEK-Info|Version|Comment|Hash|Charset): .*")


class KeyBlocks:
    """A line filter that replaces each private-key block with one marker line.

    The marker is emitted when the block ends (its END line, or the first line that is
    not key material), prefixed by whatever the BEGIN line held before the key. A short
    base64 line (a key's last) is held until the END line shows it was key material;
    if the block is cut instead it is released after the marker.
    """

    __slots__ = ("_held", "_prefix", "_width")

    def __init__(self) -> None:
        self._prefix: str | None = None  # text before BEGIN while inside a block
        self._width = 0  # the block's base64 line width; 0 before its first body line
        self._held: list[str] = []  # short lines that are key material only if END follows

    @property
    def active(self) -> bool:
        """Whether a block has begun and not ended: every line must pass the filter."""
        return self._prefix is not None

    def filter(self, lines: list[str]) -> list[str]:
        """`lines` with key blocks replaced by markers (a block may span several calls)."""
        out: list[str] = []
        for line in lines:
            if self._prefix is not None and self._inside(line, out):
                continue
            begin = _BEGIN.search(line)
            if begin is None or _END.search(line, begin.end()) is not None:
                # A whole block on one line is left to `redact`, which sees it whole.
                out.append(line)
            else:
                self._prefix, self._width = line[: begin.start()], 0
        return out

    def finish(self) -> list[str]:
        """At end of stream: the marker of a block that never ended, and its held lines."""
        return self._cut() if self._prefix is not None else []

    def _inside(self, line: str, out: list[str]) -> bool:
        """Take `line` into the current block if it belongs there; else cut the block."""
        end = _END.search(line)
        if end is not None:
            out.append(f"{self._prefix}{REDACTED_KEY}")
            self._prefix, self._held = None, []
            if line[end.end() :].strip():
                out.append(line[end.end() :])
            return True
        if self._is_key_material(line):
            return True
        out.extend(self._cut())
        return False

    def _is_key_material(self, line: str) -> bool:
        body, width = line.strip(), self._width
        cut = len(self._prefix or "")
        if cut and len(line) >= cut and not (_BASE64.fullmatch(body) or _HEADER.fullmatch(body)):
            # Each line prefixed as the BEGIN line was: by the same text (docker compose's
            # `web_1  | `) or text of its width (a log's time stamp).
            body = line[cut:].strip()
        if width == 0:
            if not body or _HEADER.fullmatch(body):
                return True
            if BODY_MIN <= len(body) <= BODY_MAX and _BASE64.fullmatch(body):
                if body.islower() and body.isalpha():
                    return False  # a long word is output, not a key
                self._width = len(body)
                return True
            return False
        if _CHECKSUM.fullmatch(body) or (
            not self._held and len(body) < width and _BASE64.fullmatch(body)
        ):
            self._held.append(line)
            return True
        return not self._held and len(body) == width and _BASE64.fullmatch(body) is not None

    def _cut(self) -> list[str]:
        out = [f"{self._prefix}{CUT_KEY}", *self._held]
        self._prefix, self._held = None, []
        return out
