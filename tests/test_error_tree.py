"""The error classes are the tree that ponder/_exceptions.py draws in its docstring."""

from __future__ import annotations

import re

import ponder
from ponder import _exceptions
from ponder.providers import RetryPolicy, retry_delay


def _drawn_tree() -> dict[str, str]:
    """child class name -> parent class name, read from the module docstring's drawing."""
    doc = (_exceptions.__doc__ or "").splitlines()
    first = next(i for i, line in enumerate(doc) if line.strip() == "PonderError")
    parents: dict[str, str] = {}
    above: list[tuple[int, str]] = []  # (column where the name starts, name) on the path here
    for line in doc[first:]:
        if not line.strip():
            break
        m = re.search(r"([A-Z]\w+(?: / [A-Z]\w+)*)", line)
        assert m, line
        while above and above[-1][0] >= m.start():
            above.pop()
        names = m.group(1).split(" / ")
        parents |= {name: above[-1][1] for name in names if above}
        above.append((m.start(), names[0]))
    return parents


def test_every_error_class_has_the_parent_its_drawing_shows():
    drawn = _drawn_tree()
    assert drawn["ProviderUnavailable"] == "ProviderError" and drawn["ConfigError"] == "PonderError"
    assert drawn["UnknownModel"] == drawn["UnknownProvider"] == "PonderError"
    for name in _exceptions.__all__:
        if name == "PonderError":
            continue
        cls = getattr(_exceptions, name)
        ponder_bases = {b.__name__ for b in cls.__bases__ if issubclass(b, ponder.PonderError)}
        assert ponder_bases == {drawn[name]}, name


def test_a_failed_chain_is_not_a_retryable_unavailable_provider():
    failed = ponder.AllModelsFailed([("openai:a", ponder.ProviderUnavailable("down")),
                                     ("openai:b", ponder.ProviderTimeout("slow"))])
    assert isinstance(failed, ponder.ProviderError)
    assert not isinstance(failed, ponder.ProviderUnavailable)
    assert retry_delay(RetryPolicy(), 1, failed) is None  # every rung was already tried
    assert retry_delay(RetryPolicy(), 1, ponder.ProviderUnavailable("down")) is not None
