"""Secrets ponder was given (``register_secret``), and ``scrub``, which redacts every 4+ character
fragment of them in any case: providers echo keys whole, masked, truncated or upper-cased, and any
of those narrows a search. Fragments wholly inside a public prefix (``sk-proj-``) are left alone.
"""

from __future__ import annotations

import logging
import re
import string
import threading

__all__ = ["SecretFilter", "forget_secrets", "install_log_scrubbing", "register_secret", "scrub"]

MIN_FRAGMENT = 4
REDACTED = "[redacted]"
# Longest first: a key's public part is the longest of these it starts with.
PUBLIC_PREFIXES = ("sk-ant-api03-", "sk-svcacct-", "sk-proj-", "sk-ant-", "sk-")
# Masked keys whose owner ponder was never told about: sk-abc1****wxyz, sk-...wxyz, sk-proj-Ab12.
_MASKED = re.compile(
    r"sk-[A-Za-z0-9_\-*]*(?:\.{3}|\u2026)[A-Za-z0-9_\-]+"
    r"|sk-[A-Za-z0-9_\-*]{4,}"
    r"|[A-Za-z0-9_\-]{0,8}\*{3,}[A-Za-z0-9_\-]{0,8}",
    re.IGNORECASE,
)

_lock = threading.Lock()
_secrets: set[str] = set()
_fragments: re.Pattern[str] | None = None  # finds (by lookahead) where a secret 4-gram starts
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def _lower(text: str) -> str:
    """Lower-cased, position for position (``str.lower`` may lengthen a few non-ASCII letters)."""
    low = text.lower()
    return low if len(low) == len(text) else text.translate(_ASCII_LOWER)


def _grams(secret: str) -> set[str]:
    low = _lower(secret)
    public = next((len(p) for p in PUBLIC_PREFIXES if low.startswith(p)), 0)
    # a gram that ends inside the public prefix is wholly public; one that crosses it is not
    return {low[i:i + MIN_FRAGMENT] for i in range(max(0, public - MIN_FRAGMENT + 1),
                                                   len(low) - MIN_FRAGMENT + 1)}


def _trie_pattern(words: set[str]) -> re.Pattern[str]:
    """One regex for many 4-grams, shaped as a trie so each position costs a few comparisons."""
    trie: dict[str, dict] = {}  # type: ignore[type-arg]
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})

    def emit(node: dict) -> str:  # type: ignore[type-arg]
        alts = [re.escape(ch) + emit(sub) for ch, sub in sorted(node.items())]
        return "" if not alts else alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"

    return re.compile(f"(?={emit(trie)})")


def register_secret(value: str | None) -> None:
    """Have ``scrub`` redact this credential; call it wherever one is read (not for placeholders)."""
    global _fragments
    if not value or len(value) < MIN_FRAGMENT:
        return
    with _lock:
        if value in _secrets:
            return
        _secrets.add(value)
        grams = set().union(*(_grams(s) for s in _secrets))
        _fragments = _trie_pattern(grams) if grams else None


def forget_secrets() -> None:
    """Forget every registered secret (for tests, whose planted keys are not random)."""
    global _fragments
    with _lock:
        _secrets.clear()
        _fragments = None


def _scrub_piece(text: str, pattern: re.Pattern[str] | None) -> str:
    text = _MASKED.sub(REDACTED, text)
    if pattern is None:
        return text
    out: list[str] = []
    end = 0  # where the current run of secret 4-grams ends
    for m in pattern.finditer(_lower(text)):
        if not out or m.start() > end:  # a new run: keep the text since the last one
            out += (text[end:m.start()], REDACTED)
        end = m.start() + MIN_FRAGMENT
    return "".join(out) + text[end:]


def scrub(text: str) -> str:
    """``text`` with secret fragments and masked-looking keys redacted (idempotent)."""
    if not text:
        return text
    pattern = _fragments
    return REDACTED.join(_scrub_piece(part, pattern) for part in text.split(REDACTED))


def _scrub_arg(arg: object) -> object:
    if arg is None or isinstance(arg, (int, float)):
        return arg
    text = arg if isinstance(arg, str) else str(arg)
    clean = scrub(text)
    return arg if clean == text else clean


class SecretFilter(logging.Filter):
    """Scrubs a log record; arguments one by one, so formatters reading ``record.args`` (uvicorn's
    access log) keep working unless a secret spans message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is logging's problem, not ours
            message = None
        if message is None or scrub(message) != message:
            if isinstance(record.msg, str):
                record.msg = scrub(record.msg)
            if isinstance(record.args, dict):
                record.args = {k: _scrub_arg(v) for k, v in record.args.items()}
            elif record.args:
                record.args = tuple(_scrub_arg(a) for a in record.args)
            try:
                message = record.getMessage()
                if scrub(message) != message:
                    record.msg, record.args = scrub(message), None
            except Exception:  # noqa: BLE001
                record.msg, record.args = scrub(str(record.msg)), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


LOGGERS = ("", "ponder", "uvicorn", "uvicorn.error", "uvicorn.access")
_FILTER = SecretFilter()


def install_log_scrubbing(loggers: tuple[str, ...] = LOGGERS) -> None:
    """Add the filter to these loggers' handlers (on handlers, propagated records pass it too);
    call it after logging is configured, again for handlers added since."""
    for name in loggers:
        for handler in logging.getLogger(name).handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
