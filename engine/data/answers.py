"""Final answers: extraction from model text, and equivalence of two answers.

Extraction is plain regular expressions. Equivalence has fast paths (identical after light
normalisation, two integers, two choice letters) and otherwise asks math-verify, so that
`\\frac{1}{2}`, `0.5` and `1/2` match.

math-verify runs in one helper process, not in the caller. Its own timeout uses
`signal.alarm`, which works only in the main thread (it raises in a worker thread, and
under pytest-timeout it would cancel the test's alarm); a runaway sympy computation
(`9^{9^{9^9}}`) cannot be stopped inside a thread at all. The helper process is killed
when a check runs past its deadline (and restarted on the next check), does not hold the
caller's GIL, and is the same code path from the main thread, a worker thread or asyncio.

Blocking: `answers_equivalent`, `is_correct` and `group_equivalent` block the calling
thread for up to `timeout_s` per comparison (plus a one-off helper start of about a second).
From asyncio code call them through `await asyncio.to_thread(...)`. Calls from several
threads are safe; they take turns on the one helper. Results are cached per pair. The only
exception they raise is a SpectraError when the helper process cannot start at all.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import re
import select
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import structlog

from engine.errors import SpectraError

log = structlog.get_logger(__name__)

DEFAULT_TIMEOUT_S = 5.0
HELPER_START_TIMEOUT_S = 60.0

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\b")
_ANSWER_PHRASE_RE = re.compile(r"answer\**\s*(?:is\b:?|:)\**[ \t]*(?P<x>[^\n]*)", re.IGNORECASE)
_CHOICE_PHRASE_RE = re.compile(
    r"(?i:answer)\**\s*(?:(?i:is)\b|:)\**\s*(?:(?i:option|choice)\s+)?\(?\s*(?P<x>[A-D])\s*\)?(?![A-Za-z0-9])"
)
_PAREN_LETTER_RE = re.compile(r"\(([A-D])\)")
_LETTER_RE = re.compile(r"\(?\s*([A-Da-d])(?![A-Za-z0-9])")
_TEXT_WRAP_RE = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\s*\{([^{}]*)\}")
_SENTENCE_END_RE = re.compile(r"\.\s")
_SPACING_RE = re.compile(r"\\left(?![A-Za-z])|\\right(?![A-Za-z])|\\[!,;: ]")
# Whitespace goes, except the one space that ends a command before a letter (`\cdot x`).
_WHITESPACE_RE = re.compile(r"(\\[A-Za-z]+)\s+(?=[A-Za-z])|\s+")
# Exact rationals: 12, -3/4, \frac{-3}{4}; compared as fractions without math-verify.
_RATIONAL_RES = (
    re.compile(r"(?P<sign>[-+]?)(?P<num>\d+)"),
    re.compile(r"(?P<sign>[-+]?)(?P<num>\d+)/(?P<den>\d+)"),
    re.compile(r"(?P<sign>[-+]?)\\frac\{(?P<num>-?\d+)\}\{(?P<den>-?\d+)\}"),
)


def extract_answer(text: str, *, choices: bool = False) -> str | None:
    """The final answer in a model's text, or None when it gives none.

    Math: the content of the last complete `\\boxed{...}` (nested braces kept; also
    `\\boxed x` and `\\fbox{...}`), else what follows the last "The answer is" / "Answer:" /
    "ANSWER:" on its line, up to the end of the sentence, without `$` and `**`.
    Multiple choice (`choices=True`): an upper-case letter A-D, from the last boxed letter
    (`\\boxed{C}`, `\\boxed{(C)}`, `\\boxed{\\text{C}}`), else "answer is C" / "Answer: (C)",
    else the last "(C)" in the text.
    """
    boxed = _boxed_contents(text)
    if choices:
        return _extract_choice(text, boxed)
    if boxed:
        return boxed[-1]
    for match in reversed(list(_ANSWER_PHRASE_RE.finditer(text))):
        answer = _clean_phrase_answer(match.group("x"))
        if answer:
            return answer
    return None


def _boxed_contents(text: str) -> list[str]:
    """Non-empty contents of every complete box, in order of appearance."""
    contents = []
    for match in _BOX_RE.finditer(text):
        pos = match.end()
        while pos < len(text) and text[pos] in " \t":
            pos += 1
        if text.startswith("{", pos):
            content = _balanced_group(text, pos)
        elif pos > match.end():
            content = re.match(r"[^\s$]*", text[pos:]).group(0)
        else:
            content = None
        if content and content.strip():
            contents.append(content.strip())
    return contents


def _balanced_group(text: str, open_pos: int) -> str | None:
    """Text inside the braces opening at `open_pos`, or None when they never close."""
    depth = 0
    for pos in range(open_pos, len(text)):
        if text[pos] == "{":
            depth += 1
        elif text[pos] == "}":
            depth -= 1
            if depth == 0:
                return text[open_pos + 1 : pos]
    return None


def _clean_phrase_answer(raw: str) -> str:
    end = _SENTENCE_END_RE.search(raw)
    answer = raw[: end.start()] if end else raw
    answer = answer.strip().rstrip(".").strip().strip("*").strip()
    if answer.startswith("$") and answer.endswith("$"):
        answer = answer.strip("$").strip()
    elif answer.startswith("\\(") and answer.endswith("\\)"):
        answer = answer[2:-2].strip()
    return answer


def _extract_choice(text: str, boxed: list[str]) -> str | None:
    for content in reversed(boxed):
        letter = choice_letter(content)
        if letter:
            return letter
    phrases = list(_CHOICE_PHRASE_RE.finditer(text))
    if phrases:
        return phrases[-1].group("x")
    parenthesised = _PAREN_LETTER_RE.findall(text)
    return parenthesised[-1] if parenthesised else None


def choice_letter(answer: str | None) -> str | None:
    """The upper-case letter A-D that a short answer names ("C", "(c)", "\\text{C}", "C) 42")."""
    if answer is None:
        return None
    plain = _TEXT_WRAP_RE.sub(r"\1", answer).strip().strip("$").strip()
    match = _LETTER_RE.match(plain)
    return match.group(1).upper() if match else None


def normalize_answer(answer: str) -> str:
    """Spelling-only normalisation: never changes what an answer means.

    Drops spaces (but the one ending a command before a letter), `\\left`/`\\right`, LaTeX
    spacing commands, surrounding `$` and a final period; writes `\\dfrac`/`\\tfrac` as `\\frac`.
    """
    text = answer.strip().rstrip(".").strip().strip("$")
    text = _SPACING_RE.sub("", text)
    text = _WHITESPACE_RE.sub(lambda m: f"{m.group(1)} " if m.group(1) else "", text)
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return text.rstrip(".")


def answers_equivalent(a: str, b: str, timeout_s: float = DEFAULT_TIMEOUT_S, *, multiple_choice: bool = False) -> bool:
    """True when two answers mean the same (symmetric).

    Malformed input, a math-verify error or a check running past `timeout_s` gives False
    (logged), never an exception. Blocks; see the module docstring.
    """
    return _compare("equivalent", a, b, timeout_s, multiple_choice)


def is_correct(
    predicted: str | None,
    reference: str | None,
    *,
    multiple_choice: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> bool:
    """True when `predicted` matches the reference answer; False when either is None.

    The reference is math-verify's gold side (so `x=2` as a reference accepts `2`).
    Multiple choice compares the letters that both name.
    """
    if predicted is None or reference is None:
        return False
    return _compare("correct", predicted, reference, timeout_s, multiple_choice)


def group_equivalent(
    answers: Sequence[str], *, multiple_choice: bool = False, timeout_s: float = DEFAULT_TIMEOUT_S
) -> list[list[int]]:
    """Indices of `answers` grouped by equivalence, groups in order of first appearance.

    Each answer joins the first group whose representative (its first member) it is
    equivalent to; equivalence through math-verify is not always transitive, so comparing
    with representatives only keeps the grouping independent of later members.
    """
    groups: list[list[int]] = []
    for index, answer in enumerate(answers):
        for group in groups:
            if answers_equivalent(answers[group[0]], answer, timeout_s, multiple_choice=multiple_choice):
                group.append(index)
                break
        else:
            groups.append([index])
    return groups


def _compare(kind: str, a: str, b: str, timeout_s: float, multiple_choice: bool) -> bool:
    if multiple_choice:
        letter = choice_letter(a)
        return letter is not None and letter == choice_letter(b)
    norm_a, norm_b = normalize_answer(a), normalize_answer(b)
    if norm_a == norm_b:
        return bool(norm_a)
    rational_a, rational_b = _rational(norm_a), _rational(norm_b)
    if rational_a is not None and rational_b is not None:
        return rational_a == rational_b
    # math-verify reads "abc}{" as abc: an unbalanced answer is malformed and matches nothing.
    if not (_balanced(norm_a) and _balanced(norm_b)):
        return False
    if kind == "equivalent" and b.strip() < a.strip():
        a, b = b, a  # symmetric: one cache entry per pair
    return _math_verify_cached(kind, a.strip(), b.strip(), float(timeout_s))


def _rational(text: str) -> Fraction | None:
    for pattern in _RATIONAL_RES:
        match = pattern.fullmatch(text)
        if match:
            denominator = int(match.groupdict().get("den") or 1)
            if denominator == 0:
                return None
            value = Fraction(int(match["num"]), denominator)
            return -value if match["sign"] == "-" else value
    return None


def _balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


@functools.lru_cache(maxsize=65536)
def _math_verify_cached(kind: str, a: str, b: str, timeout_s: float) -> bool:
    return _HELPER.check(kind, a, b, timeout_s)


class _MathVerifyHelper:
    """The one helper process running math-verify, started on first use, killed on a deadline.

    A plain subprocess speaking JSON lines, not `multiprocessing`: spawning through
    multiprocessing re-imports the caller's `__main__`, which breaks in scripts without a
    `if __name__ == "__main__"` guard; forking a process with threads is unsafe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._buffer = b""
        self._owner_pid = 0

    def check(self, kind: str, a: str, b: str, timeout_s: float) -> bool:
        with self._lock:
            process = self._running_process()
            request = json.dumps({"kind": kind, "a": a, "b": b}) + "\n"
            try:
                process.stdin.write(request.encode())
                process.stdin.flush()
                line = self._read_line(process, timeout_s)
            except (OSError, EOFError) as exc:
                line, error = None, f"helper process ended: {exc!r}"
            else:
                error = "no answer within the deadline" if line is None else ""
            if line is None:
                log.warning("answer_check_abandoned", reason=error, a=a[:200], b=b[:200], timeout_s=timeout_s)
                self.stop()
                return False
        reply = json.loads(line)
        if not reply["ok"]:
            log.warning("answer_check_failed", error=reply["value"], a=a[:200], b=b[:200])
            return False
        return bool(reply["value"])

    def _running_process(self) -> subprocess.Popen[bytes]:
        # In a forked child the inherited helper (and its pipes) belongs to the parent: start another.
        if self._process is not None and self._process.poll() is None and self._owner_pid == os.getpid():
            return self._process
        self.stop()
        package_root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
        command = [sys.executable, "-c", "from engine.data.answers import serve_math_verify; serve_math_verify()"]
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self._owner_pid = os.getpid()
        self._buffer = b""
        try:
            ready = self._read_line(self._process, HELPER_START_TIMEOUT_S)
        except EOFError:
            ready = None
        if ready != "ready":
            self.stop()
            raise SpectraError(
                f"the math-verify helper process did not start within {HELPER_START_TIMEOUT_S:.0f}s; "
                "check that `python -c 'import math_verify'` works in this environment"
            )
        log.debug("answer_checker_started", pid=self._process.pid)
        return self._process

    def _read_line(self, process: subprocess.Popen[bytes], timeout_s: float) -> str | None:
        """The helper's next line, or None when it does not come before the deadline; EOFError if it ended."""
        deadline = time.monotonic() + timeout_s
        fd = process.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise EOFError("helper closed its output")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def stop(self) -> None:
        """Kill the helper if this process started it; the next check starts a new one."""
        if self._process is not None and self._owner_pid == os.getpid():
            self._process.kill()
            self._process.wait(5)
            self._process.stdin.close()
            self._process.stdout.close()
        self._process = None


