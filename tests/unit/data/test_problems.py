"""Data sets: the benchmark files, local formats, presets, selection and the one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow
import pyarrow.parquet
import pytest

from engine.data.problems import (
    ALIASES,
    PRESETS,
    Problem,
    demo_problems,
    format_id_spec,
    load_problems,
    parse_field_map,
    parse_id_spec,
    select_problems,
)
from engine.errors import UsageError
from tests.paths import REPO_ROOT

SHARED_DATA = REPO_ROOT / ".." / "shared" / "data"
BENCHMARKS = {"aime24": 30, "aime25": 30, "amc23": 40, "gsm8k": 1319, "math500": 500}


def shared_file(name: str) -> Path:
    path = SHARED_DATA / name / "test.jsonl"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def usage_error(*args, **kwargs) -> str:
    with pytest.raises(UsageError) as caught:
        load_problems(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message, "errors are one line"
    return message


# --- the benchmark files -------------------------------------------------------------------


@pytest.mark.parametrize(("name", "rows"), sorted(BENCHMARKS.items()))
def test_benchmark_files_load_by_path(name, rows):
    path = shared_file(name)
    problems = load_problems(str(path))
    assert len(problems) == rows
    raw = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [p.id for p in problems] == [str(r["id"]) for r in raw]
    assert [p.problem for p in problems] == [r["problem"] for r in raw]
    assert all(p.answer for p in problems)
    assert all(p.choices is None for p in problems)


def test_aime24_preset_with_local_file_numbers_problems_60_to_89():
    path = shared_file("aime24")
    problems = load_problems("aime24", data_file=path)
    assert [p.id for p in problems] == [str(i) for i in range(60, 90)]
    assert problems[0].answer == "204"
    assert load_problems("aime", data_file=str(path)) == problems
    selected = select_problems(problems, "60,62,70-72", dataset="aime24")
    assert [p.id for p in selected] == ["60", "62", "70", "71", "72"]
    with pytest.raises(UsageError) as caught:
        select_problems(problems, "90-99", dataset="aime24")
    assert str(caught.value) == "--problem_id 90-99 selects no problem of aime24 (ids 60-89)"


def test_math500_preset_with_local_file_selects_by_position():
    path = shared_file("math500")
    problems = load_problems("math", data_file=path)
    assert problems[0].id == "test/precalculus/807.json"
    selected = select_problems(problems, "0-99", dataset="math500")
    assert selected == problems[:100]
    with pytest.raises(UsageError, match=r"selects no problem of math500 \(positions 0-499\)"):
        select_problems(problems, "500-510", dataset="math500")


def test_preset_with_local_file_refuses_split(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"problem": "p", "answer": "1"}])
    assert "--split applies to hub data sets" in usage_error("aime24", data_file=path, split="train")
    assert "--split applies to hub data sets" in usage_error(str(path), split="train")


# --- local formats ---------------------------------------------------------------------------

ROWS = [
    {"question": "What is 2+2?", "Answer": 4, "unique_id": "u1"},
    {"question": "What is 3+3?", "Answer": "6 ", "unique_id": "u2"},
]
EXPECTED = [Problem("u1", "What is 2+2?", "4"), Problem("u2", "What is 3+3?", "6")]


def test_jsonl_json_and_parquet_give_the_same_problems(tmp_path):
    jsonl = write_jsonl(tmp_path / "set.jsonl", ROWS)
    (tmp_path / "set.json").write_text(json.dumps(ROWS), encoding="utf-8")
    parquet = tmp_path / "set.parquet"
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist([{**r, "Answer": str(r["Answer"])} for r in ROWS]), parquet)
    assert load_problems(str(jsonl)) == EXPECTED
    assert load_problems(str(tmp_path / "set.json")) == EXPECTED
    assert load_problems(str(parquet)) == EXPECTED


def test_jsonl_skips_blank_lines_and_ids_default_to_row_index(tmp_path):
    path = tmp_path / "set.jsonl"
    path.write_text('{"problem": "a", "answer": "1"}\n\n{"problem": "b", "answer": "2"}\n', encoding="utf-8")
    assert [p.id for p in load_problems(str(path))] == ["0", "1"]


def test_field_map_picks_columns(tmp_path):
    path = write_jsonl(tmp_path / "set.jsonl", [{"q": "Q1", "a": "A1", "k": 7, "problem": "not this"}])
    problems = load_problems(str(path), field_map=parse_field_map(["problem=q", "answer = a", "id=k"]))
    assert problems == [Problem("7", "Q1", "A1")]


def test_missing_problem_field_names_file_fields_and_the_flag(tmp_path):
    path = write_jsonl(tmp_path / "set.jsonl", [{"q": "Q1", "a": "A1"}])
    message = usage_error(str(path))
    assert str(path) in message
    assert "no problem field (looked for problem, question, Problem; fields found: q, a)" in message
    assert "--field problem=<field>" in message


def test_mapped_field_missing_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "set.jsonl", [{"q": "Q1", "a": "A1"}])
    message = usage_error(str(path), field_map={"problem": "q", "answer": "solution"})
    assert message == f"--field answer=solution: {path} has no such field (fields found: q, a)"


def test_field_missing_in_a_later_row_names_the_row(tmp_path):
    path = write_jsonl(tmp_path / "set.jsonl", [{"problem": "a", "answer": "1"}, {"problem": "b"}])
    assert usage_error(str(path)) == f"{path}: row 1 has no field 'answer' (fields found: problem)"


def test_no_answer_column_gives_no_answers(tmp_path):
    path = write_jsonl(tmp_path / "set.jsonl", [{"problem": "a"}, {"problem": "b"}])
    assert [p.answer for p in load_problems(str(path))] == [None, None]


def test_choices_column_for_multiple_choice_files(tmp_path):
    path = write_jsonl(tmp_path / "mc.jsonl", [{"problem": "Pick", "choices": ["x", "y", "z"], "answer": "B"}])
    assert load_problems(str(path)) == [Problem("0", "Pick", "B", ("x", "y", "z"))]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"problem": "Pick", "choices": "x y", "answer": "B"}])
    assert "row 0: choices must be a list of texts" in usage_error(str(bad))


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("broken.jsonl", '{"problem": "a"}\n{"problem": \n', "broken.jsonl:2: not valid JSON"),
        ("list.jsonl", '["problem", "a"]\n', "row 0 is a list, expected an object"),
        ("dict.json", '{"problem": "a"}', "expected a JSON list of objects, got dict"),
        ("broken.json", "[{", "broken.json: not valid JSON"),
        ("empty.jsonl", "", "holds no problems"),
        ("table.csv", "problem,answer\n", "unsupported type '.csv'; use .jsonl, .json or .parquet"),
        ("bad.parquet", "not parquet", "not a readable parquet file"),
        ("dup.jsonl", '{"id": 1, "problem": "a"}\n{"id": 1, "problem": "b"}\n', "id '1' appears twice"),
        ("blank.jsonl", '{"problem": "  "}\n', "row 0: field 'problem' must be non-empty text"),
    ],
)
def test_broken_files_fail_with_one_line(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    # a .csv is not a known suffix, so it is read as a file only because it exists
    assert expected in usage_error(str(path))


def test_missing_file_and_folder(tmp_path):
    assert usage_error(str(tmp_path / "absent.jsonl")) == f"data file {tmp_path / 'absent.jsonl'} does not exist"
    assert "is not a file" in usage_error(str(tmp_path))
    assert "does not exist" in usage_error("aime24", data_file=tmp_path / "absent.jsonl")


# --- GPQA ------------------------------------------------------------------------------------


def gpqa_rows(count: int) -> list[dict]:
    return [
        {
            "Record ID": f"rec{i}",
            "Question": f"Question {i}?",
            "Correct Answer": f" right {i}\n",
            "Incorrect Answer 1": f"wrong {i}.1",
            "Incorrect Answer 2": f"wrong {i}.2",
            "Incorrect Answer 3": f"wrong {i}.3",
        }
        for i in range(count)
    ]


def test_gpqa_shuffles_choices_reproducibly_and_answers_with_the_letter(tmp_path):
    rows = gpqa_rows(24)
    problems = load_problems("gpqa", data_file=write_jsonl(tmp_path / "gpqa.jsonl", rows))
    assert [p.id for p in problems] == [str(i) for i in range(24)]
    for i, problem in enumerate(problems):
        assert problem.problem == f"Question {i}?"
        assert sorted(problem.choices) == sorted([f"right {i}", f"wrong {i}.1", f"wrong {i}.2", f"wrong {i}.3"])
        assert problem.choices["ABCD".index(problem.answer)] == f"right {i}"
    assert len({p.answer for p in problems}) == 4, "the correct answer is not always in the same place"
    # the order depends on the question only: the same in a reversed copy of the file
    reversed_file = write_jsonl(tmp_path / "reversed.jsonl", rows[::-1])
    again = {p.problem: p.choices for p in load_problems("gpqa_diamond", data_file=reversed_file)}
    assert all(again[p.problem] == p.choices for p in problems)


def test_gpqa_in_the_seeds_order_shows_the_right_answer_first_as_the_row_gives_it(tmp_path):
    rows = gpqa_rows(3)
    problems = load_problems("gpqa", data_file=write_jsonl(tmp_path / "gpqa.jsonl", rows), gpqa_order="seed")
    for i, problem in enumerate(problems):
        assert problem.answer == "A" and problem.choices == (
            f" right {i}\n",
            f"wrong {i}.1",
            f"wrong {i}.2",
            f"wrong {i}.3",
        )


def test_the_seed_runners_show_gpqa_in_the_seeds_order_and_the_flag_is_refused_elsewhere():
    from engine.run.configure import build_config
    from engine.run.runner_plans import RUNNERS

    both = {"big_model": "b", "small_model": "s", "dataset_name": "gpqa"}
    assert build_config(RUNNERS["spec"], both).data.gpqa_order == "seed"
    assert build_config(RUNNERS["spec_scale"], both).data.gpqa_order == "seed"
    assert (
        build_config(RUNNERS["split"], {**both, "big_model_only": True, "small_model": None}).data.gpqa_order
        == "shuffled"
    )
    assert build_config(RUNNERS["spec"], {**both, "gpqa_order": "shuffled"}).data.gpqa_order == "shuffled"
    with pytest.raises(UsageError, match="--gpqa_order orders GPQA's choices, and the data set is math500: drop it"):
        build_config(RUNNERS["spec"], {**both, "dataset_name": "math500", "gpqa_order": "seed"})


def test_gpqa_needs_its_columns_and_takes_no_field_map(tmp_path):
    path = write_jsonl(tmp_path / "notgpqa.jsonl", [{"problem": "p", "answer": "A"}])
    assert "not in GPQA's format: no field 'Question'" in usage_error("gpqa", data_file=path)
    gpqa = write_jsonl(tmp_path / "gpqa.jsonl", gpqa_rows(1))
    assert "--field does not apply" in usage_error("gpqa", data_file=gpqa, field_map={"problem": "Question"})


# --- names, demo, hub ------------------------------------------------------------------------


def test_demo_problems_are_built_in_and_deterministic():
    problems = load_problems("demo")
    assert problems == demo_problems()
    assert 4 <= len(problems) <= 6
    assert len({p.id for p in problems}) == len(problems)
    assert [p.answer for p in problems] == ["210", "391", "6", "1023", "9", "4"]
    assert "no data file" in usage_error("demo", data_file="x.jsonl")


def test_unknown_name_lists_presets_and_alternatives():
    message = usage_error("aime2024")
    assert message.startswith("unknown data set 'aime2024'; presets: ")
    for name in [*PRESETS, *ALIASES, "demo"]:
        assert name in message
    assert "local .jsonl/.json/.parquet file or a Hugging Face id" in message


def test_data_file_needs_a_preset(tmp_path):
    assert "a data file goes with a preset" in usage_error("someone/set", data_file=tmp_path / "a.jsonl")


def test_unknown_field_in_field_map():
    assert "unknown field" in usage_error("demo", field_map={"question": "q"})


def test_hub_failure_offline_is_a_usage_error(tmp_path):
    # HF_HUB_OFFLINE makes `datasets` fail at once instead of retrying the network for ~20 s
    script = (
        "from engine.data.problems import load_problems\n"
        "from engine.errors import UsageError\n"
        "for name in ('nobody-zz/no-such-set', 'aime24'):\n"
        "    try:\n"
        "        load_problems(name)\n"
        "    except UsageError as exc:\n"
        "        print(exc)\n"
    )
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    lines = done.stdout.splitlines()
    assert len(lines) == 2, done.stderr
    assert lines[0].startswith("could not load 'nobody-zz/no-such-set' from the Hugging Face Hub (")
    assert lines[1].startswith("could not load 'HuggingFaceH4/aime_2024' from the Hugging Face Hub (")
    assert all("pass a local .jsonl/.json/.parquet file" in line for line in lines)


# --- specs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "ids"),
    [
        ("60-89", list(range(60, 90))),
        ("60,62,70-72", [60, 62, 70, 71, 72]),
        (" 3 , 1-2 ", [3, 1, 2]),
        ("0", [0]),
        ("5-5", [5]),
    ],
)
def test_parse_id_spec(spec, ids):
    assert parse_id_spec(spec) == ids
    assert parse_id_spec(format_id_spec(ids)) == ids


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", "expected ids and ranges"),
        ("a", "expected ids and ranges"),
        ("1,,2", "expected ids and ranges"),
        ("-1", "expected ids and ranges"),
        ("1-", "expected ids and ranges"),
        ("1-2-3", "expected ids and ranges"),
        ("1.5", "expected ids and ranges"),
        ("\u0663", "expected ids and ranges"),
        ("3-1", "range 3-1 ends before it starts"),
        ("1,1", "id 1 is given more than once"),
        ("1-3,2", "id 2 is given more than once"),
    ],
)
def test_parse_id_spec_rejects_bad_specs(spec, expected):
    with pytest.raises(UsageError, match=expected):
        parse_id_spec(spec)


def test_parse_id_spec_names_the_flag():
    with pytest.raises(UsageError, match=r"^--repeat_id 'x':"):
        parse_id_spec("x", flag="--repeat_id")


def test_format_id_spec():
    assert format_id_spec([60, 61, 62, 70, 72, 73]) == "60-62,70,72-73"
    assert format_id_spec([]) == ""


def test_select_problems_keeps_spec_order_and_skips_missing_ids():
    problems = [Problem(str(i), f"p{i}", None) for i in (5, 6, 7)]
    assert select_problems(problems, None) == problems
    assert [p.id for p in select_problems(problems, "7,5")] == ["7", "5"]
    assert [p.id for p in select_problems(problems, "6-9")] == ["6", "7"]


def test_select_problems_uses_positions_when_ids_are_not_numbers():
    problems = [Problem(f"x{i}", f"p{i}", None) for i in range(3)]
    assert [p.id for p in select_problems(problems, "2,0")] == ["x2", "x0"]
    with pytest.raises(UsageError, match=r"^--problem_id 3 selects no problem of the data set \(positions 0-2\)$"):
        select_problems(problems, "3")


def test_parse_field_map():
    assert parse_field_map([]) == {}
    assert parse_field_map(["problem=question", "id=uid"]) == {"problem": "question", "id": "uid"}
    for bad, expected in [
        ("problem", "expected FIELD=COLUMN"),
        ("=q", "expected FIELD=COLUMN"),
        ("problem=", "expected FIELD=COLUMN"),
        ("question=q", "unknown field 'question'"),
    ]:
        with pytest.raises(UsageError, match=expected):
            parse_field_map([bad])
    with pytest.raises(UsageError, match="mapped twice"):
        parse_field_map(["problem=a", "problem=b"])
