"""A run folder: `manifest.json` (the config, model ids, package versions) and `records.jsonl`
(one `ProblemRecord` a line).

Every line is written whole and flushed to disk, so a crash leaves at most a partial last line;
`read_records` reports and skips it. While a runner uses the folder it holds its lock
(`engine.run.folder_lock`): one runner per folder.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from engine.errors import UsageError
from engine.records import ProblemRecord

log = structlog.get_logger(__name__)

RECORDS_FILE = "records.jsonl"
MANIFEST_FILE = "manifest.json"


@dataclass
class ReadResult:
    """Records read from a file, and the lines that could not be read (1-based numbers)."""

    records: list[ProblemRecord]
    bad_lines: list[tuple[int, str]]
    partial_tail: bool


def read_records(path: Path) -> ReadResult:
    """Read a records file. Malformed lines are reported, not fatal.

    A last line without its newline is a write cut short by a crash: `partial_tail` says so.
    """
    records: list[ProblemRecord] = []
    bad: list[tuple[int, str]] = []
    if not path.exists():
        return ReadResult(records, bad, False)
    raw = path.read_bytes()
    partial_tail = bool(raw) and not raw.endswith(b"\n")
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append(ProblemRecord.from_dict(json.loads(line)))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            bad.append((number, f"{type(exc).__name__}: {exc}"))
    return ReadResult(records, bad, partial_tail)


def append_record(path: Path, record: ProblemRecord) -> None:
    """Append one record as one complete line and force it to disk."""
    line = json.dumps(record.to_dict(), ensure_ascii=False) + "\n"
    with path.open("a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


class RunStore:
    """A run folder: its manifest and its records, opened for a run that may be a resume.

    Opening it keeps the finished records, sets aside lines a crash cut short (the original
    file is kept beside it as `records.jsonl.damaged-<time>`), and refuses a folder whose
    manifest has another config digest, or another `--shard`, unless `overwrite` (then the old
    files are kept as `*.replaced-<time>`). The caller holds the folder's lock (`engine.run.folder_lock`).
    """

    def __init__(self, folder: Path, manifest: dict[str, Any], done: set[tuple[str, int]]):
        self.folder = folder
        self.manifest = manifest
        self.done = done

    @property
    def records_path(self) -> Path:
        return self.folder / RECORDS_FILE

    @staticmethod
    def finished_keys(folder: Path, manifest: dict[str, Any], *, overwrite: bool = False) -> set[tuple[str, int]]:
        """The (problem, repeat) pairs a run in `folder` has finished, read without writing anything.
        A failed record (its strategy failed, or all its tracks) is not finished: the next run redoes
        it (and its new line supersedes the old one).

        Raises UsageError when the folder holds a run of another config and `overwrite` is off.
        """
        manifest_path = folder / MANIFEST_FILE
        if manifest_path.exists():
            old = _read_manifest(manifest_path)
            if old.get("config_digest") != manifest["config_digest"]:
                if not overwrite:
                    raise UsageError(
                        f"{folder} holds a run with another config (digest {old.get('config_digest')}, now "
                        f"{manifest['config_digest']}); use a new --output_dir, or --overwrite to replace it"
                    )
                return set()
            if old.get("shard") != manifest.get("shard"):
                if not overwrite:
                    raise UsageError(
                        f"{folder} holds {_shard_name(old)} of this config, not {_shard_name(manifest)}; "
                        "give each shard its own --output_dir, or --overwrite to replace it"
                    )
                return set()
        return finished_keys(read_records(folder / RECORDS_FILE).records)

    @classmethod
    def open(cls, folder: Path, manifest: dict[str, Any], *, overwrite: bool = False) -> RunStore:
        cls.finished_keys(folder, manifest, overwrite=overwrite)
        folder.mkdir(parents=True, exist_ok=True)
        manifest_path, records_path = folder / MANIFEST_FILE, folder / RECORDS_FILE
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")  # unique even for two in one second
        if manifest_path.exists():
            old = _read_manifest(manifest_path)
            if (old.get("config_digest"), old.get("shard")) != (manifest["config_digest"], manifest.get("shard")):
                for path in (manifest_path, records_path):
                    if path.exists():
                        path.rename(path.with_name(f"{path.name}.replaced-{stamp}"))
            else:
                manifest = {**manifest, "run_id": old.get("run_id", manifest["run_id"])}
        read = read_records(records_path)
        if read.bad_lines or read.partial_tail:
            kept = records_path.with_name(f"{RECORDS_FILE}.damaged-{stamp}")
            shutil.copyfile(records_path, kept)
            _write_atomically(
                records_path, "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in read.records)
            )
            log.warning(
                "damaged_records_set_aside",
                bad_lines=[n for n, _ in read.bad_lines],
                partial_tail=read.partial_tail,
                original=str(kept),
            )
        _write_atomically(manifest_path, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        # Keys only: a long run must not hold every record it wrote in memory.
        return cls(folder, manifest, finished_keys(read.records))

    def append(self, record: ProblemRecord) -> None:
        append_record(self.records_path, record)
        if not record.failed:
            self.done.add(record.key)


def finished_keys(records: list[ProblemRecord]) -> set[tuple[str, int]]:
    """The keys whose latest record is finished (not failed)."""
    latest = {r.key: r for r in records}
    return {key for key, r in latest.items() if not r.failed}


def _shard_name(manifest: dict[str, Any]) -> str:
    shard = manifest.get("shard")
    return f"shard {shard['index']}/{shard['count']}" if shard else "the whole run (no --shard)"


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UsageError(f"{path} is not valid JSON ({exc}); move it away or use --overwrite") from exc


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
