"""`--shard I/N`: disjoint, covering, stable slices of the work list; one config digest for all shards."""

import json
from dataclasses import replace

import pytest

from engine.data.problems import Problem
from engine.errors import UsageError
from engine.run.cli import main
from engine.run.config import DataConfig, ModelConfig, RunConfig
from engine.run.execute import Shard, manifest_for, parse_shard, select_work
from engine.run.store import MANIFEST_FILE, RunStore
from tests.unit.run.runner_commands import config_of


def work_config(shard: str | None) -> RunConfig:
    return RunConfig(
        runner="spec",
        output_dir="unused",
        models={"big": ModelConfig("big"), "small": ModelConfig("small")},
        data=DataConfig(shard=shard),
    )


def keys(items) -> list[tuple[str, int]]:
    return [(w.problem.id, w.repeat_id) for w in items]


PROBLEMS = [Problem(id=f"p{i}", problem=f"{i}?", answer=str(i)) for i in range(13)]


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 7, 13, 40])
@pytest.mark.parametrize("repeats", [[0], [0, 1, 2], [3, 5]])
def test_shards_are_disjoint_cover_the_work_and_are_balanced(count, repeats):
    whole = keys(select_work(work_config(None), PROBLEMS, repeats))
    slices = [keys(select_work(work_config(f"{i}/{count}"), PROBLEMS, repeats)) for i in range(1, count + 1)]
    every = [key for one in slices for key in one]
    assert sorted(every) == sorted(whole) and len(every) == len(set(every))  # disjoint and covering
    assert max(map(len, slices)) - min(map(len, slices)) <= 1
    for one in slices:  # each slice keeps the run's order
        assert one == [key for key in whole if key in set(one)]


def test_a_slice_is_round_robin_over_the_ordered_work_list_and_the_same_wherever_it_is_computed():
    work = select_work(work_config("2/3"), PROBLEMS[:4], [0, 1])
    # Work list: p0r0 p0r1 p1r0 p1r1 p2r0 p2r1 p3r0 p3r1; positions 1, 4, 7 go to shard 2.
    assert keys(work) == [("p0", 1), ("p2", 0), ("p3", 1)]
    assert keys(select_work(work_config("2/3"), PROBLEMS[:4], [0, 1])) == keys(work)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1/4", Shard(1, 4)), ("4/4", Shard(4, 4)), (" 2 / 3 ", Shard(2, 3)), ("1/1", Shard(1, 1)), (None, None)],
)
def test_shard_values(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0/4", "I must be between 1 and N"),
        ("5/4", "I must be between 1 and N"),
        ("1/0", "I must be between 1 and N"),
        ("x", "--shard takes I/N"),
        ("2", "--shard takes I/N"),
        ("-1/4", "--shard takes I/N"),
        ("1/4/2", "--shard takes I/N"),
    ],
)
def test_bad_shards_are_one_line_exit_2_and_write_nothing(capsys, tmp_path, text, message):
    out = tmp_path / "out"
    code = main(["run", "--output_dir", str(out), "--no_progress", f"--shard={text}"])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert code == 2
    assert len(errors) == 1 and message in errors[0] and text in errors[0]
    assert not out.exists()


def spec_config(*flags: str) -> RunConfig:
    return config_of("spec", "--dataset_name", "aime", *flags)


def test_the_default_output_folder_names_the_shard_and_a_given_one_is_kept():
    assert spec_config("--shard", "2/4").output_dir == "results/spec_aime-shard-2-of-4"
    assert spec_config().output_dir == "results/spec_aime"
    given = spec_config("--shard", "2/4", "--output_dir", "/scratch/job-7")
    assert given.output_dir == "/scratch/job-7" and given.data.shard == "2/4"


def test_every_shard_has_the_config_digest_of_the_whole_run_and_its_manifest_names_the_shard():
    whole = spec_config()
    shards = [spec_config("--shard", f"{i}/3") for i in (1, 2, 3)]
    assert {s.digest() for s in shards} == {whole.digest()}
    assert [manifest_for(s)["shard"] for s in shards] == [{"index": i, "count": 3} for i in (1, 2, 3)]
    assert manifest_for(whole)["shard"] is None
    assert manifest_for(shards[0])["config"]["data"]["shard"] == "1/3"
    assert spec_config("--shard", "1/3", "--score_threshold", "5").digest() != whole.digest()


def test_a_folder_of_one_shard_refuses_another_shard_unless_overwrite(tmp_path):
    first = manifest_for(replace(work_config("1/2"), output_dir=str(tmp_path)))
    RunStore.open(tmp_path, first)
    second = manifest_for(replace(work_config("2/2"), output_dir=str(tmp_path)))
    with pytest.raises(UsageError, match=r"holds shard 1/2 of this config, not shard 2/2; give each shard its own"):
        RunStore.finished_keys(tmp_path, second)
    whole = manifest_for(work_config(None))
    with pytest.raises(UsageError, match=r"holds shard 1/2 of this config, not the whole run \(no --shard\)"):
        RunStore.finished_keys(tmp_path, whole)
    RunStore.open(tmp_path, second, overwrite=True)
    assert json.loads((tmp_path / MANIFEST_FILE).read_text())["shard"] == {"index": 2, "count": 2}
    assert list(tmp_path.glob(f"{MANIFEST_FILE}.replaced-*"))
