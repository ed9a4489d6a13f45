"""An infer's sampling options, their defaults and limits, in one place for every side:
the queen validates against them (`jobs.Infer`), the keeper's flags default to and check
them before any request (`keeper.cli`), and the worker's `Sampling` starts from them.
Free of pydantic, so `keeper --help` stays cheap."""

from __future__ import annotations

MAX_TOKENS_DEFAULT = 128  # tokens per job unless asked: a short answer, quickly
TEMPERATURE_DEFAULT = 0.7  # some variety, still on topic
TOP_P_DEFAULT = 0.95  # nucleus sampling: drop only the unlikeliest tail
TOP_K_DEFAULT = 40  # candidates per token: llama.cpp's own default

MAX_TOKENS_LIMIT = 32768  # tokens per job: a long answer, yet a bounded job for a stuck stream
TEMPERATURE_MAX = 5.0  # beyond this sampling is noise whatever the model
TOP_P_MAX = 1.0  # a probability mass: all of it (top_p must also be above 0)
TOP_K_MIN = 0  # 0: every token is a candidate
PENALTY_MAX = 2.0  # presence and frequency penalties: OpenAI's range, -2 to 2
LOGIT_BIAS_MAX = 100.0  # a token's bias: -100 bans it, 100 all but forces it (OpenAI's range)
TOP_LOGPROBS_MAX = 20  # alternatives a token's logprobs may list (OpenAI's limit)
CHOICES_MAX = 16  # `n`: answers to one prompt, each in its own slot
