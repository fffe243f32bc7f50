"""Problems to solve: from local files, Hugging Face Hub ids, named presets, or built-in demo problems.

`load_problems` takes a preset name (`aime24`, `aime25`, `amc23`, `math500`, `gpqa_diamond`,
and the seeds' aliases `aime`, `math`, `gpqa`), a local `.jsonl` / `.json` / `.parquet`
file, a hub id (`owner/name`, or `owner/name:config`), `demo`, or `toy` (the toy arithmetic task
the trained toy models solve). A preset reads the hub
unless given `data_file=`, a local copy it maps with its own field names. `select_problems`
picks problems by the seeds' `--problem_id` syntax ("60-89", "60,62,70-72").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from engine.errors import UsageError

log = structlog.get_logger(__name__)

FILE_SUFFIXES = (".jsonl", ".json", ".parquet")
# Fields a row maps onto, and the columns tried for each when no --field names one.
DEFAULT_FIELDS: dict[str, tuple[str, ...]] = {
    "problem": ("problem", "question", "Problem"),
    "answer": ("answer", "Answer"),
    "id": ("id", "problem_id", "unique_id"),
    "choices": ("choices",),
}
CHOICE_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
GPQA_OPTIONS = ("Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")
DEMO = "demo"
TOY = "toy"

Rows = list[dict[str, Any]]


@dataclass(frozen=True)
class Problem:
    """One problem. For multiple choice, `choices` are the option texts in display order and
    `answer` is the letter of the right one."""

    id: str
    problem: str
    answer: str | None
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Preset:
    """A named data set: where it lives on the hub and which columns hold what."""

    hub_id: str
    config: str | None
    split: str
    fields: dict[str, tuple[str, ...]]
    # (rows, source, GPQA's choice order) -> problems, for a preset read from fixed columns.
    convert: Callable[[Rows, str, str], list[Problem]] | None = None


# `--gpqa_order`: the seeds' (the right answer first, the texts as the rows give them), or spectra's
# shuffle, fixed per question.
GPQA_ORDERS = ("seed", "shuffled")


def load_problems(
    dataset: str,
    *,
    data_file: str | Path | None = None,
    split: str | None = None,
    field_map: dict[str, str] | None = None,
    gpqa_order: str = "shuffled",
) -> list[Problem]:
    """Load the problems of `dataset` (a preset, a local file, a hub id or "demo").

    `data_file` gives a local copy of a preset; `split` picks a hub split (a preset has its
    own default); `field_map` maps our fields (problem, answer, id, choices) to columns;
    `gpqa_order` orders GPQA's choices (`GPQA_ORDERS`).
    """
    field_map = dict(field_map or {})
    unknown = sorted(set(field_map) - set(DEFAULT_FIELDS))
    if unknown:
        raise UsageError(f"--field {unknown[0]}=...: unknown field; map one of {', '.join(DEFAULT_FIELDS)}")
    if dataset == DEMO:
        if data_file is not None or split is not None or field_map:
            raise UsageError("the demo data set is built in; it takes no data file, --split or --field")
        problems = demo_problems()
    elif dataset == TOY:
        if data_file is not None or field_map:
            raise UsageError("the toy data set is generated; it takes no data file or --field (--split test|train)")
        problems = toy_problems(split or "test")
    elif (preset := PRESETS.get(ALIASES.get(dataset, dataset))) is not None:
        problems = _load_preset(preset, data_file, split, field_map, gpqa_order)
    elif data_file is not None:
        raise UsageError(
            f"a data file goes with a preset ({', '.join(PRESETS)}); to load {data_file} alone, "
            "give the file itself as the data set"
        )
    elif Path(dataset).exists() or dataset.endswith(FILE_SUFFIXES):
        if split is not None:
            raise UsageError(f"--split applies to hub data sets, not to the local file {dataset}")
        problems = _rows_to_problems(_read_file(Path(dataset)), DEFAULT_FIELDS, field_map, dataset)
    elif "/" in dataset:
        hub_id, _, config = dataset.partition(":")
        rows = _hub_rows(hub_id, config or None, split)
        problems = _rows_to_problems(rows, DEFAULT_FIELDS, field_map, dataset)
    else:
        raise UsageError(
            f"unknown data set {dataset!r}; presets: {', '.join([*PRESETS, *ALIASES, DEMO, TOY])}; "
            "a local .jsonl/.json/.parquet file or a Hugging Face id (owner/name[:config]) also works"
        )
    log.info("problems_loaded", dataset=dataset, data_file=str(data_file) if data_file else None, count=len(problems))
    return problems


def parse_field_map(items: Iterable[str]) -> dict[str, str]:
    """Parse `--field` values such as ["problem=question", "id=uid"] into {field: column}."""
    mapping: dict[str, str] = {}
    for item in items:
        name, sep, column = (part.strip() for part in item.partition("="))
        if not sep or not name or not column:
            raise UsageError(f"--field {item!r}: expected FIELD=COLUMN, e.g. --field problem=question")
        if name not in DEFAULT_FIELDS:
            raise UsageError(f"--field {item!r}: unknown field {name!r}; map one of {', '.join(DEFAULT_FIELDS)}")
        if name in mapping:
            raise UsageError(f"--field {item!r}: field {name!r} is mapped twice")
        mapping[name] = column
    return mapping


def parse_id_spec(spec: str, *, flag: str = "--problem_id") -> list[int]:
    """Parse "60-89" or "60,62,70-72" into the ordered list of ids; ranges include both ends."""
    ids: list[int] = []
    seen: set[int] = set()
    for part in spec.split(","):
        low, sep, high = (p.strip() for p in part.partition("-"))
        if not (low.isdigit() and low.isascii()) or (sep and not (high.isdigit() and high.isascii())):
            raise UsageError(f"{flag} {spec!r}: expected ids and ranges such as 60-89 or 60,62,70-72")
        first, last = int(low), int(high) if sep else int(low)
        if last < first:
            raise UsageError(f"{flag} {spec!r}: range {part.strip()} ends before it starts")
        for i in range(first, last + 1):
            if i in seen:
                raise UsageError(f"{flag} {spec!r}: id {i} is given more than once")
            seen.add(i)
            ids.append(i)
    return ids


def format_id_spec(ids: Iterable[int]) -> str:
    """The shortest spec for `ids` in order, e.g. [60, 61, 62, 70] -> "60-62,70"; inverse of parse_id_spec."""
    runs: list[list[int]] = []
    for i in ids:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def select_problems(problems: Sequence[Problem], spec: str | None, *, dataset: str = "the data set") -> list[Problem]:
    """Pick problems by a `--problem_id` spec, in the spec's order; None keeps all.

    When every id is a number (aime24: 60-89) the spec names ids, as in the seeds; otherwise
    it names 0-based positions (math500: 0-499).
    """
    if spec is None:
        return list(problems)
    wanted = parse_id_spec(spec)
    numeric = bool(problems) and all(p.id.isdigit() and p.id.isascii() for p in problems)
    keyed = {int(p.id): p for p in problems} if numeric else dict(enumerate(problems))
    selected = [keyed[i] for i in wanted if i in keyed]
    if not selected:
        known = f"ids {format_id_spec(sorted(keyed))}" if numeric else f"positions 0-{len(problems) - 1}"
        raise UsageError(f"--problem_id {spec} selects no problem of {dataset} ({known})")
    missing = [i for i in wanted if i not in keyed]
    if missing:
        log.warning("problem_ids_missing", dataset=dataset, spec=spec, missing=format_id_spec(missing))
    return selected


def demo_problems() -> list[Problem]:
    """Six small problems whose answers are computed here; for the offline demo (no network)."""
    n, a, b, c = 20, 3, 7, 25
    cases = [
        (f"What is the sum of the integers from 1 to {n}?", sum(range(1, n + 1))),
        ("What is 17 times 23?", 17 * 23),
        (f"Solve for x: {a}x + {b} = {c}.", (c - b) // a),
        ("What is 2 to the power 10, minus 1?", 2**10 - 1),
        ("How many positive divisors does 36 have?", sum(1 for d in range(1, 37) if 36 % d == 0)),
        ("What is the remainder when 2^20 is divided by 7?", pow(2, 20, 7)),
    ]
    return [Problem(id=str(i), problem=text, answer=str(answer)) for i, (text, answer) in enumerate(cases)]


def toy_problems(split: str = "test") -> list[Problem]:
    """The toy arithmetic task (engine/toy/task.py): `test`, the 500 held-out problems; `train`, 500
    problems of the training seed (never one of the test problems)."""
    from engine.toy.task import TEST_SIZE, held_out_problems, train_problems

    if split not in ("test", "train"):
        raise UsageError(f"the toy data set has splits test and train, not {split!r}")
    generated = held_out_problems() if split == "test" else train_problems(TEST_SIZE)
    return [Problem(id=str(i), problem=p.text, answer=str(p.answer)) for i, p in enumerate(generated)]


def is_gpqa(dataset: str) -> bool:
    """Whether `dataset` names the GPQA preset (whose choices `--gpqa_order` orders)."""
    return ALIASES.get(dataset, dataset) == "gpqa_diamond"


def _load_preset(
    preset: Preset, data_file: str | Path | None, split: str | None, field_map: dict[str, str], gpqa_order: str
) -> list[Problem]:
    if preset.convert is not None and field_map:
        raise UsageError(f"{preset.hub_id} is read from its fixed columns; --field does not apply")
    if data_file is not None:
        if split is not None:
            raise UsageError(f"--split applies to hub data sets, not to the local file {data_file}")
        rows, source = _read_file(Path(data_file)), str(data_file)
    else:
        rows, source = _hub_rows(preset.hub_id, preset.config, split or preset.split), preset.hub_id
    if preset.convert is not None:
        return preset.convert(rows, source, gpqa_order)
    return _rows_to_problems(rows, {**DEFAULT_FIELDS, **preset.fields}, field_map, source)


def _read_file(path: Path) -> Rows:
    if not path.exists():
        raise UsageError(f"data file {path} does not exist")
    if not path.is_file():
        raise UsageError(f"data file {path} is not a file; give a .jsonl, .json or .parquet file")
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                rows.append(_parse_json(line, f"{path}:{number}"))
    elif path.suffix == ".json":
        rows = _parse_json(path.read_text(encoding="utf-8"), str(path))
        if not isinstance(rows, list):
            raise UsageError(f"{path}: expected a JSON list of objects, got {type(rows).__name__}")
    elif path.suffix == ".parquet":
        rows = _read_parquet(path)
    else:
        raise UsageError(f"data file {path}: unsupported type {path.suffix!r}; use .jsonl, .json or .parquet")
    for number, row in enumerate(rows):
        if not isinstance(row, dict):
            raise UsageError(f"{path}: row {number} is a {type(row).__name__}, expected an object")
    return rows


def _parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where}: not valid JSON: {exc}") from exc


def _read_parquet(path: Path) -> Rows:
    import pyarrow  # lazy: only parquet files need it
    import pyarrow.parquet

    try:
        return pyarrow.parquet.read_table(path).to_pylist()
    except (pyarrow.ArrowException, OSError) as exc:
        raise UsageError(f"{path}: not a readable parquet file: {exc}") from exc


def _hub_rows(hub_id: str, config: str | None, split: str | None) -> Rows:
    import datasets  # lazy: importing it takes seconds, and local files and the demo need none of it

    try:
        loaded = datasets.load_dataset(hub_id, config, split=split)
    except Exception as exc:  # datasets raises many types here: offline, gated, not found, bad config/split
        reason = (str(exc).splitlines() or [""])[0]
        raise UsageError(
            f"could not load {hub_id!r} from the Hugging Face Hub ({type(exc).__name__}: {reason}); "
            "check the id and the network, or download it and pass a local .jsonl/.json/.parquet file"
        ) from exc
    if isinstance(loaded, datasets.DatasetDict):
        if len(loaded) != 1:
            raise UsageError(f"{hub_id} has splits {', '.join(loaded)}; choose one with --split")
        loaded = next(iter(loaded.values()))
    return loaded.to_list()


def _rows_to_problems(
    rows: Rows, candidates: dict[str, tuple[str, ...]], field_map: dict[str, str], source: str
) -> list[Problem]:
    if not rows:
        raise UsageError(f"{source} holds no problems")
    columns = {name: _pick_column(name, candidates[name], field_map, rows[0], source) for name in DEFAULT_FIELDS}
    if columns["answer"] is None:
        log.warning("no_answer_field", source=source, looked_for=list(candidates["answer"]))
    problems = []
    for index, row in enumerate(rows):
        missing = [c for c in columns.values() if c is not None and c not in row]
        if missing:
            raise UsageError(f"{source}: row {index} has no field {missing[0]!r} (fields found: {', '.join(row)})")
        text = row[columns["problem"]]
        if not isinstance(text, str) or not text.strip():
            raise UsageError(f"{source}: row {index}: field {columns['problem']!r} must be non-empty text")
        answer = row[columns["answer"]] if columns["answer"] else None
        problems.append(
            Problem(
                id=str(row[columns["id"]]) if columns["id"] else str(index),
                problem=text,
                answer=None if answer is None else str(answer).strip(),
                choices=_choices(row[columns["choices"]], source, index) if columns["choices"] else None,
            )
        )
    _check_unique_ids(problems, source)
    return problems


def _pick_column(
    name: str, candidates: tuple[str, ...], field_map: dict[str, str], first_row: dict[str, Any], source: str
) -> str | None:
    found = ", ".join(first_row)
    if name in field_map:
        if field_map[name] not in first_row:
            raise UsageError(f"--field {name}={field_map[name]}: {source} has no such field (fields found: {found})")
        return field_map[name]
    column = next((c for c in candidates if c in first_row), None)
    if column is None and name == "problem":
        raise UsageError(
            f"{source} has no problem field (looked for {', '.join(candidates)}; fields found: {found}); "
            "map one with --field problem=<field>"
        )
    return column


def _choices(value: Any, source: str, index: int) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{source}: row {index}: choices must be a list of texts")
    if not 2 <= len(value) <= len(CHOICE_LETTERS):
        raise UsageError(f"{source}: row {index}: needs 2 to 26 choices, has {len(value)}")
    return tuple(value)


def _check_unique_ids(problems: list[Problem], source: str) -> None:
    seen: set[str] = set()
    for problem in problems:
        if problem.id in seen:
            raise UsageError(f"{source}: id {problem.id!r} appears twice; map a unique field with --field id=<field>")
        seen.add(problem.id)


def _gpqa_problems(rows: Rows, source: str, order: str) -> list[Problem]:
    """GPQA rows -> four choices; the id is the row index, the seeds' --problem_id for gpqa. `order`
    "seed": as both seeds show them, the correct answer as (A) and every text as the row gives it;
    "shuffled": spectra's order, keyed on the question (its Record ID when present) so that it is the
    same on every run and machine, texts stripped."""
    if not rows:
        raise UsageError(f"{source} holds no problems")
    missing = [c for c in ("Question", *GPQA_OPTIONS) if c not in rows[0]]
    if missing:
        raise UsageError(
            f"{source} is not in GPQA's format: no field {missing[0]!r} (fields found: {', '.join(rows[0])})"
        )
    problems = []
    for index, row in enumerate(rows):
        if order == "seed":
            problems.append(Problem(str(index), str(row["Question"]), "A", tuple(str(row[c]) for c in GPQA_OPTIONS)))
            continue
        options = [str(row[c]).strip() for c in GPQA_OPTIONS]
        key = str(row.get("Record ID") or row["Question"])
        shuffled = sorted(range(len(options)), key=lambda i: hashlib.sha256(f"{key}\0{i}".encode()).digest())
        problems.append(
            Problem(
                id=str(index),
                problem=str(row["Question"]).strip(),
                answer=CHOICE_LETTERS[shuffled.index(0)],
                choices=tuple(options[i] for i in shuffled),
            )
        )
    return problems


PRESETS: dict[str, Preset] = {
    # ids 60-89: the AI-MO numbering SpecReason and SpecLRM use for --problem_id; a local copy
    # may carry it as problem_id next to its own string id.
    "aime24": Preset("HuggingFaceH4/aime_2024", None, "train", {"id": ("problem_id", "id")}),
    "aime25": Preset("math-ai/aime25", None, "test", {}),
    "amc23": Preset("math-ai/amc23", None, "test", {}),
    "math500": Preset("HuggingFaceH4/MATH-500", None, "test", {"id": ("unique_id", "id")}),
    "gpqa_diamond": Preset("Idavidrein/gpqa", "gpqa_diamond", "train", {}, convert=_gpqa_problems),
}
ALIASES = {"aime": "aime24", "math": "math500", "gpqa": "gpqa_diamond"}
