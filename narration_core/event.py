"""The narration event: one record of something a component did, and its JSON form."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

Level = Literal["debug", "info", "warn", "error"]
LEVELS: tuple[Level, ...] = ("debug", "info", "warn", "error")


@dataclass(slots=True)
class NarrationEvent:
    """What happened, said for a person: `[actor] action: human`, plus routing metadata.

    A plain slotted dataclass rather than a pydantic model because emit is a hot path
    (pydantic validation costs more than the whole emit budget); wire code validates
    with `from_dict`, which accepts exactly what `to_dict` produces.
    """

    actor: str
    action: str
    human: str
    target: str | None = None
    job_id: str | None = None
    # The request this belongs to (32 hex digits, W3C trace-context), from the context.
    trace_id: str | None = None
    level: Level = "info"
    ts: float = field(default_factory=time.time)
    fields: dict[str, Any] = field(default_factory=dict)
    # Where a re-emitted event came from ("pid 1234", "ssh:gpu1", "worker:<id>"); None when local.
    origin: str | None = None
    # The job a relayed event was narrated in, on its own hop (`job_id` is the job it was
    # relayed into); None when local. Set by jobs.relay, never by a narrator.
    hop_job: str | None = None
    # "stdout"/"stderr" for a raw line a child printed that was not narration (an
    # `output` event on job streams; printed verbatim, not in the narration format).
    stream: str | None = None
    # The stream a relayed child's line was read from, narration or not: where a local
    # terminal shows it (`keeper run` keeps a child's stderr on stderr). Not on the wire.
    source: str | None = field(default=None, compare=False, repr=False)

    @property
    def is_output(self) -> bool:
        return self.stream is not None

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form used on job streams and by `keeper --json`."""
        d: dict[str, Any] = {
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "human": self.human,
            "job_id": self.job_id,
            "trace_id": self.trace_id,
            "level": self.level,
            "ts": self.ts,
        }
        if self.fields:
            d["fields"] = self.fields
        if self.origin is not None:
            d["origin"] = self.origin
        if self.hop_job is not None:
            d["hop_job"] = self.hop_job
        if self.stream is not None:
            d["stream"] = self.stream
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"), default=str)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NarrationEvent:
        """Rebuild an event from `to_dict` output; raises ValueError on a malformed record."""
        try:
            actor, action, human = data["actor"], data["action"], data["human"]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"narration record lacks actor/action/human: {data!r:.200}") from exc
        level = data.get("level") or "info"
        if level not in LEVELS:
            raise ValueError(f"unknown narration level {level!r}; expected one of {LEVELS}")
        fields = data.get("fields") or {}
        if not isinstance(fields, dict):
            raise ValueError("narration 'fields' must be an object")
        return cls(
            actor=str(actor),
            action=str(action),
            human=str(human),
            target=_opt_str(data.get("target")),
            job_id=_opt_str(data.get("job_id")),
            trace_id=_opt_str(data.get("trace_id")),
            level=level,
            ts=float(data.get("ts") or time.time()),
            fields=fields,
            origin=_opt_str(data.get("origin")),
            hop_job=_opt_str(data.get("hop_job")),
            stream=_opt_str(data.get("stream")),
        )

    @classmethod
    def from_json(cls, text: str) -> NarrationEvent:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"narration record is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError("narration record must be a JSON object")
        return cls.from_dict(data)


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)
