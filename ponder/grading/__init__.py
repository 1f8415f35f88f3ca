"""Grading: fill an outcome table's ``score`` from your own data.

A grader has one method, ``grade(response, row) -> Grade`` (LLM judges add ``agrade``): against
the row's ``reference``, its JSON format, its tool calls, its ``tests`` (:class:`CodeGrader`,
untrusted code: opt-in), or by an LLM (:class:`JudgeGrader`). :func:`grade_table` grades a table,
one grader per task; :func:`agreement` compares a grader with scores you already trust.
"""

from .._answers import extract_choice, extract_number
from ._agreement import Agreement, agreement
from ._base import AsyncGrader, Grade, Grader
from ._code import CodeGrader, extract_code
from ._judge import DEFAULT_TEMPLATES, PLACEHOLDERS, JudgeGrader, load_template
from ._reference import (
    ChoiceGrader,
    ExactMatch,
    JsonGrader,
    NumberGrader,
    RegexGrader,
    normalize_text,
)
from ._run import GradeResult, GradeSummary, agrade_table, grade_table, read_table, write_table
from ._spec import GRADERS, grader_specs, parse_grader, parse_graders, register_grader
from ._tools import ToolCallGrader

__all__ = [
    "Agreement", "AsyncGrader", "ChoiceGrader", "CodeGrader", "DEFAULT_TEMPLATES", "ExactMatch",
    "GRADERS", "Grade", "GradeResult", "GradeSummary", "Grader", "JsonGrader", "JudgeGrader",
    "NumberGrader", "PLACEHOLDERS", "RegexGrader", "ToolCallGrader", "agrade_table", "agreement",
    "extract_choice", "extract_code", "extract_number", "grade_table", "grader_specs",
    "load_template", "normalize_text", "parse_grader", "parse_graders", "read_table",
    "register_grader", "write_table",
]
