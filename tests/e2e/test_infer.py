"""Inference through the whole chain with real processes and real llama.cpp on builtin:tiny:
keeper -> queen-rbee -> llm-worker-rbee (spawned by rbee-hive), and the OpenAI door.

One queen and hive (free ports, their own RBEE_HOME) serve the module's tests; the worker
the first test spawns serves the later ones. Long generations use a "slow" variant of
the tiny model (a 2048-token context, written here and given as a local .gguf path), so
cancel and kill -9 land mid-generation.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import threading
import warnings
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from hive.tiny_model import TinyShape, write_tiny_model
from jobs.client import JobClient
from tests.support import BEAT_S, Chain, free_port
from tests.support.e2e import DEADLINE_S, LONG, PROMPT, SAMPLING

pytestmark = pytest.mark.slow


def flags(sampling: dict[str, Any]) -> list[str]:
    return [f for k, v in sampling.items() for f in (f"--{k.replace('_', '-')}", str(v))]


def tokens(events: list[dict[str, Any]]) -> list[tuple[int, str]]:
    return [(e["i"], e["t"]) for e in events if e["event"] == "token"]


def in_process(model: Path, prompt: str, sampling: dict[str, Any]) -> str:
    """What llama-cpp-python generates for this model, prompt and sampling, in this process."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(model), n_ctx=0, verbose=False)
    text = str(llm.create_completion(prompt, **sampling)["choices"][0]["text"])  # type: ignore[index]
    llm.close()
    with warnings.catch_warnings():  # llama-cpp-python leaks /dev/null handles
        warnings.simplefilter("ignore", ResourceWarning)
        del llm
        gc.collect()
    return text


class Running:
    """`keeper --json ARGS` running; a thread reads its stdout to the end (a full pipe
    would stop the keeper), collecting the events."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []
        self.stderr = ""  # read once it has exited
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.events.append(json.loads(line))

    def first(self, action: str, actor: str) -> str:
        return next(
            e["target"] for e in self.events if (e.get("action"), e.get("actor")) == (action, actor)
        )

    async def first_token(self) -> tuple[str, str]:
        """Wait for the first token: (the worker's id, the queen job's id)."""
        try:
            with anyio.fail_after(120):  # the first prompt loads the model
                while not any(e["event"] == "token" for e in self.events):  # noqa: ASYNC110
                    await anyio.sleep(0.01)
        except BaseException:
            self.process.kill()
            raise
        return self.first("infer", "queen-rbee"), self.first("submitted", "keeper")

    async def exit_code(self) -> int:
        """The keeper's exit code once it has exited (within DEADLINE_S) and been read."""
        return await self.exit_code_within(DEADLINE_S)

    async def exit_code_within(self, deadline_s: float) -> int:
        """The keeper's exit code once it has exited (within `deadline_s`) and been read."""
        try:
            with anyio.fail_after(deadline_s):
                while self.process.poll() is None:  # noqa: ASYNC110 - a process, no event
                    await anyio.sleep(0.05)
        except BaseException:
            self.process.kill()
            raise
        self.thread.join(deadline_s)
        assert self.process.stdout is not None and self.process.stderr is not None
        self.stderr = self.process.stderr.read()
        self.process.stdout.close()
        self.process.stderr.close()
        return self.process.returncode


def test_same_seed_gives_the_same_tokens_through_the_whole_chain(chain: Chain) -> None:
    """Two `keeper infer` runs with the same seed and prompt stream the same token sequence
    (the first one fetches builtin:tiny and spawns the worker, narrated), and the queen job
    carries the worker's inference_start/inference_complete narration."""
    first = chain.infer_json(PROMPT, "--model", "builtin:tiny", *flags(SAMPLING))
    second = chain.infer_json(PROMPT, "--model", "builtin:tiny", *flags(SAMPLING))
    assert tokens(first) and tokens(first) == tokens(second)
    assert [i for i, _ in tokens(first)] == list(range(len(tokens(first))))
    actions = [e.get("action") for e in first]
    assert {"model_download", "worker_spawn", "inference_start", "inference_complete"} <= set(
        actions
    )
    assert first[-1]["event"] == "state" and first[-1]["state"] == "completed"
    assert "worker_spawn" not in [e.get("action") for e in second]  # the same worker served it


def test_keeper_prints_exactly_what_llama_cpp_generates_in_process(
    chain: Chain, tmp_path: Path
) -> None:
    """`keeper infer --raw … > file` leaves exactly the text llama-cpp-python generates
    in-process for that model, prompt, seed and sampling, plus one newline; narration goes
    to stderr."""
    answer = tmp_path / "answer.txt"
    with answer.open("w") as out:
        result = chain.run(
            "infer", "--raw", "--model", "builtin:tiny", *flags(SAMPLING), PROMPT, stdout=out
        )  # fmt: skip
    model = chain.home / "models" / "localhost" / "tiny.gguf"
    direct = in_process(model, PROMPT, SAMPLING)
    assert direct and answer.read_bytes().decode() == direct + "\n"
    assert "inference_complete" in result.stderr and "job completed" in result.stderr