_HELPER = _MathVerifyHelper()
atexit.register(_HELPER.stop)

# Parsed answers kept by the helper; cleared when full, as the answers of one run repeat a lot.
_PARSE_CACHE_LIMIT = 4096


def serve_math_verify() -> None:
    """Body of the helper process: answer JSON-line requests on stdin until stdin closes.

    Request `{"kind": "equivalent"|"correct", "a": str, "b": str}`; reply
    `{"ok": true, "value": bool}` or `{"ok": false, "value": "<error>"}`. For "correct", `b`
    is the reference (math-verify's gold side). The first line written is `ready`.
    """
    from math_verify import parse, verify

    # Deadlines are the parent's job, so math-verify's own (signal) timeouts are off; it
    # warns about that, and about each parse failure, which would only be noise here.
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    parsed: dict[str, list[Any]] = {}

    def parsed_answer(answer: str) -> list[Any]:
        if answer not in parsed:
            if len(parsed) >= _PARSE_CACHE_LIMIT:
                parsed.clear()
            # Wrapped in a box, a bare answer is extracted whole, as LaTeX.
            parsed[answer] = parse("\\boxed{" + answer + "}", parsing_timeout=None)
        return parsed[answer]

    # The pipe carries replies only: anything a library prints goes to stderr instead.
    replies, sys.stdout = sys.stdout, sys.stderr

    def reply(ok: bool, value: bool | str) -> None:
        replies.write(json.dumps({"ok": ok, "value": value}) + "\n")
        replies.flush()

    replies.write("ready\n")
    replies.flush()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            pa, pb = parsed_answer(request["a"]), parsed_answer(request["b"])
            if request["kind"] == "correct":
                result = verify(pb, pa, timeout_seconds=None)
            else:
                result = verify(pa, pb, timeout_seconds=None) or verify(pb, pa, timeout_seconds=None)
            reply(True, bool(result))
        except Exception as exc:  # noqa: BLE001 - sent to the caller, which logs it
            reply(False, f"{type(exc).__name__}: {exc}")
