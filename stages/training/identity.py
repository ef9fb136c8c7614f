"""What a resumed run must share with the run it continues besides its options: the teacher cache.

A run's options name its store by path, but a path says nothing about what is in it: another
teacher cached into another (or the same) store would be mixed silently into one run. The cache's
identity (teacher spec and weights SHA-256, split SHA-256, store group) is written into every
checkpoint and into run.json, and ``--resume`` must find the same one.
"""

from __future__ import annotations

from tiekd.pipeline.store.cache import TeacherCache

IDENTITY_KEYS = ("teacher_spec", "teacher_sha256", "split_sha256", "group")
"""The fields of a cache identity, in the order a refusal lists them."""


def cache_identity(cache_ref: tuple[str, str, str] | None) -> dict | None:
    """The identity of the cache a run trains from (None for supervised runs, which use none)."""
    if cache_ref is None:
        return None
    path, teacher, split = cache_ref
    spec = TeacherCache.open(path, teacher, split).spec
    return {
        "teacher_spec": spec.teacher_spec,
        "teacher_sha256": spec.teacher_sha256,
        "split_sha256": spec.split_sha256,
        "group": f"{teacher}/{split}",
    }


def cache_differences(stored: dict | None, current: dict | None) -> list[str]:
    """'field: VALUE in the run vs VALUE now' for each difference between two cache identities.

    The spec's text does not count where equal weights identify the teacher: the same file under
    another path (a moved store, a filesystem mounted elsewhere) is the same teacher.
    """
    if stored is None or current is None:
        return [] if stored == current else [f"cache: {_short(stored)} in the run vs {_short(current)} now"]
    same_weights = stored.get("teacher_sha256") is not None and stored["teacher_sha256"] == current["teacher_sha256"]
    ignored = {"teacher_spec"} if same_weights else set()
    return [
        f"{key}: {_short(stored.get(key))} in the run vs {_short(current[key])} now"
        for key in IDENTITY_KEYS
        if key not in ignored and stored.get(key) != current[key]
    ]


SHA_CHARS = 12
"""A SHA-256 is quoted by its first characters in messages."""


def _short(value) -> str:
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return repr(value[:SHA_CHARS] + "...")
    if isinstance(value, dict):
        return repr(value.get("group"))
    return repr(value)
