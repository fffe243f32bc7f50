"""SpecLRM's answer identity: the answer its vote counts, read as its `extract_final_answer` reads it.

spectra's own extraction (`engine.data.answers.extract_answer`) takes the last box and compares
answers with math-verify. SpecLRM's vote (`select_best_result`) counts equal values of another
reading, which the `speclrm` aggregation reproduces: the *first* `\\boxed{` of the text, up to its
matching brace (no closing brace: no answer); for math, that content as an integer when `int()` reads
it ("042" and "42" are one answer), else the content; for multiple choice, the content when it is a
letter A-D, else a letter A-D at its start, and with no box at all the letter after "Answer:".
"""

from __future__ import annotations

import re

_FIRST_BOX = re.compile(r"\\boxed\{")
_LEADING_LETTER = re.compile(r"([A-D])[\)\.]?")
_ANSWER_LETTER = re.compile(r"[Aa]nswer:\s*([A-D])")
LETTERS = ("A", "B", "C", "D")


def speclrm_answer(text: str, *, choices: bool = False) -> str | None:
    """The answer SpecLRM reads in `text` (its text form: an integer as `str(int)`), or None."""
    opening = _FIRST_BOX.search(text or "")
    if opening is None:
        found = _ANSWER_LETTER.search(text or "") if choices else None
        return found.group(1).upper() if found else None
    depth = 1
    for pos in range(opening.end(), len(text)):
        depth += {"{": 1, "}": -1}.get(text[pos], 0)
        if depth == 0:
            return speclrm_identity(text[opening.end() : pos], choices=choices)
    return None


def speclrm_identity(content: str, *, choices: bool = False) -> str | None:
    """A box's content as SpecLRM's vote counts it: an integer when `int()` reads it, a choice letter."""
    answer = content.strip()
    if choices:
        if answer in LETTERS:
            return answer
        leading = _LEADING_LETTER.match(answer)
        return leading.group(1) if leading else None
    try:
        return str(int(answer))
    except ValueError:
        return answer
