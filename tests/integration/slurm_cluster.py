"""A one-node SLURM cluster on this machine, for the tests: Debian's slurm-wlm and munge, no systemd.

`async with one_node_cluster(folder) as cluster:` writes a munge key and a slurm.conf into `folder`,
starts munged, slurmctld and slurmd as background processes of this user on free ports (so it
meets no other cluster, ours or the machine's), and waits until the node is idle. The node is this
machine as `slurmd -C` sees it, and a task gets the cores and memory it asks for, so 1-CPU tasks
run two at a time on 2 cores. On the way out every job still queued or running is cancelled and
waited for, then the daemons are stopped: nothing is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from engine.serving.servers import free_port

COMMANDS = ("mungekey", "munged", "slurmctld", "slurmd", "sbatch", "scancel", "scontrol", "squeue", "sinfo")
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
COMMAND_TIMEOUT_S = 60.0
CANCEL_TIMEOUT_S = 120.0
POLL_S = 0.25
# The states a job or array task ends in (a cancelled one is shown COMPLETING until its processes are gone).
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}


def missing_commands() -> list[str]:
    """The SLURM and munge commands that are not on PATH (`.ci/install` installs them)."""
    return [name for name in COMMANDS if shutil.which(name) is None]


@dataclass(frozen=True)
class TaskState:
    """Where one task of a job array stands, as `scontrol show job` says."""

    task: str  # its array index ("2"), or the indexes not started yet ("2-3")
    state: str  # PENDING, RUNNING, COMPLETING, COMPLETED, CANCELLED, ...
    exit_code: str  # "status:signal", e.g. "0:0"


class SlurmCluster:
    """The running cluster: submit, follow and cancel jobs; every command reads its slurm.conf."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.conf = folder / "slurm.conf"

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf), **(extra or {})}

    async def command(self, *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> str:
        """Run a SLURM command against this cluster; its stdout, or AssertionError with its stderr."""
        return await _checked(*args, env=self.env(env), cwd=cwd)

    async def submit(self, script: Path, *options: str, env: Mapping[str, str], cwd: Path) -> str:
        """sbatch `script` with `options`, the environment `env` added and `cwd` as its working folder;
        the job's id. Each task's stdout and stderr go to `job_log(job, task)`."""
        output = f"--output={self.folder}/job-%A_%a.log"
        line = await self.command("sbatch", "--parsable", output, *options, str(script), env=env, cwd=cwd)
        return line.strip().split(";")[0]

    def job_log(self, job: str, task: int) -> str:
        path = self.folder / f"job-{job}_{task}.log"
        return path.read_text(errors="replace") if path.exists() else f"(no {path})"

    async def tasks(self, job: str) -> list[TaskState]:
        """The tasks of `job` (an array job's id, or one task's `ID_I`) as they stand now."""
        shown = await self.command("scontrol", "show", "job", "--oneliner", job)
        return [_task_state(line) for line in shown.splitlines() if line.strip()]

    async def wait_until_ended(self, job: str, within_s: float) -> dict[str, TaskState]:
        """Wait until every task of `job` has ended; its tasks by array index."""
        deadline = time.monotonic() + within_s
        while True:
            tasks = await self.tasks(job)
            if all(task.state in ENDED for task in tasks):
                return {task.task: task for task in tasks}
            assert time.monotonic() < deadline, f"job {job} still going after {within_s} s: {tasks}"
            await asyncio.sleep(POLL_S)

    async def cancel(self, job: str) -> None:
        await self.command("scancel", job)

    async def cancel_all(self) -> None:
        """Cancel every job of the cluster and wait until they have ended."""
        # %F: an array's job id, which names all its tasks (one id for a plain job).
        jobs = sorted(set((await self.command("squeue", "--noheader", "--format=%F")).split()))
        for job in jobs:
            await self.cancel(job)
        for job in jobs:
            await self.wait_until_ended(job, within_s=CANCEL_TIMEOUT_S)


def _task_state(line: str) -> TaskState:
    fields = dict(re.findall(r"(\w+)=(\S*)", line))
    return TaskState(fields.get("ArrayTaskId", fields["JobId"]), fields["JobState"], fields["ExitCode"])


@contextlib.asynccontextmanager
async def one_node_cluster(folder: Path) -> AsyncIterator[SlurmCluster]:
    """A started cluster whose files are all in `folder`; stopped, with its jobs, on the way out."""
    cluster = SlurmCluster(folder)
    daemons: list[asyncio.subprocess.Process] = []
    try:
        socket_path = await _start_munge(folder, daemons)
        cluster.conf.write_text(await _slurm_conf(folder, socket_path))
        for command in (["slurmctld", "-D"], ["slurmd", "-D", "-N", "localhost"]):
            daemons.append(await _daemon([*command, "-f", str(cluster.conf)], folder / f"{command[0]}.out"))
        await _wait_for_idle_node(cluster, daemons)
        try:
            yield cluster
        finally:
            await cluster.cancel_all()
    finally:
        await _stop(daemons)


async def _start_munge(folder: Path, daemons: list[asyncio.subprocess.Process]) -> Path:
    munge = folder / "munge"
    munge.mkdir(mode=0o700)
    key, socket_path = munge / "munge.key", munge / "munge.socket"
    await _checked("mungekey", "--create", f"--keyfile={key}")
    # --force: munged refuses to run as root without it, and CI runs as root.
    paths = {"socket": socket_path, "key-file": key, "pid-file": munge / "munged.pid", "seed-file": munge / "seed"}
    command = ["munged", "--foreground", "--force", *(f"--{name}={path}" for name, path in paths.items())]
    daemons.append(await _daemon([*command, f"--log-file={munge / 'munged.log'}"], folder / "munged.out"))
    deadline = time.monotonic() + START_TIMEOUT_S
    while not socket_path.exists():
        _check_running(daemons, folder)
        assert time.monotonic() < deadline, f"munged made no socket in {START_TIMEOUT_S} s"
        await asyncio.sleep(POLL_S)
    return socket_path


async def _slurm_conf(folder: Path, munge_socket: Path) -> str:
    """slurm.conf of a cluster of this machine alone. No cgroups (a container may have none to
    give): processes are tracked through /proc and tasks are not pinned."""
    user = getpass.getuser()
    node = await _this_node()
    return "\n".join(
        [
            "ClusterName=spectra-test",
            "SlurmctldHost=localhost",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            f"SlurmUser={user}",
            f"SlurmdUser={user}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={munge_socket}",
            f"StateSaveLocation={folder / 'state'}",
            f"SlurmdSpoolDir={folder / 'spool'}",
            f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
            f"SlurmdPidFile={folder / 'slurmd.pid'}",
            f"SlurmctldLogFile={folder / 'slurmctld.log'}",
            f"SlurmdLogFile={folder / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "SchedulerParameters=batch_sched_delay=0",
            "MpiDefault=none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "ReturnToService=2",
            f"NodeName=localhost NodeAddr=127.0.0.1 {node} State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


async def _this_node() -> str:
    """This machine's CPUs, cores and memory as slurmd finds them (`slurmd -C`), minus its name."""
    first = (await _checked("slurmd", "-C")).splitlines()[0]
    return " ".join(field for field in first.split() if not field.startswith("NodeName="))


async def _run(*args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> tuple[int, str, str]:
    """Run a command to its end: its exit status, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        *args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return process.returncode, stdout.decode(), stderr.decode()


async def _checked(*args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> str:
    """A command's stdout; AssertionError with its stderr when it fails."""
    code, stdout, stderr = await _run(*args, env=env, cwd=cwd)
    assert code == 0, f"{' '.join(args)} failed ({code}): {stderr}"
    return stdout


async def _daemon(command: list[str], output: Path) -> asyncio.subprocess.Process:
    with output.open("wb") as log:
        return await asyncio.create_subprocess_exec(*command, stdout=log, stderr=subprocess.STDOUT)


def _check_running(daemons: list[asyncio.subprocess.Process], folder: Path) -> None:
    for process in daemons:
        if process.returncode is not None:
            logs = "\n".join(f"{path.name}: {path.read_text()[-2000:]}" for path in sorted(folder.glob("*.out")))
            raise AssertionError(f"a SLURM daemon exited ({process.returncode}) while starting:\n{logs}")


async def _wait_for_idle_node(cluster: SlurmCluster, daemons: list[asyncio.subprocess.Process]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    state = ""
    while state != "idle":
        _check_running(daemons, cluster.folder)
        assert time.monotonic() < deadline, f"the SLURM node is {state!r}, not idle, after {START_TIMEOUT_S} s"
        await asyncio.sleep(POLL_S)
        _, shown, _ = await _run("sinfo", "--noheader", "--format=%T", env=cluster.env())
        state = shown.strip()  # empty while slurmctld is starting


async def _stop(daemons: list[asyncio.subprocess.Process]) -> None:
    """Stop the daemons, the last started first: SIGTERM, then SIGKILL to one that lingers."""
    for process in reversed(daemons):
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # it exited a moment ago
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                process.kill()
                await process.wait()