@pytest.mark.anyio
async def test_ctrl_c_mid_generation_cancels_the_queen_job(chain: Chain, slow_model: Path) -> None:
    """Ctrl-C on `keeper infer` mid-generation exits 130 within the deadline and leaves the
    queen job `cancelled` (the queen cancels the worker's job as it stops relaying)."""
    keeper = Running(
        chain.popen("infer", "--no-autostart", "--model", str(slow_model), *flags(LONG), PROMPT)
    )
    worker_id, job_id = await keeper.first_token()
    try:
        keeper.process.send_signal(signal.SIGINT)
        assert await keeper.exit_code() == 130
        assert any(e.get("action") == "cancel" and e["target"] == job_id for e in keeper.events)
        async with JobClient(chain.queen_url) as client:
            assert (await client.get_job(job_id))["state"] == "cancelled"
    finally:
        chain.run("worker", "stop", worker_id, ok=False)


def test_openai_client_streams_the_same_text_as_keeper_infer(chain: Chain) -> None:
    """The official `openai` client: a streamed chat completion gives the same text as
    `keeper infer` of the same user message with the same settings (both go through the
    model's chat template), a non-streamed completion the same text as `keeper infer
    --raw` on that prompt, and `models.list()`
    lists builtin:tiny and the catalog's model."""
    import openai

    client = openai.OpenAI(base_url=f"{chain.queen_url}/v1", api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": "hello bee"}]
    common = {
        "model": "builtin:tiny",
        "max_tokens": SAMPLING["max_tokens"],
        "temperature": SAMPLING["temperature"],
        "top_p": SAMPLING["top_p"],
        "seed": SAMPLING["seed"],
        "extra_body": {"top_k": SAMPLING["top_k"]},
    }
    stream = client.chat.completions.create(messages=messages, stream=True, **common)  # type: ignore[call-overload]
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    chat = ("infer", "--system", "", "--model", "builtin:tiny")  # no system message, as sent
    keeper = chain.run(*chat, *flags(SAMPLING), "hello bee")
    assert streamed and keeper.stdout == streamed + "\n"
    completion = client.completions.create(prompt=PROMPT, **common)
    raw = chain.run("infer", "--raw", "--model", "builtin:tiny", *flags(SAMPLING), PROMPT)
    assert completion.choices[0].text + "\n" == raw.stdout
    ids = {model.id for model in client.models.list()}
    assert {"builtin:tiny", "tiny"} <= ids
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="builtin:tiny", messages=[])


@pytest.mark.anyio
async def test_kill_9_of_the_worker_fails_the_job_naming_it_and_routing_stops(
    chain: Chain, slow_model: Path
) -> None:
    """kill -9 of the worker mid-generation ends the keeper's job failed (`[ERROR]`
    terminator) naming the worker within the deadline, and the next prompt for that
    model goes to a new worker, not the dead one."""
    keeper = Running(
        chain.popen("infer", "--no-autostart", "--model", str(slow_model), *flags(LONG), PROMPT)
    )
    worker_id, job_id = await keeper.first_token()
    os.kill((await chain.worker(worker_id))["pid"], signal.SIGKILL)
    assert await keeper.exit_code() == 1
    assert f"worker {worker_id}" in keeper.stderr
    assert keeper.events[-1]["state"] == "failed"
    async with httpx.AsyncClient(base_url=chain.queen_url, trust_env=False) as http:
        stream = (await http.get(f"/v1/jobs/{job_id}/stream")).text
    assert f"data: [ERROR] worker {worker_id}" in stream
    after = chain.infer_json(PROMPT, "--model", str(slow_model), "--max-tokens", "4")
    routed = [
        e["target"] for e in after if e.get("action") == "infer" and e["actor"] == "queen-rbee"
    ]
    assert routed and routed[0] != worker_id
    assert after[-1]["state"] == "completed"


def test_autostart_on_a_fresh_home_answers_the_first_command(tmp_path: Path) -> None:
    """On a fresh RBEE_HOME with nothing running, `keeper infer --model builtin:tiny "hello"
    > file` starts a queen and a hive (narrated on stderr), fetches the model, and the file
    holds just the text and a newline; the daemons are left running for the next command.
    With the queen stopped and the hive left running, the next infer starts a queen that
    finds that hive."""
    chain = Chain(tmp_path / "home")
    answer = tmp_path / "answer.txt"
    try:
        with answer.open("w") as out:
            result = chain.run(
                "infer", "--model", "builtin:tiny", "--seed", "3", "hello", stdout=out
            )  # fmt: skip
        text = answer.read_bytes().decode()
        assert text.endswith("\n") and len(text) > 1
        assert "autostart" in result.stderr and "Queen is ready" in result.stderr
        assert chain.run("--json", "infer", "--no-autostart", "--model", "builtin:tiny", "hi")
        # The queen goes away, the hive (on the queen's port + 2, not the default 7835)
        # stays: the next infer starts a queen and waits for that hive's next beat rather
        # than sending the job to the default port the new queen's config guesses.
        chain.run("queen", "stop")
        second = tmp_path / "again.txt"
        with second.open("w") as out:  # a file, as above: a pipe read as text turns \r into \n
            again = chain.run(
                "infer", "--model", "builtin:tiny", "--seed", "3", "hello", stdout=out
            )
        assert second.read_bytes().decode() == text
        assert "starting one" in again.stderr and "No local hive runs" not in again.stderr
    finally:
        chain.run("hive", "stop", ok=False)
        chain.run("queen", "stop", ok=False)


