"""The README's SLURM job array, run for real: `runners/slurm/spec_array.sh` submitted with sbatch to
a one-node cluster started here (`slurm_cluster`), its shards pointed at the session's tiny vLLM
servers through the script's SPECTRA_* variables, 1 CPU and 1 GB a task (two run at a time).

The shards of the array hold every (problem, repeat) once and `evaluators.evaluate` reads them as
one run. A shard cancelled with `scancel` while it waits on a stalled request keeps what it had
written, and submitted again alone it finishes its slice without redoing or repeating a record.
"""

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.data.problems import demo_problems
from engine.run.execute import Shard
from engine.run.folder_lock import LOCK_FILE
from engine.run.store import RECORDS_FILE, read_records
from evaluators.evaluate import main as evaluate
from tests.integration.fault_proxy import Fault, FaultProxy, Rule
from tests.integration.slurm_cluster import ENDED, POLL_S, SlurmCluster, missing_commands, one_node_cluster
from tests.integration.test_interrupts import DEMO_PROBLEMS, RUN_TIMEOUT_S, has_a_record
from tests.integration.test_runs import SHORT
from tests.paths import REPO_ROOT

SCRIPT = REPO_ROOT / "runners" / "slurm" / "spec_array.sh"
SHARDS = 3
ONE_CORE = ("--cpus-per-task=1", "--mem=1G")
STALL_S = 3600.0  # longer than any test waits: the stalled shard ends only by scancel


# A mark, not a skip in the fixture: the session's vLLM servers would start before the fixture ran.
needs_slurm = pytest.mark.skipif(
    bool(missing_commands()),
    reason=f"SLURM is not installed (no {', '.join(missing_commands())}); `bash .ci/install` installs it",
)


@pytest.fixture(scope="module")
async def slurm(tmp_path_factory):
    async with one_node_cluster(tmp_path_factory.mktemp("slurm")) as cluster:
        yield cluster


def job_env(servers, out: Path, repeats: int, small_url: str | None = None) -> dict[str, str]:
    """The script's variables for a run of the demo problems on the tiny servers, into `out`."""
    return {
        "SPECTRA_PYTHON": sys.executable,
        "SPECTRA_DATASET": "demo",
        "SPECTRA_PROBLEM_ID": f"0-{DEMO_PROBLEMS - 1}",
        "SPECTRA_REPEAT_ID": f"0-{repeats - 1}",
        "SPECTRA_BIG_MODEL": servers.big.model,
        "SPECTRA_BIG_URL": servers.big.url,
        "SPECTRA_SMALL_MODEL": servers.small.model,
        "SPECTRA_SMALL_URL": small_url or servers.small.url,
        "SPECTRA_SHARDS": str(SHARDS),
        "SPECTRA_OUTPUT_DIR": str(out),
        "SPECTRA_ARGS": " ".join(f"--{name}={value}" for name, value in SHORT.items()),
    }


def all_keys(repeats: int) -> list[tuple[str, int]]:
    """The run's work list in order: (problem id, repeat id)."""
    return [(str(problem), repeat) for problem in range(DEMO_PROBLEMS) for repeat in range(repeats)]


def shard_records(out: Path, index: int) -> Path:
    return out / f"shard-{index}-of-{SHARDS}" / RECORDS_FILE


def check_one_run(out: Path, repeats: int, summary: Path) -> None:
    """Every (problem, repeat) is written exactly once, by its shard, whole; evaluate reads one run."""
    for index in range(1, SHARDS + 1):
        read = read_records(shard_records(out, index))
        assert not read.bad_lines and not read.partial_tail
        keys = [record.key for record in read.records]
        assert keys and sorted(keys) == sorted(Shard(index, SHARDS).select(all_keys(repeats))), index
        assert not (shard_records(out, index).parent / LOCK_FILE).exists()

    assert evaluate([str(out), "--json", str(summary)]) == 0
    (run,) = json.loads(summary.read_text())["runs"]
    assert (run["records"], run["problems"], run["repeats"]) == (DEMO_PROBLEMS * repeats, DEMO_PROBLEMS, repeats)


