"""`--json` output: one JSON object per event per line, built without a dict per event.

The hot path of `keeper --json run`: json.dumps per event costs more than capture
itself, so events are written from f-strings around the C string encoder, and a clean
batch of a child's lines is rewritten head by head with `str.replace`. The text is the
same, key for key and in key order, as `json.dumps({"event": ..., **event.to_dict()})`:
tests/keeper/test_render.py and the property tests in test_render_fastpath.py hold it so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from keeper.output._items import Item, State, Token, Verbatim
from narration_core import NarrationEvent
from narration_core.format import SeedHeads, rewrite_heads, split_line

_str = json.encoder.encode_basestring  # C-accelerated; escapes ", \ and C0 controls
# JSON allows C1 controls raw, but a terminal may act on them: escape those too.
_C1 = re.compile(r"[\x7f-\x9f]")


def escape_c1(text: str) -> str:
    """`text` with C1 controls (and DEL) as `\\u` escapes; ASCII text is checked by C."""
    if text.isascii() and "\x7f" not in text:
        return text
    if _C1.search(text) is None:
        return text
    return _C1.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)


def event_json(ev: NarrationEvent) -> str:
    """`{"event": ..., **ev.to_dict()}` as one line, without building the dict."""
    kind = "narration" if ev.stream is None else "output"
    tail = ""
    if ev.fields:
        tail += f',"fields":{dumps(ev.fields)}'
    if ev.origin is not None:
        tail += f',"origin":{_str(ev.origin)}'
    if ev.hop_job is not None:
        tail += f',"hop_job":{_str(ev.hop_job)}'
    if ev.stream is not None:
        tail += f',"stream":{_str(ev.stream)}'
    return (
        f'{{"event":"{kind}","actor":{_str(ev.actor)},"action":{_str(ev.action)},'
        f'"target":{_opt(ev.target)},"human":{_str(ev.human)},"job_id":{_opt(ev.job_id)},'
        f'"trace_id":{_opt(ev.trace_id)},"level":{_str(ev.level)},'
        f'"ts":{float(ev.ts)!r}{tail}}}\n'
    )


def batch_json(batch: Verbatim, add: Callable[[str], object], seen: SeedHeads) -> None:
    """`event_json` of the events a clean line batch stands for, added as text pieces.

    A batch of seed-width narration lines without quotes (a child narrating, the common
    case) is rewritten as a whole: each line end becomes the shared tail and each
    distinct head its JSON head, one `str.replace` per head. Anything else is built per
    line with the parts every line shares made once. `seen` remembers the heads of the
    stream's last batch.
    """
    tail = (
        f',"job_id":{_opt(batch.job_id)},"trace_id":{_opt(batch.trace_id)},'
        f'"level":"info","ts":{float(batch.ts)!r}'
    )
    if batch.origin is not None:
        tail += f',"origin":{_str(batch.origin)}'
    narration_tail = tail + "}\n"
    text = batch.text
    if '"' not in text and "\t" not in text:  # the rest of a clean batch needs no escape
        heads = seen.of(text, batch.lines)
        if heads is not None:
            json_heads = {head: _narration_head(*names) + '"' for head, names in heads.items()}
            add(rewrite_heads(text, batch.lines, json_heads, '"' + narration_tail))
            return
    output_head = (
        f'{{"event":"output","actor":{_str(batch.actor)},"action":"output","target":null,"human":'
    )
    output_tail = f'{tail},"stream":{_str(batch.stream)}}}\n'
    known: dict[str, str] = {}
    for line in batch.lines:
        if line[11:13] == "] " and line[28:30] == ": " and line[:1] == "[" and len(line) > 30:
            head = known.get(line[:30])  # the seed's widths: the head decides
            if head is None:
                actor, action = line[1:11].strip(), line[13:28].strip()
                head = known[line[:30]] = _narration_head(actor, action)
            add(head)
            add(_str(line[30:]))
            add(narration_tail)
            continue
        parts = split_line(line) if line[:1] == "[" else None
        if parts is None:
            add(output_head)
            add(_str(line))
            add(output_tail)
            continue
        actor, action, human = parts
        add(_narration_head(actor, action))
        add(_str(human))
        add(narration_tail)


def _narration_head(actor: str, action: str) -> str:
    return (
        f'{{"event":"narration","actor":{_str(actor)},"action":{_str(action)},'
        '"target":null,"human":'
    )


def _opt(value: str | None) -> str:
    return "null" if value is None else _str(value)


class JsonLines:
    """One renderer's JSON lines, batch by batch."""

    def __init__(self) -> None:
        self.seen = SeedHeads()  # the heads of the last line batch

    def batch(self, items: list[Item]) -> str:
        out: list[str] = []
        add = out.append
        for item in items:
            if type(item) is NarrationEvent:
                add(event_json(item))
            elif type(item) is Verbatim:
                batch_json(item, add, self.seen)
            elif type(item) is Token:
                add(dumps({"event": "token", **item.data}) + "\n")
            elif type(item) is State and item.data:
                add(dumps({"event": "state", **item.data}) + "\n")
        return escape_c1("".join(out))
