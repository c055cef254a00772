"""Uploads through the EHR API: files validated, stored in Orthanc in process, recorded and matched per study.

Every upload route goes through ``Batch``: each file is checked (pydicom, header only) and stored at once;
the studies are read back from Orthanc and recorded (one audit row per study, matching) once, at the end,
not per file. While a batch runs, its studies are held from the ingest worker (``Services.holds``), so a
STABLE_STUDY during a long upload does not record half a study; a batch that cannot record (database
down) hands its studies to the worker, which records them when the database is back.

ZIP archives are read member by member from the file the API listener spooled to disk; large ones run
as jobs on a worker thread, with their state in PostgreSQL. The offline sync protocol (declare, send,
acknowledge) is in ``offline``.
"""

from __future__ import annotations

from .archives import Archive as Archive
from .archives import is_large as is_large
from .archives import open_archive as open_archive
from .archives import read_members as read_members
from .archives import store_archive as store_archive
from .archives import zip_member as zip_member
from .batch import MB as MB
from .batch import Batch as Batch
from .batch import FileResult as FileResult
from .batch import StudyOutcome as StudyOutcome
from .batch import UploadRejected as UploadRejected
from .batch import check_dicom as check_dicom
from .batch import check_files as check_files
from .batch import match_json as match_json
from .captures import CAPTURE_FIELDS as CAPTURE_FIELDS
from .captures import Capture as Capture
from .captures import check_capture as check_capture
from .captures import store_capture as store_capture
from .jobs import JobRequest as JobRequest
from .jobs import JobRunner as JobRunner
from .jobs import UploadedSource as UploadedSource
from .jobs import keep_copy as keep_copy
from .offline_sync import offline_ack as offline_ack
from .offline_sync import offline_binary as offline_binary
from .offline_sync import offline_status as offline_status
from .offline_sync import sha256_and_size as sha256_and_size
