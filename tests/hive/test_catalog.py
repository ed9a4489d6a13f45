"""The model catalog: builtin:tiny, refs, ids that cannot escape the folder, persistence."""

from __future__ import annotations

import gc
import hashlib
import warnings
from pathlib import Path

import httpx
import pytest

from hive.catalog import Catalog, check_id, hf_url, new_entry, parse_ref
from hive.router import _auth_headers
from hive.tiny_model import write_tiny_model
from jobs import InvalidRequest
from jobs.client import JobClient
from tests.support import run_job, spawn_hive


def test_builtin_tiny_is_deterministic_and_llama_cpp_generates_with_it(tmp_path: Path) -> None:
    """builtin:tiny has the same bytes every time it is written, and llama.cpp loads it,
    tokenizes any text (byte fallback) and generates tokens from it."""
    llama_cpp = pytest.importorskip("llama_cpp")
    first, second = tmp_path / "a.gguf", tmp_path / "b.gguf"
    write_tiny_model(first)
    write_tiny_model(second)
    assert (
        hashlib.sha256(first.read_bytes()).digest() == hashlib.sha256(second.read_bytes()).digest()
    )
    llm = llama_cpp.Llama(model_path=str(first), n_ctx=0, verbose=False, seed=7)
    assert llm.n_ctx() == 256
    assert len(llm.tokenize("héllo 🐝 hive".encode())) > 3
    out = llm("the queen", max_tokens=5, temperature=0)
    assert out["usage"]["completion_tokens"] >= 1
    llm.close()
    with warnings.catch_warnings():  # llama-cpp-python leaks /dev/null handles (verbose=False)
        warnings.simplefilter("ignore", ResourceWarning)
        del llm
        gc.collect()


@pytest.mark.parametrize("model_id", ["../etc/passwd", "a/b", "..", ".hidden", "x\\y", ""])
def test_ids_that_name_paths_are_refused_with_400(tmp_path: Path, model_id: str) -> None:
    """An id that would point outside the catalog folder is an InvalidRequest (400)."""
    catalog = Catalog(tmp_path).load()
    with pytest.raises(InvalidRequest) as caught:
        catalog.file_for(model_id)
    assert caught.value.status == 400
    with pytest.raises(InvalidRequest):
        check_id(model_id)


def test_refs_parse_and_hf_resolves_to_the_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each ref kind parses; hf: resolves to the hub's resolve URL (revision `main` unless
    @rev); a URL's #sha256= is the expected digest; HF_TOKEN goes only to the hub."""
    assert hf_url("hf:TheBloke/Llama-2-7B-GGUF/llama-2-7b.Q4_K_M.gguf") == (
        "https://huggingface.co/TheBloke/Llama-2-7B-GGUF/resolve/main/llama-2-7b.Q4_K_M.gguf"
    )
    assert hf_url("hf:org/repo@v1.0/sub/m.gguf") == (
        "https://huggingface.co/org/repo/resolve/v1.0/sub/m.gguf"
    )
    hf = parse_ref("hf:org/repo/tiny-model.gguf")
    assert (hf.kind, hf.name, hf.is_hf) == ("url", "tiny-model", True)
    digest = "ab" * 32
    url = parse_ref(f"https://example.com/x/llama%20small.gguf#sha256={digest.upper()}")
    assert (url.url, url.name, url.expected_sha256) == (
        "https://example.com/x/llama%20small.gguf",
        "llama-small",
        digest,
    )
    assert parse_ref("builtin:tiny").kind == "builtin"
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_value")
    assert _auth_headers(hf) == {"Authorization": "Bearer hf_secret_token_value"}
    assert _auth_headers(url) == {}
    for bad in ("hf:org/repo", "hf:org/../x.gguf", "builtin:huge", "model.bin", "ftp://x.gguf"):
        with pytest.raises(InvalidRequest):
            parse_ref(bad)
    with pytest.raises(InvalidRequest, match="sha256"):
        parse_ref("https://example.com/x.gguf#sha256=nothex")


