"""Real OpenAI clients against the door, a real queen, hive and builtin:smollm2 worker
(issue 26): each field's effect, not only its presence. The official `openai` client for
usage, n, logprobs, penalties, logit_bias, structured output, tools and completions'
prompt lists; LangChain's `ChatOpenAI` as an agent framework uses the door.

One queen and hive per module (tests/e2e/conftest.py `chain`), one smollm2 worker with
four slots spawned once."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import anyio
import jsonschema  # type: ignore[import-untyped]
import openai
import pytest
from pydantic import BaseModel

from tests.support import Chain, job_result

pytestmark = pytest.mark.slow

MODEL = "builtin:smollm2"
SPAWN_DEADLINE_S = 600.0  # the model fetch (98 MB) and a load on a loaded 2-core machine
GREEDY: dict[str, Any] = {"model": MODEL, "temperature": 0.0, "seed": 1}
CITY: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
WEATHER: Any = {
    "type": "function",
    "function": {"name": "get_weather", "description": "The weather in a city", "parameters": CITY},
}
ASK: Any = [{"role": "user", "content": "What is the weather in Paris?"}]


class Capital(BaseModel):
    country: str
    capital: str


@pytest.fixture(scope="module")
def client(chain: Chain) -> Iterator[openai.OpenAI]:
    """The official client on the door of a queen whose hive runs a smollm2 worker."""
    spawned = chain.run("worker", "spawn", "--model", MODEL, "--parallel", "4", ok=False)
    assert spawned.returncode == 0, spawned.stderr
    made = openai.OpenAI(
        base_url=f"{chain.queen_url}/v1", api_key="unused", max_retries=0, timeout=SPAWN_DEADLINE_S
    )
    with made:
        yield made


def _counted(chain: Chain, answer_id: str) -> dict[str, Any]:
    return anyio.run(job_result, chain.queen_url, answer_id)


def test_usage_and_n_choices_streamed_and_not(chain: Chain, client: openai.OpenAI) -> None:
    """n=2 answers two choices (index 0 and 1), streamed chunks carry their choice's
    index, and usage is the worker's exact model-token count of both, in the answer and in
    the include_usage chunk that ends the stream."""
    common: dict[str, Any] = {"model": MODEL, "messages": ASK, "max_tokens": 12, "n": 2}
    whole = client.chat.completions.create(**common, temperature=0.9, seed=3)
    assert [c.index for c in whole.choices] == [0, 1]
    assert all(c.message.content for c in whole.choices)
    counted = _counted(chain, whole.id)
    assert whole.usage is not None
    assert (
        whole.usage.completion_tokens
        == counted["tokens_out"]
        == sum(c["tokens_out"] for c in counted["choices"])
    )
    assert whole.usage.prompt_tokens == counted["prompt_tokens"] > 0
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens

    stream = client.chat.completions.create(
        **common, temperature=0.0, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    texts: dict[int, str] = {0: "", 1: ""}
    finishes = {}
    for chunk in chunks[:-1]:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert texts[0] and texts[0] == texts[1]  # greedy: both choices the same answer
    assert finishes == {0: "length", 1: "length"}
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == 24  # 12 tokens in each choice
    assert last.usage.prompt_tokens == whole.usage.prompt_tokens


def test_every_listed_model_is_retrieved_by_its_id(client: openai.OpenAI) -> None:
    """GET /v1/models/{id} answers each model GET /v1/models lists (ids with `:` and `/`
    as they are), and a 404 model_not_found for one it does not."""
    listed = [model.id for model in client.models.list()]
    assert MODEL in listed
    assert [client.models.retrieve(name).id for name in listed] == listed
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("builtin:nonesuch")


def test_logprobs_describe_the_tokens_of_the_answer(client: openai.OpenAI) -> None:
    """Chat logprobs: one entry per generated token, its bytes spelling the answer, the
    top 3 alternatives listed with the greedy choice first. Completion logprobs: OpenAI's
    four lists, tokens spelling the text at their text_offset."""
    chat = client.chat.completions.create(
        **GREEDY, messages=ASK, max_tokens=8, logprobs=True, top_logprobs=3
    )
    choice = chat.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content is not None
    entries = choice.logprobs.content
    assert chat.usage is not None and len(entries) == chat.usage.completion_tokens
    spelled = b"".join(bytes(e.bytes or []) for e in entries).decode(errors="replace")
    assert spelled == choice.message.content
    for entry in entries:
        assert len(entry.top_logprobs) == 3
        assert entry.logprob <= 0
        assert entry.top_logprobs[0].token == entry.token  # greedy takes the likeliest
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob, abs=1e-4)

    text = client.completions.create(
        **GREEDY, prompt="The capital of France is", max_tokens=6, logprobs=2
    )
    logprobs = text.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens and logprobs.text_offset
    assert "".join(logprobs.tokens) == text.choices[0].text
    assert logprobs.text_offset == [
        sum(len(t) for t in logprobs.tokens[:i]) for i in range(len(logprobs.tokens))
    ]
    assert logprobs.top_logprobs is not None
    assert all(len(top) <= 2 and top for top in logprobs.top_logprobs)


def test_penalties_and_logit_bias_change_the_answer(chain: Chain, client: openai.OpenAI) -> None:
    """A frequency penalty makes a greedy answer repeat itself less; a -100 logit_bias on
    the first token a greedy answer takes makes it start otherwise."""
    prompt = "one one one one one one one one"
    common: dict[str, Any] = {**GREEDY, "prompt": prompt, "max_tokens": 16, "logprobs": 0}
    plain = client.completions.create(**common)
    penalised = client.completions.create(**common, frequency_penalty=2.0, presence_penalty=2.0)
    assert plain.choices[0].logprobs and penalised.choices[0].logprobs
    plain_tokens = plain.choices[0].logprobs.tokens or []
    fewer = penalised.choices[0].logprobs.tokens or []
    assert penalised.choices[0].text != plain.choices[0].text
    assert max(Counter(fewer).values()) < max(Counter(plain_tokens).values())

    ask: dict[str, Any] = {**GREEDY, "messages": ASK, "max_tokens": 3, "logprobs": True}
    first = client.chat.completions.create(**ask, top_logprobs=1)
    entries = first.choices[0].logprobs.content
    assert entries
    token_id = _token_id(chain, entries[0].token)
    banned = client.chat.completions.create(**ask, logit_bias={str(token_id): -100})
    other = banned.choices[0].logprobs.content
    assert other and other[0].token != entries[0].token


def _token_id(chain: Chain, text: str) -> int:
    """The id of the one smollm2 token spelling `text`, from the GGUF's own vocabulary."""
    return _tokenize(chain, text)[0]


