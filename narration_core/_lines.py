"""Bytes in, text lines out: the transport-agnostic half of process capture.

`LineSplitter` turns the chunks a pipe, a socket or an SSH channel delivers into lines,
and `relay_lines` re-emits them as narration, so a local child and a remote one read alike.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence

from narration_core._keyblock import KEY_MARK, KeyBlocks
from narration_core.context import _JOB_ID, _TRACE_ID
from narration_core.event import NarrationEvent
from narration_core.format import HEAD_KEY, SeedHeads, format_line, parse_line
from narration_core.narrator import emit_event
from narration_core.redact import needs_redaction, redact
from narration_core.sanitize import has_control_in_lines, strip_control
from narration_core.sinks import line_batch_sink

MAX_LINE = 64 * 1024  # characters per emitted piece: longer lines arrive as several pieces
# Each piece is redacted alone, so a piece ends early, after a space or tab, where a secret
# would straddle its end (see `_cut_point`).
CUT_CONTEXT = 4096  # characters each side of a cut checked for a secret (a PEM key: ~3 KiB)
CUT_BACK = 4096  # characters a cut may move back to keep a secret in one piece
CUT_TRIES = 8  # places tried before cutting at the limit all the same

# Control characters other than tab and LF, in ASCII text, as bytes for `bytes.translate`
# (a C loop, ~5x the regex); a chunk without any skips per-line sanitising.
_ASCII_CONTROL = bytes((*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F))
_ACTOR_UNSAFE = re.compile(r"[\s\[\]]+")


HEADS_KEPT = 1024  # verdicts on line heads kept by the fast path (a few per child)
_HEADS: dict[str, bool] = {}
_PASSED = SeedHeads()  # the heads of the last all-narration batch that prints as it is
_HEAD_SECRETS: dict[str, bool] = {}  # needs_redaction on "actor action" of relayed heads


class LineSplitter:
    """Split a byte stream into text lines, keeping the unfinished tail for the next chunk.

    Decodes UTF-8 with replacement, drops the LF (and a CR before it), and never holds
    more than `max_line` bytes of an unfinished line (and CUT_CONTEXT to see past a cut):
    a longer line is handed out in pieces of at most `max_line` characters, cut on
    character boundaries and never through a secret redaction would find, so memory
    stays bounded whatever the peer sends.

    A private key printed over several lines is collapsed into one
    `[REDACTED PRIVATE KEY]` line here (see `_keyblock`), since redaction of single
    events cannot see a block that spans lines.
    """

    __slots__ = ("_keys", "_tail", "max_line")

    def __init__(self, *, max_line: int = MAX_LINE) -> None:
        if max_line < 4:
            raise ValueError(f"max_line must be at least 4 bytes, got {max_line}")
        self.max_line = max_line
        self._tail = b""
        self._keys = KeyBlocks()

    def feed(self, data: bytes) -> list[str]:
        """The complete lines `data` finishes (and pieces of an over-long one)."""
        if self._tail:
            data = self._tail + data
        nl = data.rfind(b"\n")
        if nl < 0:
            self._tail = _drop_overwritten(data) if b"\r" in data else data
            return self._cut_tail([]) if len(self._tail) > self.max_line + CUT_CONTEXT else []
        tail = data[nl + 1 :]
        self._tail = _drop_overwritten(tail) if b"\r" in tail else tail
        # One decode per chunk: LF never occurs inside a UTF-8 sequence, so decoding the
        # whole block and splitting equals splitting and decoding each line.
        text = data[: nl + 1].decode("utf-8", "replace")
        if "\r" in text:
            text = text.replace("\r\n", "\n")
            lines = text[:-1].split("\n")
            if "\r" in text:
                lines = [_overwritten(line) if "\r" in line else line for line in lines]
        else:
            lines = text[:-1].split("\n")
        if len(text) > self.max_line and max(map(len, lines)) > self.max_line:
            lines = self._split_long(lines)
        if self._keys.active or KEY_MARK in text:
            lines = self._keys.filter(lines)
        if len(self._tail) > self.max_line + CUT_CONTEXT:
            return self._cut_tail(lines)
        return lines

    def flush(self) -> list[str]:
        """What is left at end of stream: the last line that had no newline, if any."""
        pieces = self._cut_tail([], lookahead=0) if len(self._tail) > self.max_line else []
        tail, self._tail = self._tail, b""
        text = tail.decode("utf-8", "replace")
        if "\r" in text:
            text = _overwritten(text)
        lines = [text] if text else []
        if self._keys.active or KEY_MARK in text:
            lines = self._keys.filter(lines) + self._keys.finish()
        return pieces + lines

    @property
    def progress(self) -> str | None:
        r"""What a progress bar on the unfinished line shows now: its latest non-empty
        `\r` segment, or None when that line holds no CR (or nothing is pending)."""
        tail = self._tail
        if b"\r" not in tail:
            return None
        # "ignore": the segment may end inside a character still being written.
        # Redacted here: a progress line is drawn on the terminal without an event.
        return redact(_overwritten(tail.decode("utf-8", "ignore"))) or None

    def _cut_tail(self, lines: list[str], lookahead: int = CUT_CONTEXT) -> list[str]:
        """`lines` and pieces of the unfinished line, while more than `lookahead` bytes
        follow where the next piece would end (all of them at the end of the stream)."""
        tail, limit = self._tail, self.max_line
        start = 0
        while len(tail) - start > limit + lookahead:
            cut = start + limit
            # Back up to the first byte of a UTF-8 sequence so no character is split.
            while cut > start + limit - 3 and (tail[cut] & 0xC0) == 0x80:
                cut -= 1
            # Decoded so that each byte that is not UTF-8 stays one character, and back.
            text = tail[start : cut + CUT_CONTEXT].decode("utf-8", "surrogateescape")
            size = len(tail[start:cut].decode("utf-8", "surrogateescape"))
            end = _cut_point(text, size)
            if end < size:  # after a space or tab: an ASCII byte ends the piece
                cut = start + len(text[:end].encode("utf-8", "surrogateescape"))
            piece = tail[start:cut].decode("utf-8", "replace")
            lines.append(_overwritten(piece) if "\r" in piece else piece)
            start = cut
        self._tail = tail[start:]
        return lines

    def _split_long(self, lines: list[str]) -> list[str]:
        limit = self.max_line
        out: list[str] = []
        for line in lines:
            while len(line) > limit:
                cut = _cut_point(line, limit)
                out.append(line[:cut])
                line = line[cut:]
            out.append(line)
        return out


def _cut_point(text: str, limit: int) -> int:
    """Where the first piece of an over-long line `text` ends: at `limit` characters, or
    earlier, right after a space or tab, when a secret would straddle `limit`.

    Each piece is redacted on its own, so a token cut in two would be printed in halves.
    A place is safe when the text around it (CUT_CONTEXT each side) redacts the same in
    two parts as whole; `password: X` and `Bearer X` move the cut before their name.
    """
    cut, lowest = limit, max(0, limit - CUT_BACK)
    for _ in range(CUT_TRIES):
        start = max(0, cut - CUT_CONTEXT)
        around, at = text[start : cut + CUT_CONTEXT], cut - start
        if not needs_redaction(around) or (
            redact(around[:at]) + redact(around[at:]) == redact(around)
        ):
            return cut
        space = max(text.rfind(" ", lowest, cut - 1), text.rfind("\t", lowest, cut - 1))
        if space < 0:
            break
        cut = space + 1
    return limit


def _overwritten(line: str) -> str:
    r"""What a terminal last drew on a line of `\r` updates (`\r20%\r40%` -> `40%`): the
    last non-empty segment. Shown instead of the CRs, which would print as U+FFFD."""
    for segment in reversed(line.split("\r")):
        if segment:
            return segment
    return ""


def _drop_overwritten(tail: bytes) -> bytes:
    """An unfinished line with only what `_overwritten` will keep, so a progress bar that
    redraws for hours without a newline holds one segment, not every redraw. A final CR
    stays, since it may be the first half of CRLF."""
    body = tail.rstrip(b"\r")
    end = tail[len(body) : len(body) + 1]
    _, cr, last = body.rpartition(b"\r")
    return cr + last + end


def program_actor(argv0: str) -> str:
    """An actor name for a program's plain output: its file name, made a valid actor."""
    name = _ACTOR_UNSAFE.sub("_", os.path.basename(argv0)) or "proc"
    return name


