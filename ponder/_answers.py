r"""Reading the answer out of a reply (a choice letter, a number, yes/no, ``\boxed{}``): one set
of rules for the graders, agreement rungs and features of all of ponder.

A letter counts in upper case anywhere it is marked as the answer; in lower case only where it
cannot be a word: the whole reply (``b``), or the end of "the answer is (b).". A reply that starts
with a capital letter counts only when a mark follows it (``B.``, ``(C)``, ``D:``, ``E -``), so
"I think..." and "A cat..." are no choice.
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
    r"""The multiple-choice letter (A–J) an answer picks, upper case, else None. ``marked``: only
    a letter marked as the answer ("the answer is B", ``\boxed{B}``), not one by its place."""
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
    r"""The answer's number: the last ``\boxed{}`` value if there is one, else its last number.

    Handles thousands separators (``1,234``), ``$``, ``%``, fractions (``3/4``,
    ``\frac{3}{4}``) and negatives; ``%`` is dropped (``50%`` is 50). In ``26 + 28 = 54`` the number is 54.
    """
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
    """The structured answer in a response, normalised (lower case); None if there is none.

    Order: the last ``[Yes]``/``[No]``; the choice letter :func:`extract_choice` finds (in a
    reply over 80 characters, a marked one only); the last ``Answer: X`` (yes/no, true/false or a
    number); a reply that is just a number. Free text and code return None, and
    :func:`ponder._features.agreement` falls back to token overlap for those.
    """
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
