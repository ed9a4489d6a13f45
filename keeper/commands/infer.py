"""`keeper infer --model REF "prompt"`: a prompt through the queen, tokens as they arrive.

Where the output goes:
- stdout is not a terminal (`keeper infer … > answer.txt`, a pipe): stdout gets exactly
  the generated text followed by one newline, written as the tokens arrive; everything
  else (narration, the job's end, errors) goes to stderr. A model that answers nothing
  gives the newline alone, and stderr says so (NO_TEXT), rather than a silent exit 0.
- on a terminal, the tokens print inline among the narration (live view or plain lines);
- `--json`: every event (narration, `token`, `state`) as JSON lines on stdout.

Ctrl-C cancels the queen job, which cancels the worker's generation, and exits 130.
With autostart (the default) a missing local queen and hive are started first.
`--explain` (also `keeper worker spawn --explain`) prints where the queen would place the
model instead (`explain`), and runs nothing.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from typing import Any

from jobs import (
    MAX_TOKENS_DEFAULT,
    TEMPERATURE_DEFAULT,
    TOP_K_DEFAULT,
    TOP_P_DEFAULT,
    WireOperation,
    chat_messages,
    infer_op,
)
from keeper.errors import OutputLost
from keeper.output import Renderer
from keeper.session import stream_operation
from keeper.settings import KeeperSettings

# What `keeper infer` tells a chat model it is, unless --system says otherwise: the
# default of llama.cpp's own chat CLI. Small models answer plainly with it where their
# template's own default can lead them astray (SmolLM2-135M on "the capital of France").
DEFAULT_SYSTEM = "You are a helpful assistant."


def operation(
    prompt: str,
    *,
    model: str,
    max_tokens: int = MAX_TOKENS_DEFAULT,
    temperature: float = TEMPERATURE_DEFAULT,
    top_p: float = TOP_P_DEFAULT,
    top_k: int = TOP_K_DEFAULT,
    seed: int | None = None,
    stop: Sequence[str] = (),
    hive: str | None = None,
    worker: str | None = None,
    system: str | None = None,
    raw: bool = False,
) -> WireOperation:
    """The `infer` operation `keeper infer`'s options ask for, however they were read (the
    command tree, or keeper.run_argv without it): the prompt as a chat message after
    --system (DEFAULT_SYSTEM when not given; empty sends none), or as it is with --raw."""
    chat = (
        None if raw else chat_messages(prompt, system=DEFAULT_SYSTEM if system is None else system)
    )
    return infer_op(
        model=model,
        prompt=prompt if raw else None,
        messages=chat,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        seed=seed,
        stop=list(stop),
        hive_id=hive,
        worker_id=worker,
    )


def infer(settings: KeeperSettings, operation: WireOperation, *, autostart: bool) -> None:
    """Run `operation` (an `infer`) and show its tokens; raises JobFailed if it fails."""
    split = not settings.json and not _isatty(sys.stdout)
    if autostart:
        from keeper.autostart import ensure_local_chain

        # Starting daemons narrates; with the text on stdout, that belongs on stderr.
        with contextlib.redirect_stdout(sys.stderr) if split else contextlib.nullcontext():
            ensure_local_chain(settings)
    text = TextOut(sys.stdout if split else None)
    try:
        if split:
            stream_operation(settings, operation, view=text.view, file=sys.stderr)
        else:  # on a terminal the renderer shows the tokens among the narration
            stream_operation(settings, operation, view=text.view)
        text.close()
    except BaseException:
        text.abandon()
        raise
    if text.lost is not None:  # the job ran to its end; its text could not be written
        raise OutputLost.because(text.lost)
    if not text.wrote:
        sys.stderr.write(NO_TEXT)


def explain(
    settings: KeeperSettings,
    model: str,
    *,
    hive: str | None = None,
    ctx_size: int | None = None,
    parallel: int | None = None,
) -> None:
    """Print where the queen would place `model` (`GET /v1/placements`): a table of hives,
    layers and bytes, or with --json the plan as one JSON line. Runs nothing, and starts
    no queen or hive (a refusal, 503 or 404, exits 1 with the queen's sentence)."""
    from keeper.session import open_client

    with open_client(settings) as client:
        plan = client.placement(model, hive=hive, ctx_size=ctx_size, parallel=parallel)
    if settings.json:
        import json

        sys.stdout.write(json.dumps(plan, separators=(",", ":")) + "\n")
        sys.stdout.flush()
        return
    from keeper.output import print_tables

    print_tables(settings, *plan_tables(plan))


def plan_tables(plan: dict[str, Any]) -> list[Any]:
    """The plan as Rich renderables: one line of need and verdict, the hives in device
    order (the worker's hive last, holding the output), then the hives left out. Every
    cell is a Text: hive ids and refs are the users' and never read as markup."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    hives = plan.get("hives") or []
    verdict = (
        f"split across {len(hives)} hives by layers (RPC), worker on {plan.get('worker_hive')}"
        if plan.get("split")
        else f"fits on hive {plan.get('worker_hive')} whole"
    )
    head = Text(f"{plan.get('model')} needs about {_size(plan.get('need_bytes'))}: {verdict}")
    table = Table(title="placement", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("hive", "layers", "memory", "holds"):
        table.add_column(column)
    for share in hives:
        first, last = (share.get("layers") or [0, -1])[:2]
        layers = "-" if last < first else f"{first}-{last} ({last - first + 1})"
        holds = "worker, output" if share.get("output") else "RPC server"
        cells = (str(share.get("hive")), layers, _size(share.get("bytes")), holds)
        table.add_row(*(Text(cell) for cell in cells))
    shown: list[Any] = [head, table]
    left_out = plan.get("left_out") or []
    if left_out:
        out = Table(title="left out", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
        out.add_column("hive")
        out.add_column("why")
        for hive in left_out:
            out.add_row(Text(str(hive.get("hive"))), Text(str(hive.get("reason"))))
        shown.append(out)
    return shown


def _size(size: Any) -> str:
    if not isinstance(size, int):
        return "?"
    if size >= 1 << 30:
        return f"{size / (1 << 30):.1f} GiB"
    return f"{size / (1 << 20):,.1f} MiB"


NO_TEXT = (
    "keeper: the model produced no text (it ended its answer at once); try again with "
    "another prompt or --temperature, or --raw for a base model\n"
)


class TextOut:
    """The generated text alone, on its own file: tokens as they arrive, one final newline.

    With no file (a terminal) it only notes whether any text came; the renderer shows it.
    """

    def __init__(self, file: Any | None) -> None:
        self.file = file
        self.wrote = False
        self.lost: OSError | None = None  # why the text could not be written (a full disk)

    def view(self, out: Renderer, kind: str, data: Any) -> bool:
        """An EventView: writes `token` events' text itself; everything else to `out`."""
        if kind != "token" or not isinstance(data, dict):
            return False
        piece = str(data.get("t", ""))
        if self.file is None:
            self.wrote = self.wrote or bool(piece)
            return False
        if piece and self.lost is None:
            try:
                self.file.write(piece)
                self.file.flush()
            except BrokenPipeError:
                pass  # `| head`: the reader has enough; the job still ends normally
            except OSError as exc:
                self.lost = exc  # stop writing; said once the job has ended
            self.wrote = True
        return True

    def close(self) -> None:
        """The job completed: end the text with its newline (an empty answer is one line
        too, so a script reading lines sees it)."""
        if self.file is None or self.lost is not None:
            return
        try:
            self.file.write("\n")
            self.file.flush()
        except BrokenPipeError:
            pass
        except OSError as exc:
            self.lost = exc

    def abandon(self) -> None:
        """The job failed or was interrupted: end a line the text began, nothing more."""
        if self.wrote:
            self.close()


def _isatty(file: Any) -> bool:
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):
        return False