@pytest.mark.anyio
async def test_cancel_mid_generation_leaves_the_worker_idle_and_serving(
    chain: Chain, slow_model: Path
) -> None:
    """After Ctrl-C mid-generation the worker is idle again within the deadline and serves
    the next prompt."""
    keeper = Running(
        chain.popen("infer", "--no-autostart", "--model", str(slow_model), *flags(LONG), PROMPT)
    )
    worker_id, _ = await keeper.first_token()
    keeper.process.send_signal(signal.SIGINT)
    assert await keeper.exit_code() == 130
    url = (await chain.worker(worker_id))["url"]
    try:
        async with httpx.AsyncClient(base_url=url, trust_env=False) as http:
            with anyio.fail_after(DEADLINE_S):
                while (await http.get("/health")).json()["busy"]:  # noqa: ASYNC110 - polled
                    await anyio.sleep(0.05)
        after = chain.infer_json(
            "the hive", "--model", str(slow_model), "--worker", worker_id, "--max-tokens", "4"
        )
        assert after[-1]["state"] == "completed" and tokens(after)
    finally:  # a worker still generating would hold up the next tests
        chain.run("worker", "stop", worker_id, ok=False)


def test_concurrent_first_prompts_for_a_model_start_one_worker(
    chain: Chain, tmp_path: Path
) -> None:
    """Three `keeper infer` for a model no worker has, started at once: all three answer,
    the queen starts one worker for them (the others wait for it), not one each."""
    model = tmp_path / "racing.gguf"
    write_tiny_model(model, shape=TinyShape(n_ctx=1024))
    args = ("infer", "--no-autostart", "--model", str(model), "--max-tokens", "4", "--seed", "1")
    keepers = [Running(chain.popen(*args, f"prompt {i}")) for i in range(3)]
    codes = [anyio.run(keeper.exit_code_within, 180.0) for keeper in keepers]
    workers = [w for w in anyio.run(chain.status)["workers"] if w["model"] == "racing"]
    try:
        assert codes == [0, 0, 0], [k.stderr for k in keepers]
        assert all(k.events[-1]["state"] == "completed" and tokens(k.events) for k in keepers)
        spawns = [
            e
            for k in keepers
            for e in k.events
            if (e.get("actor"), e.get("action")) == ("queen-rbee", "worker_spawn")
        ]
        assert len(spawns) == 1, spawns
        assert len(workers) == 1, workers
        assert {k.first("infer", "queen-rbee") for k in keepers} == {workers[0]["worker_id"]}
    finally:
        for worker in workers:
            chain.run("worker", "stop", worker["worker_id"], ok=False)


@pytest.mark.anyio
async def test_a_generation_whose_queen_died_is_cancelled_on_the_worker(tmp_path: Path) -> None:
    """kill -9 of the queen mid-generation: nobody reads the worker's job any more, so the
    worker cancels it after UNREAD_STOP_S (saying so in its log) and is idle again, rather
    than generating up to max_tokens for nobody."""
    from worker.inference import UNREAD_STOP_S

    # A generation that outlasts UNREAD_STOP_S well on any machine: 8,000 tokens in one
    # 8,192-token slot of the slow model's width (a worker spawned for it with those sizes).
    model = tmp_path / "slower.gguf"
    write_tiny_model(model, shape=TinyShape(n_ctx=8192, n_embd=512, n_layer=8, n_ff=2048))
    longer = {**LONG, "max_tokens": 8000}
    made = Chain(tmp_path / "home")
    made.run("queen", "start", "--port", made.queen_url.rsplit(":", 1)[1])
    try:
        made.run("hive", "start", "--port", str(free_port()), "--beat-interval", str(BEAT_S))
        sizes = ("--parallel", "1", "--ctx-size", "8192")
        made.run("worker", "spawn", "--no-autostart", "--model", str(model), *sizes)
        keeper = Running(
            made.popen("infer", "--no-autostart", "--model", str(model), *flags(longer), PROMPT)
        )
        worker_id, _ = await keeper.first_token()
        url = (await made.worker(worker_id))["url"]
        queen = json.loads((made.home / "run" / "queen.pid").read_text())["pid"]
        os.kill(queen, signal.SIGKILL)
        assert await keeper.exit_code() == 3
        async with httpx.AsyncClient(base_url=url, trust_env=False) as http:
            with anyio.fail_after(UNREAD_STOP_S + DEADLINE_S):
                while (await http.get("/health")).json()["busy"]:  # noqa: ASYNC110 - polled
                    await anyio.sleep(0.2)
        log = (made.home / "logs" / "workers" / f"{worker_id}.log").read_text()
        assert f"for {UNREAD_STOP_S:g} s (its client went away); cancelling it" in log
    finally:
        made.run("hive", "stop", ok=False)
        made.run("queen", "stop", ok=False)
