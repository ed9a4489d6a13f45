"""`POST /v1/embeddings` at the OpenAI door with the official `openai` client: a real
queen and hive (tests/e2e/conftest.py `chain`), builtin:smollm2 started by the first
request as a completion would start it. Near meanings are near (cosine), batched or one by
one; base64 and float answers are the same vectors; what the door cannot do is refused.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.support import Chain

pytestmark = pytest.mark.slow

MODEL = "builtin:smollm2"
WIDTH = 576  # SmolLM2-135M's hidden size: its vectors' length
SPAWN_DEADLINE_S = 600.0  # the model fetch (98 MB) and a load on a loaded 2-core machine
CAT = "a cat sat on the mat"
KITTEN = "a kitten rested on the rug"
RATES = "interest rates rose in March"
SAME = 0.99999  # batched and alone, a vector is the same to this cosine (rounding aside)


@pytest.fixture(scope="module")
def client(chain: Chain) -> Iterator[openai.OpenAI]:
    """The official client on the door of a queen whose hive runs no worker yet."""
    made = openai.OpenAI(
        base_url=f"{chain.queen_url}/v1", api_key="unused", max_retries=0, timeout=SPAWN_DEADLINE_S
    )
    with made:
        yield made


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.hypot(*a) / math.hypot(*b)


def test_near_meanings_are_near_batched_and_alone(client: openai.OpenAI) -> None:
    """The first request starts a smollm2 worker and answers OpenAI's shape: one unit
    vector of the model's width per input, in order, the cat closer to the kitten than to
    interest rates; each text sent alone (as a string) gets the same vector, and usage
    counts the model's tokens."""
    batched = client.embeddings.create(model=MODEL, input=[CAT, KITTEN, RATES])
    assert batched.object == "list" and batched.model == MODEL
    assert [d.index for d in batched.data] == [0, 1, 2]
    assert all(d.object == "embedding" for d in batched.data)
    cat, kitten, rates = (d.embedding for d in batched.data)
    assert len(cat) == WIDTH
    assert all(math.isclose(math.hypot(*v), 1.0, rel_tol=1e-5) for v in (cat, kitten, rates))
    assert cosine(cat, kitten) > cosine(cat, rates)

    alone = [client.embeddings.create(model=MODEL, input=t) for t in (CAT, KITTEN, RATES)]
    for single, vector in zip(alone, (cat, kitten, rates), strict=True):
        assert len(single.data) == 1
        assert cosine(single.data[0].embedding, vector) > SAME
    assert batched.usage.prompt_tokens == sum(a.usage.prompt_tokens for a in alone) > 3
    assert batched.usage.total_tokens == batched.usage.prompt_tokens


def test_base64_is_the_float_answer_and_token_ids_embed(
    chain: Chain, client: openai.OpenAI
) -> None:
    """`encoding_format: base64` carries the same vector as float, as little-endian
    float32 (read here without the client's own decoding); token ids, one list or several,
    embed too; `dimensions` equal to the model's width and `user` are accepted."""
    floats = client.embeddings.create(
        model=MODEL, input=CAT, encoding_format="float", dimensions=WIDTH, user="u-1"
    )
    raw = httpx.post(
        f"{chain.queen_url}/v1/embeddings",
        json={"model": MODEL, "input": CAT, "encoding_format": "base64"},
        timeout=SPAWN_DEADLINE_S,
    )
    assert raw.status_code == 200, raw.text
    packed = base64.b64decode(raw.json()["data"][0]["embedding"])
    decoded = list(struct.unpack(f"<{WIDTH}f", packed))
    assert max(abs(a - b) for a, b in zip(decoded, floats.data[0].embedding, strict=True)) < 1e-6

    ids = client.embeddings.create(model=MODEL, input=[[1, 2, 3, 4], [5, 6, 7]])
    assert [len(d.embedding) for d in ids.data] == [WIDTH, WIDTH]
    assert ids.usage.prompt_tokens == 7
    one = client.embeddings.create(model=MODEL, input=[1, 2, 3, 4])
    assert cosine(one.data[0].embedding, ids.data[0].embedding) > SAME


def test_what_the_door_cannot_do_is_refused(client: openai.OpenAI) -> None:
    """A `dimensions` other than the model's is a 400 naming it; an unknown model a 404
    `model_not_found`; an empty input (a list, a string), inputs of mixed kinds and an
    unknown field are 400s naming `input` and the field; an input past the context a 400."""
    refusals: list[tuple[dict[str, Any], type[openai.APIStatusError], str | None]] = [
        ({"dimensions": 64}, openai.BadRequestError, "dimensions"),
        ({"model": "no-such-model"}, openai.NotFoundError, "model"),
        ({"input": []}, openai.BadRequestError, "input"),
        ({"input": ""}, openai.BadRequestError, "input"),
        ({"input": [CAT, ""]}, openai.BadRequestError, "input"),
        ({"input": [[7] * 5000]}, openai.BadRequestError, "input"),
        ({"input": [[1, 2], ["a"]]}, openai.BadRequestError, "input"),
        ({"extra_body": {"truncate": True}}, openai.BadRequestError, "truncate"),
    ]
    for change, error, param in refusals:
        fields: dict[str, Any] = {"model": MODEL, "input": CAT, **change}
        with pytest.raises(error) as raised:
            client.embeddings.create(**fields)
        body: Any = raised.value.body
        assert body["param"] == param, (change, body)
        if error is openai.NotFoundError:
            assert body["code"] == "model_not_found"
