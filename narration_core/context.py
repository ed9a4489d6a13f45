"""The job context that routes narration, carried in contextvars.

asyncio and anyio copy the context into tasks they start, and anyio's `to_thread`
copies it into the worker thread, so work started inside `narration_context` narrates
into the same job without anyone passing a job id around.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from types import TracebackType

_JOB_ID: ContextVar[str | None] = ContextVar("rbee_job_id", default=None)
_TRACE_ID: ContextVar[str | None] = ContextVar("rbee_trace_id", default=None)


def current_job_id() -> str | None:
    return _JOB_ID.get()


def current_trace_id() -> str | None:
    return _TRACE_ID.get()


def set_job_context(job_id: str | None) -> Token[str | None]:
    """Route narration from this context on into `job_id`; returns a token for `reset`."""
    return _JOB_ID.set(job_id)


def clear_job_context() -> None:
    _JOB_ID.set(None)


class narration_context:
    """`with narration_context(job_id=...)`: everything narrated inside goes to that job.

    Works as `with` and `async with`; nesting restores the outer job on exit. Arguments
    left as None keep the outer value.
    """

    __slots__ = ("_job_id", "_tokens", "_trace_id")

    def __init__(self, job_id: str | None = None, trace_id: str | None = None) -> None:
        self._job_id = job_id
        self._trace_id = trace_id
        self._tokens: list[tuple[ContextVar[str | None], Token[str | None]]] = []

    def __enter__(self) -> narration_context:
        if self._job_id is not None:
            self._tokens.append((_JOB_ID, _JOB_ID.set(self._job_id)))
        if self._trace_id is not None:
            self._tokens.append((_TRACE_ID, _TRACE_ID.set(self._trace_id)))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        while self._tokens:
            var, token = self._tokens.pop()
            var.reset(token)

    async def __aenter__(self) -> narration_context:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)