def relay_line(
    line: str,
    stream: str,
    *,
    actor: str,
    origin: str | None = None,
    job_id: str | None = None,
) -> NarrationEvent:
    """Re-emit one line a process printed, and return the emitted event.

    A narration line keeps its actor, action and message; anything else becomes an
    `output` event under `actor` with its stream name. `job_id` None leaves the job to
    the context (as `emit_event` does). Control characters are neutralised here, where
    lines are parsed: `human` holds the sanitised text and, when that differs from what
    was printed, `fields["raw"]` keeps the printed line for JSON consumers.
    """
    return _relay(line, stream, actor, origin, job_id)


def relay_lines(
    lines: Sequence[str],
    stream: str,
    *,
    actor: str,
    origin: str | None = None,
    job_id: str | None = None,
) -> None:
    """`relay_line` for each of a batch of lines, in order.

    The fast path: when only the stdout sink would see these events and it takes line
    batches (the keeper's plain and JSON output), a batch with no control character,
    nothing to redact and no backslash goes to it whole, stamped once, without an event
    per line; plain output also needs every narration line already padded, as it prints
    the batch as it stands. Property tests hold the output of both paths equal.
    """
    block = "\n".join([*lines, ""])  # each line with its LF: what a batch sink takes
    check = _has_control(block, lines)
    if not check and lines:
        job = job_id if job_id is not None else _JOB_ID.get()
        sink = line_batch_sink(job)
        if (
            sink is not None
            and "\\" not in block
            and not needs_redaction(block)
            and (not sink.lines_as_is or _prints_as_is(block, lines))
        ):
            sink.write_lines(
                block,
                lines,
                stream,
                actor=actor,
                origin=origin,
                job_id=job,
                trace_id=_TRACE_ID.get(),
                ts=time.time(),
            )
            return
    for line in lines:
        _relay(line, stream, actor, origin, job_id, check)