def _tokenize(chain: Chain, text: str) -> list[int]:
    from llama_cpp import Llama

    (path,) = {p.resolve() for p in chain.home.rglob("*.gguf") if "smollm2" in str(p).lower()}
    vocab = Llama(model_path=str(path), vocab_only=True, verbose=False)
    return list(vocab.tokenize(text.encode(), add_bos=False, special=True))


def test_structured_output_always_parses_and_validates(client: openai.OpenAI) -> None:
    """json_schema (the client's parse() with a pydantic model, strict) answers JSON that
    validates; json_object answers a JSON object; plain text would not have."""
    ask: Any = [{"role": "user", "content": "What is the capital of France?"}]
    parsed = client.chat.completions.parse(
        **GREEDY, messages=ask, max_tokens=60, response_format=Capital
    )
    answer = parsed.choices[0].message
    assert isinstance(answer.parsed, Capital)
    jsonschema.validate(json.loads(answer.content or ""), Capital.model_json_schema())
    loose = client.chat.completions.create(
        **GREEDY, messages=ask, max_tokens=60, response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(loose.choices[0].message.content or ""), dict)


def test_a_forced_tool_call_is_a_valid_call_streamed_and_not(client: openai.OpenAI) -> None:
    """A named tool_choice answers tool_calls (a call_ id, arguments a JSON string that
    validates against the function's parameters) with finish_reason tool_calls; streamed,
    the call arrives as OpenAI's tool_calls deltas; "required" calls too; "none" answers
    text; the call's result sent back as a tool turn is answered in text."""
    named: Any = {"type": "function", "function": {"name": "get_weather"}}
    common: dict[str, Any] = {**GREEDY, "messages": ASK, "max_tokens": 60, "tools": [WEATHER]}
    whole = client.chat.completions.create(**common, tool_choice=named)
    choice = whole.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), CITY)

    streamed: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in client.chat.completions.create(**common, tool_choice=named, stream=True):
        for delta_choice in chunk.choices:
            for part in delta_choice.delta.tool_calls or []:
                entry = streamed.setdefault(part.index, {"name": "", "arguments": ""})
                entry["name"] += (part.function and part.function.name) or ""
                entry["arguments"] += (part.function and part.function.arguments) or ""
            finish = delta_choice.finish_reason or finish
    assert finish == "tool_calls"
    assert streamed[0]["name"] == "get_weather"
    jsonschema.validate(json.loads(streamed[0]["arguments"]), CITY)

    required = client.chat.completions.create(**common, tool_choice="required")
    assert required.choices[0].message.tool_calls
    plain = client.chat.completions.create(**common, tool_choice="none")
    assert plain.choices[0].finish_reason != "tool_calls"
    assert plain.choices[0].message.tool_calls is None and plain.choices[0].message.content

    turns = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'},
    ]
    reply = client.chat.completions.create(**{**common, "messages": turns})
    assert reply.choices[0].message.content or reply.choices[0].message.tool_calls


