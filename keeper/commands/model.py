"""`keeper model download|list|delete`: catalog jobs the queen hands to a hive and relays.

The hive narrates a download's progress as `download_progress` events whose fields carry
`bytes` (so far), `total` (null when the server does not say) and `rate_bps`, then one
`download_done`. On a terminal the keeper draws the progress as one bar updated in place;
plain and `--json` output keep every narration line.
"""

from __future__ import annotations

from typing import Any

from jobs import model_delete_op, model_download_op, model_list_op, model_serve_op
from keeper.output import Renderer
from keeper.session import stream_operation
from keeper.settings import KeeperSettings

BAR_WIDTH = 30  # characters of the progress bar
PROGRESS_ACTION = "download_progress"  # the hive's progress events (hive.download)


def download(settings: KeeperSettings, ref: str, *, hive: str) -> None:
    """Download (or register) `ref` into the hive's catalog, showing its progress."""
    stream_operation(
        settings,
        model_download_op(hive_id=hive, model=ref),
        view=show_progress,
    )


def list_models(settings: KeeperSettings, *, hive: str) -> None:
    stream_operation(settings, model_list_op(hive_id=hive))


def delete(settings: KeeperSettings, ref: str, *, hive: str) -> None:
    stream_operation(settings, model_delete_op(hive_id=hive, model=ref))


def serve(
    settings: KeeperSettings,
    ref: str,
    *,
    replicas: int,
    max_replicas: int | None = None,
    hive: str | None = None,
) -> None:
    """Ask the queen to keep `replicas` workers of `ref` (0: stop keeping them)."""
    op = model_serve_op(model=ref, replicas=replicas, max_replicas=max_replicas, hive_id=hive)
    stream_operation(settings, op)


def show_progress(out: Renderer, kind: str, data: Any) -> bool:
    """On the live view, draw a download progress event as the bar in place; True if drawn."""
    if out.mode != "live" or not isinstance(data, dict):
        return False
    if kind == "state" and data.get("state") in ("completed", "failed", "cancelled"):
        out.progress("download", None)  # the bar's line ends with the job
    if kind != "narration" or data.get("action") != PROGRESS_ACTION:
        if kind == "narration" and data.get("action") == "download_done":
            out.progress("download", None)
        return False
    fields = data.get("fields") or {}
    if not isinstance(fields, dict) or "bytes" not in fields:
        return False
    out.progress("download", progress_line(str(data.get("target") or "model"), fields))
    return True


def progress_line(name: str, fields: dict[str, Any]) -> str:
    """`tiny ━━━━━━━━━╸            42%  1.2 MB / 2.9 MB  3.4 MB/s  ETA 1s`."""
    done = float(fields.get("bytes") or 0)
    total = fields.get("total")
    rate = fields.get("rate_bps")
    eta = (float(total) - done) / float(rate) if total and rate else None
    parts = [name]
    if total:
        share = min(max(done / float(total), 0.0), 1.0)
        filled = int(share * BAR_WIDTH)
        tip = "╸" if filled < BAR_WIDTH else ""
        bar = "━" * filled + tip
        parts += [f"{bar:<{BAR_WIDTH}}", f"{share * 100:3.0f}%", f"{_size(done)} / {_size(total)}"]
    else:
        parts.append(_size(done))
    if rate:
        parts.append(f"{_size(rate)}/s")
    if eta is not None:
        parts.append(f"ETA {float(eta):.0f}s")
    return "  ".join(parts)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")
