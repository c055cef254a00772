"""A deleted study's way back: its files kept bit for bit in a private folder, restored through the upload path,
purged past their retention.

Before Orthanc deletes a study, each instance's file (``/instances/{id}/file``, the stored bytes) is written
to ``DeletedStudyDir/<deletion id>/`` with a manifest of MD5s (``keep_study``). A restore posts each file
back to Orthanc through ``uploading.Batch``, the path every upload takes: stored, recorded once, matched —
with the deleted link's order named, so the study is linked to it again when that order is still open —
and audited as an upload from ``restore`` by the admin who restored it. The purge (``purge``: the admin
route, and ``PurgeWorker`` on every node, hourly) removes the files of deletions past their retention and
marks them purged; it also expires deletion requests past their time.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..core import errors
from ..private_dirs import UnsafeDirectory, private_directory
from ..services import Services
from ..store import deletions
from . import uploading

MANIFEST = "manifest.json"
RESTORE_SOURCE = "restore"  # the upload_source of a restored study's upload row
PURGE_INTERVAL_SECONDS = 3600


def kept_files_dir(services: Services) -> Path:
    """``DeletedStudyDir``, private (``private_dirs``); Unavailable when it is not set or not safe."""
    configured = services.settings.DeletedStudyDir
    try:
        if not configured:
            raise UnsafeDirectory("EhrImaging.DeletedStudyDir is not set (a private folder for deleted studies)")
        return private_directory(Path(configured))
    except UnsafeDirectory as exc:
        services.log_error(f"ehr-imaging: deleted studies cannot be kept: {exc}")
        raise errors.Unavailable(f"deleted studies cannot be kept (DeletedStudyRetentionDays is"
                                 f" {services.settings.DeletedStudyRetentionDays:g}): {exc}") from None


def keep_study(services: Services, orthanc_study_id: str, folder: Path) -> int:
    """Every instance file of the study, as Orthanc stored it, into ``folder`` (written whole, then renamed
    into place, so a folder that exists is complete); returns how many files it holds."""
    pacs = services.pacs
    partial = folder.with_name(folder.name + ".partial")
    try:
        instances = pacs.get_json(f"/studies/{orthanc_study_id}/instances")
        partial.mkdir(mode=0o700)
        manifest = []
        for number, instance in enumerate(instances):
            data = pacs.get_bytes(f"/instances/{instance['ID']}/file")
            name = f"{number:06d}.dcm"
            _write(partial / name, data)
            manifest.append({"file": name, "orthanc_instance_id": instance["ID"],
                             "sop_instance_uid": instance.get("MainDicomTags", {}).get("SOPInstanceUID"),
                             "size": len(data), "md5": hashlib.md5(data).hexdigest()})
        _write(partial / MANIFEST, json.dumps({"orthanc_study_id": orthanc_study_id, "files": manifest}).encode())
        os.rename(partial, folder)
    except errors.NotFound:
        shutil.rmtree(partial, ignore_errors=True)
        raise errors.Conflict("the study changed while its files were being kept: nothing was deleted") from None
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        services.log_error(f"ehr-imaging: the files of study {orthanc_study_id} could not be kept: {exc}")
        raise errors.Unavailable(f"the study's files could not be kept ({exc.strerror}): nothing was deleted") from None
    return len(manifest)


def _write(path: Path, data: bytes) -> None:
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def discard(folder: Path) -> None:
    """Kept files that are not needed (the deletion did not happen, or was restored or purged)."""
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(folder.with_name(folder.name + ".partial"), ignore_errors=True)


def kept_files(folder: Path) -> Iterator[tuple[str, bytes]]:
    """The kept files, once every one has been checked against the MD5 it had when kept (Conflict if one
    differs or is missing: then nothing is handed out, so a restore never stores part of a study)."""
    try:
        entries = json.loads((folder / MANIFEST).read_text())["files"]
        for entry in entries:
            if _md5(folder / entry["file"]) != entry["md5"]:
                raise errors.Conflict(f"kept file {entry['file']} no longer has the MD5 it was kept with")
        for entry in entries:
            yield entry["file"], (folder / entry["file"]).read_bytes()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise errors.Conflict(f"the kept files cannot be read: {exc}") from None


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as source:
        for chunk in iter(lambda: source.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Restored:
    deletion: deletions.DeletionRecord
    orthanc_study_id: str | None
    restored_instances: int
    order_id: str | None  # the order the study is linked to again (None: not linked; ``match_reason`` says why)
    match_reason: str | None


def restore(services: Services, deletion_id: uuid.UUID, *, actor: str) -> Restored:
    """Bring a deleted study back bit for bit: its kept files into Orthanc, recorded and re-linked, audited."""
    folder = kept_files_dir(services) / str(deletion_id)
    with deletions.restoring(services.engine, deletion_id) as locked:
        record = locked.record
        with uploading.Batch(services, uploaded_by=actor, source=RESTORE_SOURCE, order_id=record.order_id,
                             patient_id=record.patient_id) as batch:
            for name, data in kept_files(folder):
                batch.add(name, data)
            outcomes = batch.finish()
        failed = [r for r in batch.results if r.status != "stored"]
        if failed:  # nothing marked restored: the files stay kept, a restore can be tried again
            raise errors.Conflict(f"{len(failed)} of {len(batch.results)} files could not be restored"
                                  f" ({failed[0].file_name}: {failed[0].error})")
        outcome = outcomes.get(record.study_instance_uid) or next(iter(outcomes.values()), None)
        done = locked.done(actor)
    discard(folder)
    return Restored(done, outcome.orthanc_study_id if outcome else None, batch.successful,
                    outcome.order_id if outcome else None, outcome.match_reason if outcome else None)


def purge(services: Services) -> list[uuid.UUID]:
    """Remove the kept files of every deletion past its retention (and expire old deletion requests)."""
    engine = services.engine
    deletions.expire_requests(engine)
    due = deletions.purgeable(engine)
    if not due:
        return []
    folder = kept_files_dir(services)
    purged = []
    for deletion_id in due:
        with deletions.purging(engine, deletion_id) as still_due:
            if still_due:
                discard(folder / str(deletion_id))
                purged.append(deletion_id)
    return purged


class PurgeWorker:
    """``purge`` at start and then hourly on each node (purging is idempotent and row-locked)."""

    def __init__(self, services: Services, log_warning: Callable[[str], None],
                 log_error: Callable[[str], None]) -> None:
        self._services, self._log_warning, self._log_error = services, log_warning, log_error
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name="ehr-deletion-purge", daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                purged = purge(self._services)
                if purged:
                    self._log_warning(f"ehr-imaging: purged the kept files of {len(purged)} deleted studies"
                                      " past their retention")
            except Exception as exc:  # noqa: BLE001 - tried again at the next interval
                self._log_error(f"ehr-imaging: purging deleted studies failed ({type(exc).__name__}: {exc})")
            if self._stop.wait(PURGE_INTERVAL_SECONDS):
                return