def _has_control(text: str, lines: Sequence[str]) -> bool:
    """True when the batch holds a control character other than tab and LF.

    One scan of the whole batch spares clean batches (nearly all) a scan per line: ASCII
    text (most output) is checked as bytes by `bytes.translate`, anything else by
    `str.isprintable` per line (C, ~4x faster than the regex), the regex only to confirm.
    """
    if text.isascii():
        data = text.encode("ascii")
        return len(data.translate(None, _ASCII_CONTROL)) != len(data)
    return not all(map(str.isprintable, lines)) and has_control_in_lines(text)


def _prints_as_is(block: str, lines: Sequence[str]) -> bool:
    """True when each line (free of control characters, backslashes and secrets) prints
    unchanged as the event it parses to: narration already padded. `block` is the lines,
    each ending in LF.

    A line in the seed's widths prints unchanged exactly when its first 30 characters
    (actor, action and their padding) do, so the verdict is kept per head: a child
    narrates under a few heads. A batch under the heads of the last all-narration batch
    that passed is confirmed by counting them (`SeedHeads.known`); any other is read
    through the set of its lines' first 31 characters (a C loop), so each distinct head
    costs one dict lookup, not each line.
    """
    if _PASSED.known(block, len(lines)) is not None:
        return True
    verdicts = _HEADS
    other_widths: set[str] = set()
    heads: dict[str, tuple[str, str]] | None = {}
    for key in set(map(HEAD_KEY, lines)):
        if key[:1] != "[":
            heads = None
            continue  # plain output prints as it is
        if len(key) < 31:  # the whole line
            heads = None
            same = _same_when_printed(key)
        elif key[11:13] == "] " and key[28:30] == ": ":
            head = key[:30]
            known = verdicts.get(head)
            if known is None:
                if len(verdicts) >= HEADS_KEPT:
                    verdicts.clear()
                known = verdicts[head] = _same_when_printed(key)
            same = known
            if heads is not None:
                heads[head] = (key[1:11].strip(), key[13:28].strip())
        else:
            other_widths.add(key)
            continue
        if not same:
            return False
    if other_widths:  # narration in other widths (long actors): each line decides
        return all(_same_when_printed(line) for line in lines if line[:31] in other_widths)
    if heads:
        _PASSED.remember(heads)
    return True


def _same_when_printed(line: str) -> bool:
    event = parse_line(line)
    return event is None or format_line(event) == line


def _head_needs_redaction(head: str) -> bool:
    """`needs_redaction(head)`, kept in _HEAD_SECRETS: a child narrates under a few heads,
    and the check costs ~1 µs."""
    if len(_HEAD_SECRETS) >= HEADS_KEPT:
        _HEAD_SECRETS.clear()
    verdict = _HEAD_SECRETS[head] = needs_redaction(head)
    return verdict


def _relay(
    line: str,
    stream: str,
    actor: str,
    origin: str | None,
    job_id: str | None,
    check: bool = True,
) -> NarrationEvent:
    raw = None
    if check and has_control_in_lines(line):
        raw, line = line, strip_control(line)
    event = parse_line(line) if line[:1] == "[" else None
    if event is not None:
        # Only the human text is redacted on emit; a secret in the head (`[x] token=X: y`,
        # `[app] password: X`) is found in the line as printed, which is read again.
        head = event.actor + " " + event.action
        secret = _HEAD_SECRETS.get(head)
        if secret is None:
            secret = _head_needs_redaction(head)
        if secret and (redacted := redact(line)) != line:
            line, event = redacted, parse_line(redacted)
    if event is None:
        event = NarrationEvent(actor, "output", line, stream=stream)
    event.origin = origin
    event.job_id = job_id
    event.source = stream
    if raw is not None:
        event.fields = {"raw": raw}
    return emit_event(event)