def test_completions_of_several_prompts_and_token_ids(chain: Chain, client: openai.OpenAI) -> None:
    """A list of two prompts with n=2 answers four choices, prompt-major, each what that
    prompt alone answers, with usage the sum; a token-id prompt with echo starts with the
    text of those tokens; streamed, the chunks carry all four indexes."""
    prompts = ["The capital of France is", "Two plus two is"]
    common: dict[str, Any] = {**GREEDY, "max_tokens": 6}
    both = client.completions.create(**common, prompt=prompts, n=2)
    alone = [client.completions.create(**common, prompt=p) for p in prompts]
    assert [c.index for c in both.choices] == [0, 1, 2, 3]
    texts = [c.text for c in both.choices]
    assert texts == [alone[0].choices[0].text] * 2 + [alone[1].choices[0].text] * 2
    assert both.usage is not None and all(a.usage for a in alone)
    assert both.usage.prompt_tokens == sum(a.usage.prompt_tokens for a in alone if a.usage)
    assert both.usage.completion_tokens == 4 * 6

    ids = _tokenize(chain, prompts[0])
    echoed = client.completions.create(**common, prompt=ids, echo=True)
    assert echoed.choices[0].text.startswith(prompts[0])
    assert echoed.choices[0].text == prompts[0] + alone[0].choices[0].text
    stream = client.completions.create(**common, prompt=prompts, n=2, stream=True)
    assert {c.index for chunk in stream for c in chunk.choices} == {0, 1, 2, 3}


def test_langchain_chat_openai_reads_usage_and_structured_output(chain: Chain) -> None:
    """LangChain's ChatOpenAI as an agent framework drives the door: usage_metadata is
    the worker's count; with_structured_output gives a Capital by json_schema and by
    function_calling (a forced tool call)."""
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        model=MODEL,
        base_url=f"{chain.queen_url}/v1",
        api_key="unused",  # type: ignore[arg-type]
        temperature=0,
        max_completion_tokens=60,
        max_retries=0,
        seed=1,
    )
    message = llm.invoke("Say hello.")
    assert message.usage_metadata is not None
    assert message.usage_metadata["input_tokens"] > 0
    assert message.usage_metadata["output_tokens"] > 0
    assert message.usage_metadata["total_tokens"] == (
        message.usage_metadata["input_tokens"] + message.usage_metadata["output_tokens"]
    )
    for method in ("json_schema", "function_calling"):
        structured = llm.with_structured_output(Capital, method=method)
        answer = structured.invoke("What is the capital of France?")
        assert isinstance(answer, Capital), method