def test_a_local_ref_keeps_its_link_so_the_file_checks_see_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local path is made absolute but its link is not followed: the checks judge a link
    by its owner and its target (hive.modelfile), which a resolved path would hide."""
    target = tmp_path / "real.gguf"
    write_tiny_model(target)
    (tmp_path / "link.gguf").symlink_to(target)
    monkeypatch.chdir(tmp_path)
    ref = parse_ref("link.gguf")
    assert ref.path == tmp_path / "link.gguf" and ref.path.is_symlink()
    assert ref.name == "link" and ref.source == "link.gguf"


def test_a_user_file_registered_unchecked_is_listed_failed_after_restart(tmp_path: Path) -> None:
    """A catalog an older hive wrote, holding a link to a secret as an available model with
    its size and sha256: on load it is `failed` with the reason, and its size, sha256 and
    content are shown nowhere; a real local model stays available."""
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$s3cr3t:19000:0:99999:7:::\n")
    (tmp_path / "shadow.gguf").symlink_to(secret)
    good = tmp_path / "good.gguf"
    write_tiny_model(good)
    catalog = Catalog(tmp_path / "models").load()
    for name in ("shadow", "good"):
        entry = new_entry(
            name, parse_ref(str(tmp_path / f"{name}.gguf")), tmp_path / f"{name}.gguf", owned=False
        )
        entry.status, entry.size, entry.sha256 = "available", 37, "ab" * 32
        catalog.put(entry)
    reloaded = Catalog(tmp_path / "models").load()
    shadow, kept = reloaded.find("shadow"), reloaded.find("good")
    assert shadow is not None and kept is not None and kept.status == "available"
    assert shadow.status == "failed" and shadow.size is None and shadow.sha256 is None
    assert shadow.error is not None and "does not start with the GGUF magic" in shadow.error
    assert "s3cr3t" not in str(shadow.to_dict())


def test_interrupted_download_is_failed_after_restart(tmp_path: Path) -> None:
    """An entry a dead hive left `downloading` loads as `failed`, with what to do next."""
    catalog = Catalog(tmp_path).load()
    ref = parse_ref("https://example.com/m.gguf")
    catalog.put(new_entry("m", ref, catalog.file_for("m"), owned=True))
    reloaded = Catalog(tmp_path).load()
    entry = reloaded.find("https://example.com/m.gguf")
    assert entry is not None and entry.status == "failed"
    assert entry.error is not None and "download it again" in entry.error


@pytest.mark.anyio
async def test_local_model_is_registered_not_copied_and_traversal_is_refused(
    rbee_home: Path, tmp_path: Path
) -> None:
    """A local .gguf is registered where it is (deleting it from the catalog leaves the
    file), and model_delete with a path for an id is answered 400 naming the rule (the
    job exists and its log says the same)."""
    local = tmp_path / "mine.gguf"
    write_tiny_model(local)
    async with spawn_hive(rbee_home) as hive, JobClient(hive.url, token=hive.token) as client:
        added = await run_job(client, {"operation": "model_download", "model": str(local)})
        async with httpx.AsyncClient(
            base_url=hive.url, trust_env=False, headers={"Authorization": f"Bearer {hive.token}"}
        ) as http:
            refused = await http.post(
                "/v1/jobs", json={"operation": "model_delete", "model": "../../x"}
            )
        traversal = [e async for e in client.stream(refused.json()["detail"]["job_id"])]
        deleted = await run_job(client, {"operation": "model_delete", "model": "mine"})
    entry = added[-1].data["result"]
    assert entry["path"] == str(local) and entry["owned"] is False
    assert refused.status_code == 400 and "is not a catalog id" in refused.json()["error"]
    assert traversal[-1].state == "failed" and "is not a catalog id" in traversal[-1].data["error"]
    assert deleted[-1].state == "completed" and local.exists()


def test_unreadable_index_is_set_aside_and_not_ready_models_say_why(tmp_path: Path) -> None:
    """A catalog.json that does not parse is kept as catalog.json.bad and the catalog starts
    empty (the hive still starts); resolving a model that is not available says what to do."""
    from hive.errors import ModelNotFound

    (tmp_path / "catalog.json").write_text("{not json")
    catalog = Catalog(tmp_path).load()
    assert catalog.entries() == []
    assert (tmp_path / "catalog.json.bad").read_text() == "{not json"
    ref = parse_ref("https://example.com/m.gguf")
    catalog.put(new_entry("m", ref, catalog.file_for("m"), owned=True))
    with pytest.raises(ModelNotFound, match="still downloading"):
        catalog.resolve("m")
    with pytest.raises(ModelNotFound, match="not in this hive's catalog"):
        catalog.resolve("other")
