"""Model refs and catalog ids, without processes: which workers serve a ref, and what a
hive's refusal makes the queen forget."""

from __future__ import annotations

from queen._refs import ModelRefs, match
from queen.hives import HiveRegistry

CATALOG = [
    {"id": "tiny", "source": "builtin:tiny", "status": "available"},
    {"id": "half", "source": "hf:org/half.gguf", "status": "downloading"},
]


def test_a_ref_names_an_available_entry_by_id_or_source() -> None:
    """`builtin:tiny` and `tiny` both name the tiny entry; a download in progress is not
    available yet; an unknown ref names nothing."""
    assert match(CATALOG, "builtin:tiny") == "tiny"
    assert match(CATALOG, "tiny") == "tiny"
    assert match(CATALOG, "hf:org/half.gguf") is None
    assert match(CATALOG, "smollm2") is None


def test_a_ref_learned_on_one_hive_serves_there_and_is_forgotten_on_refusal() -> None:
    """A worker of `tiny` serves `builtin:tiny` on a hive whose catalog said so, not on a
    hive not asked yet; forgetting the ref (the hive refused it) drops every ref that
    named the same id there, and nothing on other hives."""
    refs = ModelRefs(HiveRegistry({}, secret="test-secret"))
    refs.remember("a", "builtin:tiny", "tiny")
    refs.remember("a", "./tiny.gguf", "tiny")
    refs.remember("b", "builtin:tiny", "tiny")
    assert refs.serves("a", "tiny", "builtin:tiny") and refs.serves("c", "tiny", "tiny")
    assert not refs.serves("c", "tiny", "builtin:tiny")
    assert refs.refs_of({"tiny"}) == {"builtin:tiny", "./tiny.gguf"}
    refs.forget("a", "builtin:tiny")
    assert refs.cached("a", "./tiny.gguf") is None and refs.cached("b", "builtin:tiny") == "tiny"
    refs.forget("b", "tiny")  # `model delete tiny`: by catalog id
    assert refs.cached("b", "builtin:tiny") is None
