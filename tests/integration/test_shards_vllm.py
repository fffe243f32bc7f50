"""A run split with `--shard` over runner processes sharing the tiny vLLM servers, and a folder's lock.

The shards run at once against the same servers, each into its own folder; together they hold every
(problem, repeat) once, and `evaluators.evaluate` reads them as one run. A second runner started on
a folder that a runner is using is refused at once.
"""

import asyncio
import json

from engine.run.folder_lock import LOCK_FILE
from engine.run.store import MANIFEST_FILE, RECORDS_FILE, read_records
from evaluators.evaluate import main as evaluate
from tests.integration import test_interrupts
from tests.integration.test_interrupts import DEMO_PROBLEMS, has_a_record, runner_command, wait_until

launch = test_interrupts.launch  # the fixture that starts runner processes and kills what they leave

SHARDS = 3
REPEATS = 2


async def test_shards_run_at_once_cover_the_work_once_and_evaluate_as_one_run(vllm_servers, tmp_path, launch):
    folders = [tmp_path / f"spec_demo-shard-{i}-of-{SHARDS}" for i in range(1, SHARDS + 1)]
    runners = [
        await launch(runner_command(vllm_servers, folder, f"--shard={i}/{SHARDS}", f"--repeat_id=0-{REPEATS - 1}"))
        for i, folder in enumerate(folders, start=1)
    ]
    results = await asyncio.gather(*(runner.finish() for runner in runners))
    for runner, (code, _) in zip(runners, results, strict=True):
        assert code == 0, runner.stderr()[-3000:]

    manifests = [json.loads((folder / MANIFEST_FILE).read_text()) for folder in folders]
    assert [m["shard"] for m in manifests] == [{"index": i, "count": SHARDS} for i in range(1, SHARDS + 1)]
    assert len({m["config_digest"] for m in manifests}) == 1
    slices = [[r.key for r in read_records(folder / RECORDS_FILE).records] for folder in folders]
    every = [key for one in slices for key in one]
    expected = {(str(p), r) for p in range(DEMO_PROBLEMS) for r in range(REPEATS)}
    assert len(every) == len(set(every)) and set(every) == expected
    assert sorted(map(len, slices)) == [4, 4, 4]
    assert not any((folder / LOCK_FILE).exists() for folder in folders)

    summary_path = tmp_path / "summary.json"
    assert evaluate([*map(str, folders), "--json", str(summary_path)]) == 0
    (run,) = json.loads(summary_path.read_text())["runs"]
    assert (run["name"], run["records"], run["problems"], run["repeats"]) == ("spec_demo", 12, DEMO_PROBLEMS, REPEATS)


async def test_a_second_runner_on_a_folder_in_use_is_refused_at_once(vllm_servers, tmp_path, launch):
    out = tmp_path / "run"
    first = await launch(runner_command(vllm_servers, out, "--repeat_id=0-9", "--max_problems_in_flight=1"))
    await wait_until(lambda: has_a_record(out / RECORDS_FILE), "the first record", first)

    second = await launch(runner_command(vllm_servers, out, "--repeat_id=0-9"))
    code, stdout = await asyncio.wait_for(second.finish(), 60)

    assert code == 2 and stdout == ""
    (line,) = [ln for ln in second.stderr().splitlines() if ln.startswith("spectra: error:")]
    assert f"{out} is in use by another runner (pid {first.pid} on " in line
    assert first.process.returncode is None, "the first runner goes on"
    first.process.kill()
    await first.process.wait()
    keys = [r.key for r in read_records(out / RECORDS_FILE).records]
    assert len(keys) == len(set(keys))