def check_ended(cluster: SlurmCluster, job: str, tasks: dict, expected: dict[str, str]) -> None:
    """The array's tasks ended as `expected` (index -> state), the completed ones with exit code 0."""
    logs = "\n".join(f"task {task}: {cluster.job_log(job, int(task))[-3000:]}" for task in expected)
    assert {task: state.state for task, state in tasks.items()} == expected, logs
    assert all(tasks[task].exit_code == "0:0" for task, state in expected.items() if state == "COMPLETED"), logs


async def wait_for_a_record(cluster: SlurmCluster, task: str, records: Path) -> None:
    """Wait until the running array task `task` (ID_I) has written a record."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not has_a_record(records):
        (state,) = await cluster.tasks(task)
        assert state.state not in ENDED, f"task {task} ended ({state}) before writing a record"
        assert time.monotonic() < deadline, f"task {task} wrote no record in {RUN_TIMEOUT_S} s"
        await asyncio.sleep(POLL_S)


def test_the_readme_shows_the_job_script_as_it_is():
    readme = (REPO_ROOT / "README.md").read_text()
    assert f"```bash\n{SCRIPT.read_text()}```\n" in readme, "copy runners/slurm/spec_array.sh into README.md"


def test_the_job_script_outside_a_job_array_is_refused_with_one_line():
    run = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})

    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.splitlines() == [
        "spec_array.sh: error: no SLURM_ARRAY_TASK_ID; submit it as a job array: "
        "sbatch --array=1-8 runners/slurm/spec_array.sh"
    ]


@needs_slurm
async def test_the_job_array_writes_every_record_once_and_evaluates_as_one_run(slurm, vllm_servers, tmp_path):
    out = tmp_path / "spec_demo"
    env = job_env(vllm_servers, out, repeats=2)

    job = await slurm.submit(SCRIPT, f"--array=1-{SHARDS}", *ONE_CORE, env=env, cwd=REPO_ROOT)
    tasks = await slurm.wait_until_ended(job, RUN_TIMEOUT_S)

    check_ended(slurm, job, tasks, {str(index): "COMPLETED" for index in range(1, SHARDS + 1)})
    check_one_run(out, repeats=2, summary=tmp_path / "summary.json")


@needs_slurm
async def test_a_shard_cancelled_by_scancel_resumes_when_resubmitted(slurm, vllm_servers, tmp_path):
    out = tmp_path / "spec_demo"
    # One repeat: each problem is in one shard, so stalling one problem's requests holds shard 1 alone.
    stalled = Shard(1, SHARDS).select(all_keys(1))[-1]
    records = shard_records(out, 1)
    async with FaultProxy(vllm_servers.small.url) as proxy:
        text = demo_problems()[int(stalled[0])].problem
        proxy.add(Rule(Fault("stall", stall_s=STALL_S), times=None, prompt_contains=text))
        env = job_env(vllm_servers, out, repeats=1, small_url=proxy.url)

        job = await slurm.submit(SCRIPT, f"--array=1-{SHARDS}", *ONE_CORE, env=env, cwd=REPO_ROOT)
        await wait_for_a_record(slurm, f"{job}_1", records)
        await slurm.cancel(f"{job}_1")
        tasks = await slurm.wait_until_ended(job, RUN_TIMEOUT_S)

        check_ended(slurm, job, tasks, {"1": "CANCELLED", "2": "COMPLETED", "3": "COMPLETED"})
        assert "stopped by SIGTERM" in slurm.job_log(job, 1), "scancel's SIGTERM reached the runner"
        kept = read_records(records)
        assert kept.records and stalled not in [record.key for record in kept.records]
        assert not kept.partial_tail and not (records.parent / LOCK_FILE).exists()
        written = records.read_bytes()

        proxy.rules.clear()
        again = await slurm.submit(SCRIPT, "--array=1", *ONE_CORE, env=env, cwd=REPO_ROOT)
        check_ended(slurm, again, await slurm.wait_until_ended(again, RUN_TIMEOUT_S), {"1": "COMPLETED"})

    assert records.read_bytes().startswith(written), "the records written before the cancel are kept as they were"
    check_one_run(out, repeats=1, summary=tmp_path / "summary.json")
