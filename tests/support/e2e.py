"""What the end-to-end tests on builtin:tiny share: the prompt, the sampling and the deadline."""

from __future__ import annotations

PROMPT = "the queen"
SAMPLING = {"max_tokens": 24, "temperature": 0.8, "top_p": 0.95, "top_k": 40, "seed": 42}
LONG = {"max_tokens": 2000, "temperature": 0.0, "seed": 1}  # tens of seconds on the slow model
DEADLINE_S = 20.0  # cancel / kill reaching the keeper, the worker idle again
