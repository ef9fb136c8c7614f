"""What a resumed run must share with the run it continues besides its options: the teacher cache.

A run's options name its store by path, but a path says nothing about what is in it: another
teacher cached into another (or the same) store would be mixed silently into one run. The cache's
identity (teacher spec and weights SHA-256, split SHA-256, store group) is written into every
checkpoint and into run.json, and ``--resume`` must find the same one. A run that reads more groups
(the other teachers of ``--teacher-mix``, the ``--unlabelled`` groups) records theirs under
``groups``, in that order, and each must be the same too.
"""

from __future__ import annotations

from tiekd.pipeline.store.cache import TeacherCache
from tiekd.stages.training.config import mixture_weights
from tiekd.stages.training.mixture import unlabelled_shares

IDENTITY_KEYS = ("teacher_spec", "teacher_sha256", "split_sha256", "group")
"""The fields of a cache identity, in the order a refusal lists them."""


def cache_identity(cache_ref: tuple[str, str, str] | None, more: tuple = ()) -> dict | None:
    """The identity of the cache a run trains from (None for supervised runs, which use none), with
    those of the ``more`` groups it reads (references ``(store, teacher, split)``) under ``groups``."""
    if cache_ref is None:
        return None
    identity = _group_identity(cache_ref)
    return identity | {"groups": [_group_identity(ref) for ref in more]} if more else identity


def read_groups(cfg, cache_ref: tuple[str, str, str] | None) -> tuple:
    """References of the groups a run reads besides ``cache_ref``: the other teachers of
    --teacher-mix (over the same split), then the --unlabelled groups (of the same teacher)."""
    if cache_ref is None:
        return ()
    store, teacher, split = cache_ref
    teachers = [(store, name, split) for name in list(mixture_weights(cfg))[1:]]
    return tuple(teachers + [(store, teacher, group) for group in unlabelled_shares(cfg)])


def _group_identity(cache_ref: tuple[str, str, str]) -> dict:
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
    return _group_differences(stored, current) + _more_differences(stored, current)


def _more_differences(stored: dict, current: dict) -> list[str]:
    """The differences of the further groups, each named by its group (a run of tiekd before they
    were recorded has no ``groups``: nothing to compare)."""
    if "groups" not in stored:
        return []
    theirs, ours = stored["groups"], current.get("groups", [])
    if len(theirs) != len(ours):
        return [f"groups: {len(theirs)} more in the run vs {len(ours)} now"]
    return [f"{b['group']} {text}" for a, b in zip(theirs, ours) for text in _group_differences(a, b)]


def _group_differences(stored: dict, current: dict) -> list[str]:
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
