"""Run folders as evaluators see them: the manifest, the readable records, what was skipped.

The folders of a run split with `--shard I/N` are read as one run: a folder holding shard
folders, or shard folders named together (`results/spec_aime-shard-*`), grouped by their name
without the `-shard-I-of-N` suffix (folders named otherwise: by config digest, per parent folder).
The shards of one run must share a config digest and a shard count, each index once.

`version_difference` says when runs (or the shards of one) were written by different spectra
versions, whose defaults and records may differ (CHANGES.md): the evaluators warn then.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from engine.errors import UsageError
from engine.records import ProblemRecord
from engine.run.store import MANIFEST_FILE, RECORDS_FILE, read_records

log = structlog.get_logger(__name__)

# The default folder name of a shard (engine.run.execute.Shard.suffix).
SHARD_FOLDER = re.compile(r"(?P<stem>.+)-shard-\d+-of-\d+")


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
    def method(self) -> str:
        """The run's `policy+strategy` as its manifest names them (older manifests: their `mode`, the
        policy), or the records' runner."""
        policy, strategy = self.manifest.get("policy"), self.manifest.get("strategy")
        if policy and strategy:
            return f"{policy}+{strategy}"
        return str(self.manifest.get("mode") or policy or _common(r.runner for r in self.records))

    @property
    def dataset(self) -> str:
        return str(self.manifest.get("dataset") or _common(r.dataset for r in self.records))

    @property
    def models(self) -> dict[str, str]:
        return dict(self.manifest.get("models") or {})

    @property
    def spectra_version(self) -> str | None:
        """The spectra version that wrote the run, from its manifest (None: not recorded)."""
        return spectra_version(self.manifest)

    def multiple_choice(self, record: ProblemRecord) -> bool:
        """Whether the record's answers are option letters: as the record says (older records:
        GPQA-like names, or the config says so)."""
        config = self.manifest.get("config") or {}
        return record.is_multiple_choice or bool(config.get("multiple_choice"))


def spectra_version(manifest: dict[str, Any]) -> str | None:
    versions = manifest.get("versions")
    version = versions.get("spectra") if isinstance(versions, dict) else None
    return str(version) if version is not None else None


def version_difference(versions: dict[str, str | None]) -> str | None:
    """For runs (name -> the spectra version that wrote it; None: its manifest does not say) written
    by more than one version, or with one that does not say among them: "a 0.2.0, b 0.1.0, c none".
    None when they are all of one known version, or fewer than two."""
    if len(versions) < 2 or (len(set(versions.values())) == 1 and None not in versions.values()):
        return None
    return ", ".join(f"{name} {version or 'none'}" for name, version in versions.items())


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


def load_runs(paths: list[Path], *, dataset: str | None = None) -> list[Run]:
    """The runs that `paths` name, in the order first named; the shards of one run become one Run."""
    groups: dict[tuple[str, ...], tuple[Path, list[Path]]] = {}
    for path in paths:
        shards = _shard_folders(path)
        if shards:
            groups[("parent", str(path))] = (path, shards)
            continue
        shard_of = _shard_group(path)
        if shard_of is None:
            groups[("run", str(path))] = (path, [])
        else:
            groups.setdefault(shard_of[0], (shard_of[1], []))[1].append(path)
    return [
        load_run(path, dataset=dataset) if not shards else _merge_shards(path, shards, dataset)
        for path, shards in groups.values()
    ]


def _shard_folders(path: Path) -> list[Path]:
    """The shard folders a folder holds in place of records of its own (none for a run folder)."""
    if not path.is_dir() or (path / RECORDS_FILE).exists() or (path / MANIFEST_FILE).exists():
        return []
    return sorted(child for child in path.iterdir() if child.is_dir() and _shard_manifest(child))


def _shard_group(path: Path) -> tuple[tuple[str, ...], Path] | None:
    """(group key, the merged run's path) of a shard folder; None for a folder that is no shard."""
    manifest = _shard_manifest(path)
    if manifest is None:
        return None
    named = SHARD_FOLDER.fullmatch(path.name)
    if named:
        stem = path.parent / named["stem"]
        return ("stem", str(stem)), stem
    return ("digest", str(path.parent), str(manifest.get("config_digest"))), path.parent


def _shard_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of a shard folder; None for any other folder (without a word: it may be no run)."""
    if not (folder / MANIFEST_FILE).is_file():
        return None
    manifest = _read_manifest(folder)
    return manifest if manifest.get("shard") else None


def _merge_shards(path: Path, folders: list[Path], dataset: str | None) -> Run:
    shards = [_read_shard(folder) for folder in folders]
    _check_one_split(shards)
    count = shards[0].manifest["shard"]["count"]
    missing = sorted(set(range(1, count + 1)) - {s.manifest["shard"]["index"] for s in shards})
    if missing:
        log.warning("shards_missing", run=str(path), missing=missing, count=count, hint="their records are left out")
    records, duplicates = _latest_per_key([r for s in shards for r in s.records])
    if not records:
        raise UsageError(f"{path}: no readable record in its shard folders; nothing to evaluate")
    if dataset is not None:
        records = _select_dataset(records, dataset, path)
    differing = version_difference({str(s.path): s.spectra_version for s in shards})
    if differing:
        log.warning("shard_versions_differ", run=str(path), versions=differing, hint="see CHANGES.md")
    listed = [{**s.manifest["shard"], "path": str(s.path), "run_id": s.manifest.get("run_id")} for s in shards]
    manifest = {**shards[0].manifest, "shard": None, "shards": listed}
    bad_lines = [line for s in shards for line in s.bad_lines]
    partial = any(s.partial_tail for s in shards)
    return Run(path, path.name, manifest, records, bad_lines, partial, duplicates + sum(s.duplicates for s in shards))


def _read_shard(folder: Path) -> Run:
    """A shard folder; one that has no record yet (its runner is starting, or its slice is empty) is empty."""
    records_path = folder / RECORDS_FILE
    if records_path.is_file() and records_path.stat().st_size > 0:
        return load_run(folder)
    log.warning("shard_without_records", run=str(folder))
    return Run(folder, folder.name, _read_manifest(folder), [], [], False, 0)


def _check_one_split(shards: list[Run]) -> None:
    """UsageError (one line) unless the shards are of one config and one split, each index once."""
    first, seen = shards[0], {}
    for one in shards:
        digests = (first.manifest.get("config_digest"), one.manifest.get("config_digest"))
        if digests[0] != digests[1]:
            raise UsageError(
                f"{first.path} and {one.path} hold runs of different configs (digest {digests[0]}, {digests[1]}); "
                "give the shard folders of one run, or name each run's folders differently"
            )
        shard = one.manifest["shard"]
        if shard["count"] != first.manifest["shard"]["count"]:
            raise UsageError(
                f"{first.path} is one of {first.manifest['shard']['count']} shards and {one.path} one of "
                f"{shard['count']}; give the shard folders of one split"
            )
        if shard["index"] in seen:
            raise UsageError(f"{seen[shard['index']]} and {one.path} are both shard {shard['index']}/{shard['count']}")
        seen[shard["index"]] = one.path


def _read_manifest(path: Path) -> dict[str, Any]:
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        log.warning("manifest_missing", run=str(path), hint="method, data set and models taken from the records")
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
