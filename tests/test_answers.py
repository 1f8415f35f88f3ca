"""One set of answer rules (ponder._answers) behind the graders, the agreement features, the
agreement rungs and the public-data loaders: the cases where the three earlier copies differed."""

from __future__ import annotations

import pytest

from ponder._answers import extract_answer, extract_choice, last_boxed, last_yes_no
from ponder._features import agreement
from ponder.cascade._agreement import answer_key
from ponder.evaluation._loaders import score_prime


@pytest.mark.parametrize(("reply", "letter"), [
    ("(J)", "J"), ("I. Both of the above", "I"), ("Answer: **J**", "J"),  # ten options (MMLU-Pro)
    ("b", "B"), ("(c).", "C"), ("[D] because", "D"),  # a lone lower-case letter is a choice
    ("I think so", None), ("A cat sat on the mat", None),  # a capital that starts a word is not
    ("The answer is a bit unclear", None), ("the answer is (b).", "B"),
    (r"\boxed{Eight}", None), (r"\boxed{\text{(H)}}", "H"),
])
def test_choice_letters_are_one_rule_for_grading_and_features(reply, letter):
    assert extract_choice(reply) == letter
    assert extract_answer(reply) == (letter.lower() if letter else None)
    assert answer_key(reply, "choice") == letter  # agreement rungs compare with the same rule


@pytest.mark.parametrize(("reply", "said"), [
    ("so [No]. Final: [Yes]", "yes"), ("Final: [ no ]", "no"), ("[YES ]", "yes"), ("yes", None),
])
def test_yes_no_is_one_rule_for_the_loaders_and_features(reply, said):
    assert last_yes_no(reply) == said
    assert extract_answer(reply) == said
    assert score_prime(reply, "Yes") == float(said == "yes")  # LLMDrift PRIME scoring


def test_answer_values_and_agreement():
    assert extract_answer("The answer is 1,234.") == "1234"
    assert extract_answer("After some thought the final answer is: true, as shown above") == "true"
    assert extract_answer("x" * 100 + " then (B)") is None  # positional letters only in short replies
    assert extract_answer("\\boxed{C}\n\nExplanation: " + "the option fits " * 9) == "c"  # marked: any length
    assert agreement("(J)", "J. Neither") == 1.0 and agreement("(I)", "(J)") == 0.0
    assert last_boxed(r"\boxed{\frac{1}{2}} and \boxed{x^{2}}") == "x^{2}" and last_boxed("{1}") is None
