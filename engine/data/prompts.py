"""Prompt sets: folders of YAML holding every text a track sends, found by name or by path.

A set is a folder with up to three files, described in `prompts/README.md`:
`templates.yaml` (the prompts, with `{placeholders}`), `roles.yaml` (name -> persona
instruction) and `methods.yaml` (name -> description and instruction). A bare name is a
folder of the `prompts` package; anything with a slash, or that exists, is a folder path.
Validation runs on load and fails with one line naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import string
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from engine.errors import UsageError

PACKAGE = "prompts"
DEFAULT_SET = "default"
TEMPLATES_FILE = "templates.yaml"
ROLES_FILE = "roles.yaml"
METHODS_FILE = "methods.yaml"
KNOWN_FILES = (TEMPLATES_FILE, ROLES_FILE, METHODS_FILE)
CHOICE_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class Templates:
    """The raw template texts of a set; `PromptSet.render_*` fills them in."""

    problem: str
    problem_multiple_choice: str
    problem_method: str
    problem_multiple_choice_method: str
    with_role: str
    score: str
    score_prefix: str
    rewrite: str
    answer: str
    select_methods: str
    select_methods_prefix: str
    offload_hint: str
    equivalence: str
    equivalence_prefix: str
    takeover_negative: str
    takeover_verify: str
    takeover_positive: str
    takeover_recap: str
    aligned: str
    aligned_prefix: str
    aligned_system: str = ""
    system: str = ""
    # With --prompt_format raw: what joins the turns' texts, and the text the model continues to
    # them (SpecLRM's f-strings: a newline; RSD's prompt, whose text ends with the assistant's
    # header, runs straight on into the steps: nothing). Absent from `default`, whose digest stays.
    raw_separator: str = "\n"


# key -> (allowed placeholders, required placeholders). A template that drops a required
# placeholder would silently hide the problem (or the draft, or the methods) from the model.
PLACEHOLDERS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "problem": (frozenset({"problem"}), frozenset({"problem"})),
    "problem_multiple_choice": (frozenset({"problem", "choices"}), frozenset({"problem", "choices"})),
    "problem_method": (frozenset({"problem", "method"}), frozenset({"problem", "method"})),
    "problem_multiple_choice_method": (
        frozenset({"problem", "choices", "method"}),
        frozenset({"problem", "choices", "method"}),
    ),
    "with_role": (frozenset({"role", "message"}), frozenset({"role", "message"})),
    "score": (frozenset({"problem", "step"}), frozenset()),
    "score_prefix": (frozenset(), frozenset()),
    "rewrite": (frozenset({"draft"}), frozenset({"draft"})),
    "answer": (frozenset(), frozenset()),
    "select_methods": (
        frozenset({"problem", "methods", "method_num", "example_codes", "first_code", "last_code"}),
        frozenset({"problem", "methods"}),
    ),
    "select_methods_prefix": (frozenset({"method_num"}), frozenset()),
    "offload_hint": (frozenset(), frozenset()),
    "equivalence": (frozenset({"problem", "draft", "step"}), frozenset({"draft", "step"})),
    "equivalence_prefix": (frozenset(), frozenset()),
    "takeover_negative": (frozenset(), frozenset()),
    "takeover_verify": (frozenset(), frozenset()),
    "takeover_positive": (frozenset(), frozenset()),
    "takeover_recap": (frozenset(), frozenset()),
    "aligned": (frozenset({"step", "draft"}), frozenset({"step", "draft"})),
    "aligned_prefix": (frozenset(), frozenset()),
    "aligned_system": (frozenset(), frozenset()),
    "system": (frozenset(), frozenset()),
    "raw_separator": (frozenset(), frozenset()),
}
# An empty `rewrite` selects SpecReason's behaviour (the big model continues the same prefix); an
# empty `system` or `aligned_system` sends no system turn.
MAY_BE_EMPTY = frozenset({"rewrite", "system", "aligned_system", "raw_separator"})


@dataclass(frozen=True)
class Method:
    """A solution method: its letter `code`, a one-line `description` for the selector, an
    `instruction` for the track (its tip in `problem_method`; "" : the track gets the plain problem)."""

    name: str
    code: str
    description: str
    instruction: str


@dataclass(frozen=True)
class PromptSet:
    """A loaded, validated prompt set. `roles` and `methods` are empty when the files are absent."""

    name: str
    path: Path
    templates: Templates
    roles: dict[str, str] = field(default_factory=dict)
    methods: dict[str, Method] = field(default_factory=dict)

    def passing_problems_through(self) -> PromptSet:
        """This set with each problem sent as given: no problem template around it and no system
        turn (the API's requests that name no prompt set, whose client wrote the conversation)."""
        templates = dataclasses.replace(
            self.templates, problem="{problem}", problem_method="{method}\n\n{problem}", system=""
        )
        return dataclasses.replace(self, templates=templates)

    def render_problem(
        self, problem: str, choices: list[str] | tuple[str, ...] | None = None, *, method: str = ""
    ) -> str:
        """The first user message: `problem`, or `problem_multiple_choice` when choices are given;
        with a `method` text, their `_method` twins, which hold it where SpecLRM puts its tip.

        Choices are one `(A) text` a line, each line indented like the `{choices}` line of the
        template (SpecReason's message is an indented string, so its choices are indented too).
        """
        templates = self.templates
        if choices is None:
            return (templates.problem_method if method else templates.problem).format(problem=problem, method=method)
        if not 2 <= len(choices) <= len(CHOICE_LETTERS):
            raise UsageError(f"a multiple-choice problem needs 2 to 26 choices, got {len(choices)}")
        template = templates.problem_multiple_choice_method if method else templates.problem_multiple_choice
        line_start = template.split("{choices}", 1)[0].rpartition("\n")[2]
        indent = line_start if not line_start.strip() else ""
        lines = f"\n{indent}".join(f"({CHOICE_LETTERS[i]}) {text}" for i, text in enumerate(choices))
        return template.format(problem=problem, choices=lines, method=method)

    def render_with_role(self, role: str, message: str) -> str:
        """The first user message of a track that plays `role` (the role's instruction)."""
        return self.templates.with_role.format(role=role, message=message)

    def render_system(self) -> str:
        """The system turn that opens every conversation; "" for none."""
        return self.templates.system.format()

    def render_score(self, problem: str, step: str) -> str:
        """The user turn asking the big model to rate the last step 0-9."""
        return self.templates.score.format(problem=problem, step=step)

    def render_score_prefix(self) -> str:
        """The assistant text the scorer continues from; its next token is the score."""
        return self.templates.score_prefix.format()

    def render_rewrite(self, draft: str) -> str:
        """The user turn showing a rejected draft; "" when the set rewrites by continuing the prefix."""
        return self.templates.rewrite.format(draft=draft)

    def render_answer(self) -> str:
        """The text appended to close thinking and ask for the final answer when the budget is spent."""
        return self.templates.answer.format()

    def render_select_methods(
        self, problem: str, method_num: int, choices: list[str] | tuple[str, ...] | None = None
    ) -> str:
        """The method selector's user message, listing this set's methods as `A. description` lines
        (SpecLRM's letter-coded list) and asking for `method_num` codes; a multiple-choice problem is
        followed by its choices as SpecLRM appends them ("\nChoices: ", then "\n(A) text" each)."""
        methods = list(self.require_methods().values())
        listing = "\n".join(f"{m.code}. {m.description}" for m in methods)
        if choices:
            problem += "\nChoices: " + "".join(f"\n({CHOICE_LETTERS[i]}) {text}" for i, text in enumerate(choices))
        return self.templates.select_methods.format(
            problem=problem,
            methods=listing,
            method_num=method_num,
            example_codes=example_codes([m.code for m in methods], method_num),
            first_code=methods[0].code,
            last_code=methods[-1].code,
        )

    def render_select_methods_prefix(self, method_num: int) -> str:
        """The assistant text the selector continues; its next tokens are the codes."""
        return self.templates.select_methods_prefix.format(method_num=method_num)

    def render_offload_hint(self) -> str:
        """The sentence that asks a SplitReason small model to tag the spans it offloads."""
        return self.templates.offload_hint.format()

    def render_equivalence(self, problem: str, draft: str, step: str) -> str:
        """Lookahead's question: does the drafted step say what the big model's own step says?"""
        return self.templates.equivalence.format(problem=problem, draft=draft, step=step)

    def render_equivalence_prefix(self) -> str:
        return self.templates.equivalence_prefix.format()

    def takeover_words(self, kind: str) -> tuple[str, ...]:
        """Speculative Thinking's cue words of `kind` (negative, verify, positive), one a line of
        `takeover_<kind>`, lower-cased: the reference matches them in lower-cased text."""
        text = getattr(self.templates, f"takeover_{kind}").format()
        return tuple(line.strip().lower() for line in text.splitlines() if line.strip())

    def render_takeover_recap(self) -> str:
        """The words Speculative Thinking puts before the big model's recap."""
        return self.templates.takeover_recap.format()

    def render_aligned(self, step: str, draft: str) -> str:
        """Lookahead Reasoning's judge question: the big model's step (s1) and the draft (s2)."""
        return self.templates.aligned.format(step=step, draft=draft)

    def render_aligned_prefix(self) -> str:
        """The text the judge's answer opens with; its next token says aligned or not."""
        return self.templates.aligned_prefix.format()

    def render_aligned_system(self) -> str:
        """The judge's system turn; "" for none."""
        return self.templates.aligned_system.format()

    def require_templates(self, keys: tuple[str, ...]) -> None:
        """A UsageError when a template a policy or strategy renders is unknown or empty."""
        for key in keys:
            if key not in PLACEHOLDERS:
                raise UsageError(f"prompt set {self.name}: no template {key!r}; known keys: {', '.join(PLACEHOLDERS)}")
            if not getattr(self.templates, key) and key not in MAY_BE_EMPTY:
                raise UsageError(
                    f"prompt set {self.name}: template {key!r} is empty; give its text in {TEMPLATES_FILE}"
                )

    def require_roles(self) -> dict[str, str]:
        """The roles, or a UsageError when this set has none."""
        if not self.roles:
            raise UsageError(f"prompt set {self.name} has no {ROLES_FILE}; use --prompt_set default or add one")
        return self.roles

    def require_methods(self) -> dict[str, Method]:
        """The methods, or a UsageError when this set has none."""
        if not self.methods:
            raise UsageError(f"prompt set {self.name} has no {METHODS_FILE}; use --prompt_set default or add one")
        return self.methods


# SpecLRM's examples of an answer: "B,E" for 2 codes, "B,E,F" for 3, "B,E,F,A" for 4; further
# codes continue through the list.
_EXAMPLE_ORDER = (1, 4, 5, 0)


def example_codes(codes: list[str], count: int) -> str:
    """An example answer of `count` codes for the selector, in SpecLRM's order where it has one."""
    order = [i for i in _EXAMPLE_ORDER if i < len(codes)]
    order += [i for i in range(len(codes)) if i not in order]
    return ",".join(codes[i] for i in order[: max(1, min(count, len(codes)))])


def load_prompt_set(name_or_path: str) -> PromptSet:
    """Load and validate a prompt set: a packaged set by bare name, or any folder by path."""
    folder = _resolve(name_or_path)
    files = _yaml_files(folder)
    if not files:
        raise UsageError(f"prompt set folder {folder} holds none of {', '.join(KNOWN_FILES)}")
    given = _read_templates(folder / TEMPLATES_FILE) if TEMPLATES_FILE in files else {}
    if folder == _package_root() / DEFAULT_SET:
        missing = [f.name for f in fields(Templates) if f.name not in given and f.default is dataclasses.MISSING]
        if missing:
            raise UsageError(f"{folder / TEMPLATES_FILE}: missing key {missing[0]!r}")
        base = {}
    else:
        base = _default_templates()
    templates = Templates(**{**base, **given})
    roles = _read_roles(folder / ROLES_FILE) if ROLES_FILE in files else {}
    methods = _read_methods(folder / METHODS_FILE) if METHODS_FILE in files else {}
    return PromptSet(name=folder.name, path=folder, templates=templates, roles=roles, methods=methods)


def prompt_set_digest(name_or_path: str) -> str:
    """A hash of the YAML files a set is built from: its own and, for the templates it does not
    give, the default set's."""
    folders = [_resolve(name_or_path), _package_root() / DEFAULT_SET]
    digest = hashlib.sha256()
    for folder in dict.fromkeys(folders):
        for path in sorted(folder.glob("*.y*ml")):
            digest.update(f"{folder.name}/{path.name}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def available_prompt_sets() -> list[str]:
    """Names of the prompt sets shipped in the `prompts` package."""
    root = _package_root()
    return sorted(
        p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")) and any(p.glob("*.yaml"))
    )


def _package_root() -> Path:
    # importlib.resources finds the package wherever it is installed (editable or not);
    # the package is a plain folder on disk in both cases, so a Path is safe.
    return Path(str(resources.files(PACKAGE))).resolve()


def _resolve(name_or_path: str) -> Path:
    if not name_or_path.strip():
        raise UsageError(f"empty prompt set name; available: {', '.join(available_prompt_sets())}")
    if "/" in name_or_path or Path(name_or_path).exists():
        folder = Path(name_or_path)
        if not folder.exists():
            raise UsageError(f"prompt set folder {folder} does not exist")
        if not folder.is_dir():
            raise UsageError(f"prompt set path {folder} is not a folder")
        return folder.resolve()
    folder = _package_root() / name_or_path
    if not folder.is_dir():
        raise UsageError(
            f"unknown prompt set {name_or_path!r}; available: {', '.join(available_prompt_sets())} "
            "(or give a path to a folder of YAML files)"
        )
    return folder


def _yaml_files(folder: Path) -> set[str]:
    names = {p.name for p in folder.iterdir() if p.suffix in (".yaml", ".yml")}
    unknown = sorted(names - set(KNOWN_FILES))
    if unknown:
        raise UsageError(f"{folder / unknown[0]}: unknown file in a prompt set; expected {', '.join(KNOWN_FILES)}")
    return names


@functools.cache
def _default_templates() -> dict[str, str]:
    return dataclasses.asdict(load_prompt_set(DEFAULT_SET).templates)


def _load_yaml_mapping(path: Path) -> dict[Any, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UsageError(f"{path}: not valid YAML: {exc.problem or exc.context}{where}") from exc
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from exc
    if data is None:
        raise UsageError(f"{path}: the file is empty; give at least one entry or delete it")
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a mapping of name: value, got {type(data).__name__}")
    if not data:
        raise UsageError(f"{path}: the mapping is empty; give at least one entry or delete the file")
    for key in data:
        if not isinstance(key, str) or not key.strip():
            raise UsageError(f"{path}: key {key!r} must be non-empty text (quote it in YAML)")
    return data


def _read_templates(path: Path) -> dict[str, str]:
    data = _load_yaml_mapping(path)
    for key, text in data.items():
        if key not in PLACEHOLDERS:
            raise UsageError(f"{path}: unknown key {key!r}; known keys: {', '.join(PLACEHOLDERS)}")
        if not isinstance(text, str):
            raise UsageError(f"{path}: key {key!r} must be text, got {type(text).__name__}")
        if not text and key not in MAY_BE_EMPTY:
            raise UsageError(f"{path}: key {key!r} must not be empty")
        if text:
            _check_placeholders(path, key, text)
    return data


def _check_placeholders(path: Path, key: str, text: str) -> None:
    allowed, required = PLACEHOLDERS[key]
    hint = "literal braces are written doubled, e.g. \\boxed{{}}"
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise UsageError(f"{path}: key {key!r}: {exc}; {hint}") from exc
    found = set()
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in allowed:
            known = ", ".join(f"{{{n}}}" for n in sorted(allowed)) or "none"
            raise UsageError(f"{path}: key {key!r}: unknown placeholder {{{name}}} (allowed: {known}); {hint}")
        if spec or conversion:
            raise UsageError(f"{path}: key {key!r}: placeholder {{{name}}} takes no format spec or !conversion")
        found.add(name)
    missing = sorted(required - found)
    if missing:
        raise UsageError(f"{path}: key {key!r} must contain the placeholder {{{missing[0]}}}")


def _read_roles(path: Path) -> dict[str, str]:
    data = _load_yaml_mapping(path)
    for name, instruction in data.items():
        if not isinstance(instruction, str) or not instruction.strip():
            raise UsageError(f"{path}: role {name!r} needs a non-empty instruction text")
    return {name: instruction.strip() for name, instruction in data.items()}


def _read_methods(path: Path) -> dict[str, Method]:
    data = _load_yaml_mapping(path)
    if len(data) > len(CHOICE_LETTERS):
        raise UsageError(f"{path}: at most {len(CHOICE_LETTERS)} methods (one letter code each), got {len(data)}")
    methods = {}
    for position, (name, entry) in enumerate(data.items()):
        if not isinstance(entry, dict):
            raise UsageError(f"{path}: method {name!r} must be a mapping with description and instruction")
        unknown = set(entry) - {"description", "instruction"}
        if unknown:
            raise UsageError(f"{path}: method {name!r}: unknown key {sorted(map(str, unknown))[0]!r}")
        description, instruction = entry.get("description"), entry.get("instruction")
        if not isinstance(description, str) or not description.strip():
            raise UsageError(f"{path}: method {name!r}: key 'description' must be non-empty text")
        if not isinstance(instruction, str):
            raise UsageError(f"{path}: method {name!r}: key 'instruction' must be text (\"\" for the unknown choice)")
        code = CHOICE_LETTERS[position]
        methods[name] = Method(name, code, " ".join(description.split()), instruction.strip())
    return methods
