"""The limits of an infer's sampling options, in one place for both sides: the queen
validates against them (`jobs.Infer`) and the keeper's flags state and check
them before any request (`keeper.cli`). Free of pydantic, so `keeper --help` stays cheap."""

from __future__ import annotations

MAX_TOKENS_LIMIT = 32768  # tokens per job: a long answer, yet a bounded job for a stuck stream
TEMPERATURE_MAX = 5.0  # beyond this sampling is noise whatever the model
TOP_P_MAX = 1.0  # a probability mass: all of it (top_p must also be above 0)
TOP_K_MIN = 0  # 0: every token is a candidate
