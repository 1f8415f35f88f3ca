r"""The answer in a reply (choice letter, number, yes/no, ``\boxed{}``): one set of rules for all of
ponder. A lower-case letter counts only where it cannot be a word, a leading capital only with a
mark after it (``B.``, ``(C)``), so "I think..." and "A cat..." are no choice.
"""

from __future__ import annotations

import re
from fractions import Fraction

LETTERS = "A-J"  # ten options: MMLU-Pro's

_YES_NO = re.compile(r"\[\s*(yes|no)\s*\]", re.IGNORECASE)
# what introduces an answer: "The answer is", "Answer: option", "final answer - **"
_ANSWER_IS = r"(?i:answer)\s*(?i:is|:)?\s*(?i:option|choice)?\s*[:\-]?\s*[*_]*\(?"
_LOWER_AT_END = r"[a-j](?=\)?[*_]*\s*\.?\s*$)"  # "the answer is (b)." ("is a bit" is no answer)
_CHOICE = (  # (pattern, whether its last match counts rather than its first); marked ones first
    (re.compile(_ANSWER_IS + rf"([{LETTERS}]|{_LOWER_AT_END})\)?[*_]*(?!\w)"), True),
    (re.compile(rf"\\boxed\{{\s*(?:\\text\{{)?\(?([{LETTERS}])\)?\s*\}}"), True),  # "\boxed{B}"
    # the whole reply is a letter: "B", "b.", "(B)", "**B**", "[J]"
    (re.compile(rf"^\W*([{LETTERS}])\W*$", re.IGNORECASE), False),
    # a reply that starts with the letter: "B. Paris", "(C) 42", "D: none", "[E] yes", "F - x"
    (re.compile(rf"^\W*\(?([{LETTERS}])(?:[.):\]]|\s*-)\s"), False),
    (re.compile(rf"\(([{LETTERS}])\)"), True),  # the last "(B)" anywhere
)
_VALUE_IS = re.compile(_ANSWER_IS + r"((?i:yes|no|true|false)|-?\d[\d,]*(?:\.\d+)?)\)?[*_]*(?!\w)")
_BARE_NUMBER = re.compile(r"^\s*\$?(-?\d[\d,]*(?:\.\d+)?)\s*\.?\s*$")
_NUMBER = re.compile(
    r"(?<![\w.])-?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s?/\s?\d+(?:\.\d+)?)?\s?%?"
    r"|(?<![\w.])-?\.\d+%?")
_FRAC = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")


def last_yes_no(text: str) -> str | None:
    """The last ``[Yes]``/``[No]`` (any case, spaces inside the brackets allowed), lower case."""
    found = _YES_NO.findall(text or "")
    return found[-1].lower() if found else None


def last_boxed(text: str) -> str | None:
    r"""Contents of the last ``\boxed{...}``, braces balanced (``\boxed{\frac{1}{2}}`` works)."""
    start = (text or "").rfind("\\boxed")
    i = text.find("{", start) if start >= 0 else -1
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None


def extract_choice(answer: str, *, marked: bool = False) -> str | None:
    r"""The choice letter (A–J) picked, upper case; ``marked``: only one marked as the answer."""
    s = str(answer).strip()
    for pattern, last in _CHOICE[:2] if marked else _CHOICE:
        found = pattern.findall(s)
        if found:
            return str(found[-1] if last else found[0]).upper()
    return None


def _to_float(token: str) -> float | None:
    s = token.replace("$", "").replace(",", "").replace(" ", "").rstrip(".")
    s = s.rstrip("%")  # "50%" answers "50" (a reference rarely writes 0.5 for a percentage)
    try:
        if "/" in s:
            num, den = s.split("/", 1)
            return None if float(den) == 0 else float(Fraction(num) / Fraction(den))
        return float(s)
    except (ValueError, ZeroDivisionError):
        return None


def extract_number(answer: str) -> float | None:
    r"""The last ``\boxed{}`` value, else the last number (``1,234``, ``$``, ``50%`` = 50, ``3/4``)."""
    s = str(answer).replace("−", "-").replace("\\!", "").replace("{,}", ",")
    boxed = last_boxed(s)
    if boxed is not None:
        s = boxed
    s = _FRAC.sub(r"(\1)/(\2)", s).replace("\\%", "%").replace("\\$", "$")
    s = re.sub(r"\((-?\d+(?:\.\d+)?)\)/\((\d+(?:\.\d+)?)\)", r"\1/\2", s)
    for token in reversed(_NUMBER.findall(s)):
        value = _to_float(token)
        if value is not None:
            return value
    return None


def extract_answer(text: str) -> str | None:
    """The answer normalised (lower case): [Yes]/[No], a choice letter (marked only past 80
    characters), ``Answer: X``, a bare number; None for free text (agreement uses tokens)."""
    if not text:
        return None
    t = text.strip()
    if t.startswith("[") and t.endswith("]") and "'" in t[:3]:  # stringified list from RouterBench
        t = t.strip("[]").strip().strip("'\"").replace("\\n", "\n").strip()
    yes_no = last_yes_no(t)
    if yes_no is not None:
        return yes_no
    letter = extract_choice(t, marked=len(t) > 80)
    if letter is not None:
        return letter.lower()
    found = _VALUE_IS.findall(t)
    if found:
        return str(found[-1]).lower().replace(",", "")
    bare = _BARE_NUMBER.match(t)
    return bare.group(1).replace(",", "") if bare else None
