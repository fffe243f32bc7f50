"""Run folders as evaluators see them: the manifest, the readable records, what was skipped."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from engine.errors import UsageError
from engine.results import MANIFEST_FILE, RECORDS_FILE, ProblemRecord, read_records

log = structlog.get_logger(__name__)


@dataclass
class Run:
    """One run folder, read.

    `records` holds one record per (problem, repeat): when a key appears twice (a resumed
    run that redid a problem) the last line wins and `duplicates` counts the others.
    `bad_lines` are the (line number, error) of lines that could not be read.
    """

    path: Path
    name: str
    manifest: dict[str, Any]
    records: list[ProblemRecord]
    bad_lines: list[tuple[int, str]]
    partial_tail: bool
    duplicates: int

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id") or (self.records[0].run_id if self.records else self.name))

    @property
    def mode(self) -> str:
        return str(self.manifest.get("mode") or _common(r.mode for r in self.records))

    @property
    def dataset(self) -> str:
        return str(self.manifest.get("dataset") or _common(r.dataset for r in self.records))

    @property
    def models(self) -> dict[str, str]:
        return dict(self.manifest.get("models") or {})

    def multiple_choice(self, record: ProblemRecord) -> bool:
        """Whether the record's answers are option letters: as the record says (older records:
        GPQA-like names, or the config says so)."""
        config = self.manifest.get("config") or {}
        return record.is_multiple_choice or bool(config.get("multiple_choice"))


def _common(values: Any) -> str:
    distinct = sorted(set(values))
    return distinct[0] if len(distinct) == 1 else ",".join(distinct)


def load_run(path: Path, *, dataset: str | None = None) -> Run:
    """Read a run folder; with `dataset`, keep the records of that data set (exact name or prefix).

    Raises UsageError for a missing or empty folder, a missing records file, an unreadable
    manifest, a records file with no readable line, or a data set filter that keeps nothing.
    """
    if not path.is_dir():
        raise UsageError(f"{path}: no such run folder; give a folder written by a spectra run")
    records_path = path / RECORDS_FILE
    if not any(path.iterdir()):
        raise UsageError(f"{path}: the run folder is empty; has the run written any record yet?")
    if not records_path.is_file():
        raise UsageError(f"{path}: no {RECORDS_FILE} in this folder; is it a run folder?")
    manifest = _read_manifest(path)
    result = read_records(records_path)
    for number, error in result.bad_lines:
        log.warning("record_line_skipped", run=str(path), line=number, error=error)
    if result.partial_tail:
        log.warning("record_file_cut_short", run=str(path), hint="the run stopped mid-write; last line skipped")
    if not result.records:
        raise UsageError(
            f"{records_path}: no readable record ({len(result.bad_lines)} malformed lines); nothing to evaluate"
        )
    records, duplicates = _latest_per_key(result.records)
    if duplicates:
        log.warning("duplicate_records", run=str(path), count=duplicates, kept="last line of each key")
    if dataset is not None:
        records = _select_dataset(records, dataset, path)
    return Run(path, path.name, manifest, records, result.bad_lines, result.partial_tail, duplicates)


def _read_manifest(path: Path) -> dict[str, Any]:
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        log.warning("manifest_missing", run=str(path), hint="mode, data set and models taken from the records")
        return {}
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UsageError(f"{manifest_path}: not valid JSON ({exc}); fix or remove it") from exc
    if not isinstance(manifest, dict):
        raise UsageError(f"{manifest_path}: expected a JSON object, found {type(manifest).__name__}")
    return manifest


def _latest_per_key(records: list[ProblemRecord]) -> tuple[list[ProblemRecord], int]:
    latest: dict[tuple[str, int], ProblemRecord] = {}
    for record in records:
        latest[record.key] = record
    return list(latest.values()), len(records) - len(latest)


def _select_dataset(records: list[ProblemRecord], dataset: str, path: Path) -> list[ProblemRecord]:
    wanted = dataset.lower()
    selected = [r for r in records if r.dataset.lower().startswith(wanted)]
    if not selected:
        present = ", ".join(sorted({r.dataset for r in records}))
        raise UsageError(f"{path}: no record of data set {dataset!r}; this run holds: {present}")
    return selected
