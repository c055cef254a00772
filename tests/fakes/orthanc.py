"""An in-memory Orthanc behind the plugin's ``services.Pacs`` protocol (the real one is ``pacs.OrthancPacs``).

It holds DICOM files as Orthanc does, as patients > studies > series > instances with Orthanc's own IDs
(SHA-1 of the UIDs), and answers the REST-in-process calls the use cases make: storing a file
(``POST /instances``), the study, its statistics, series and instances, a series' instances, an instance's
study and metadata (who sent it, its SOP class), shared tags, ``/tools/lookup``, ``/tools/bulk-content``
(studies, series, instances), deletes, the change log (``/changes``: NewStudy, NewInstance, StableStudy; as in
Orthanc 1.10, a deleted study's changes leave the log with it and no deletion is ever logged) and the paged
study list (``/studies?expand&since=&limit=``).
A call it does not know fails loudly (``UnknownRoute``) rather than answering something a real Orthanc would
not: a use case that starts asking for more shows up here first. ``calls`` records every call, for tests
that care what was asked.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from ehr_imaging.core.errors import NotFound

STUDY_TAGS = ("StudyInstanceUID", "AccessionNumber", "StudyDate", "StudyTime", "StudyDescription", "StudyID",
              "ReferringPhysicianName")
PATIENT_TAGS = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex")
SERIES_TAGS = ("SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription", "BodyPartExamined")
INSTANCE_TAGS = ("SOPInstanceUID", "InstanceNumber", "NumberOfFrames")


class UnknownRoute(AssertionError):
    """A call the fake does not implement: the use case asks Orthanc for something new."""


class Refused(Exception):
    """What Orthanc raises for a file it will not store (orthanc.OrthancException in the real adapter)."""


def orthanc_id(*keys: str) -> str:
    """Orthanc's ID of a resource: SHA-1 of its identifiers joined by '|', in five dashed groups."""
    digest = hashlib.sha1("|".join(keys).encode(), usedforsecurity=False).hexdigest()
    return "-".join(digest[i:i + 8] for i in range(0, 40, 8))


@dataclass
class Instance:
    id: str
    series_id: str
    study_id: str
    data: bytes
    dataset: Dataset
    metadata: dict[str, str]


@dataclass
class Study:
    id: str
    patient_id: str
    tags: dict[str, str]
    patient_tags: dict[str, str]
    series: dict[str, dict[str, str]] = field(default_factory=dict)  # series ID -> its main tags
    stable: bool = False


def _tags(ds: Dataset, names: tuple[str, ...]) -> dict[str, str]:
    return {name: str(ds.get(name)) for name in names if ds.get(name) not in (None, "")}


class FakeOrthanc:
    """The ``services.Pacs`` of the tests: Orthanc's resources in dictionaries."""

    def __init__(self) -> None:
        self.studies: dict[str, Study] = {}
        self.instances: dict[str, Instance] = {}
        self.calls: list[tuple[str, str]] = []
        self.changes: list[dict[str, Any]] = []  # Orthanc's change log (its Seq numbers are never reused)
        self._last_seq = 0

    # --- what a test does to it ---------------------------------------------------------------------

    def receive(self, data: bytes, *, origin: str = "DicomProtocol", remote_aet: str | None = "MODALITY",
                username: str | None = None) -> dict[str, Any]:
        """Store a file as Orthanc does when a modality (C-STORE, the default), a REST client or a plugin
        sends it; the answer of ``POST /instances``."""
        try:
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            uids = [str(ds.PatientID if "PatientID" in ds else ""), str(ds.StudyInstanceUID),
                    str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)]
        except Exception as exc:  # noqa: BLE001 - whatever pydicom cannot read, Orthanc refuses too
            raise Refused(f"Orthanc cannot read the file: {exc}") from None
        study_id, series_id, instance_id = orthanc_id(*uids[:2]), orthanc_id(*uids[:3]), orthanc_id(*uids)
        if study_id not in self.studies:
            self.log_change("NewStudy", "Study", study_id)
        study = self.studies.setdefault(study_id, Study(study_id, uids[0], _tags(ds, STUDY_TAGS),
                                                        _tags(ds, PATIENT_TAGS)))
        study.series.setdefault(series_id, _tags(ds, SERIES_TAGS))
        study.stable = False
        if instance_id in self.instances:
            status = "AlreadyStored"
        else:
            metadata = {"Origin": origin, "TransferSyntax": str(ds.file_meta.TransferSyntaxUID)}
            if origin == "DicomProtocol" and remote_aet:
                metadata["RemoteAET"] = remote_aet
            if username:
                metadata["HttpUsername"] = username
            metadata["RemoteIP"] = "127.0.0.1"
            if "SOPClassUID" in ds:
                metadata["SopClassUid"] = str(ds.SOPClassUID)  # Orthanc records it for every instance
            self.instances[instance_id] = Instance(instance_id, series_id, study_id, data, ds, metadata)
            self.log_change("NewInstance", "Instance", instance_id, study_id)
            status = "Success"
        return {"ID": instance_id, "ParentSeries": series_id, "ParentStudy": study_id,
                "ParentPatient": orthanc_id(uids[0]), "Path": f"/instances/{instance_id}", "Status": status}

    def make_stable(self, study_id: str) -> None:
        self.studies[study_id].stable = True
        self.log_change("StableStudy", "Study", study_id)

    def log_change(self, change_type: str, resource_type: str, resource_id: str, study_id: str | None = None) -> None:
        self._last_seq += 1
        self.changes.append({"Seq": self._last_seq, "ChangeType": change_type, "ResourceType": resource_type,
                             "ID": resource_id, "Study": study_id or resource_id})

    def _forget_changes(self, study_id: str) -> None:
        self.changes = [c for c in self.changes if c["Study"] != study_id]  # ON DELETE CASCADE, as Orthanc's index

    def _changes(self, query: str) -> dict[str, Any]:
        args = dict(part.partition("=")[::2] for part in query.split("&") if part)
        public = [{k: v for k, v in c.items() if k != "Study"} for c in self.changes]
        if "last" in args:
            return {"Changes": public[-1:], "Done": True, "Last": self._last_seq}
        since, limit = int(args.get("since", 0)), int(args.get("limit", 100))
        after = [c for c in public if c["Seq"] > since]
        batch = after[:limit]
        return {"Changes": batch, "Done": len(after) <= limit, "Last": batch[-1]["Seq"] if batch else since}

    def instances_of(self, study_id: str) -> list[Instance]:
        return [i for i in self.instances.values() if i.study_id == study_id]

    # --- services.Pacs ------------------------------------------------------------------------------

    def get_json(self, uri: str) -> Any:
        self.calls.append(("GET", uri))
        path, _, query = uri.partition("?")
        parts = path.strip("/").split("/")
        if path == "/changes":
            return self._changes(query)
        if path == "/studies" and query.startswith("expand"):
            args = dict(part.partition("=")[::2] for part in query.split("&") if part)
            since, limit = int(args.get("since", 0)), int(args.get("limit", 10**9))
            return [self._study_json(self.studies[i], [], "") for i in sorted(self.studies)[since:since + limit]]
        if parts[0] == "studies" and len(parts) >= 2:
            return self._study_json(self._study(parts[1], uri), parts[2:], query)
        if parts[0] == "instances" and len(parts) == 3 and parts[2] == "metadata":
            metadata = self._instance(parts[1], uri).metadata
            return dict(metadata) if query == "expand" else sorted(metadata)
        if parts[0] == "instances" and len(parts) == 2:
            return self._instance_json(self._instance(parts[1], uri))
        if parts[0] == "instances" and len(parts) == 3 and parts[2] == "study":
            return self._study_json(self._study(self._instance(parts[1], uri).study_id, uri), [], "")
        if parts[0] == "series" and len(parts) == 3 and parts[2] == "instances":
            found = sorted((i for i in self.instances.values() if i.series_id == parts[1]), key=lambda i: i.id)
            if not found:
                raise NotFound(f"not in Orthanc: {uri}")
            return [self._instance_json(i) for i in found]
        if path == "/system":
            return self.system()
        if path == "/statistics":
            return self.statistics()
        raise UnknownRoute(f"the fake Orthanc does not answer GET {uri}")

    def get_bytes(self, uri: str, *, after_plugins: bool = False) -> bytes:
        self.calls.append(("GET", uri))
        parts = uri.partition("?")[0].strip("/").split("/")
        if parts[0] == "instances" and len(parts) == 3 and parts[2] == "file":
            return self._instance(parts[1], uri).data
        if parts[0] == "instances" and len(parts) == 4 and parts[2] == "metadata":  # one metadata value, as text
            value = self._instance(parts[1], uri).metadata.get(parts[3])
            if value is None:
                raise NotFound(f"not in Orthanc: {uri}")
            return value.encode()
        raise UnknownRoute(f"the fake Orthanc does not answer GET {uri} (bytes)")

    def lookup(self, uid: str, level: str) -> str | None:
        return next(iter(self._lookup(uid, level)), None)

    def find_study_ids(self, study_uid: str) -> list[str]:
        return self._lookup(study_uid, "Study")

    def post_json(self, uri: str, body: Any) -> Any:
        return json.loads(self.post_bytes(uri, json.dumps(body)))

    def post_bytes(self, uri: str, body: bytes | memoryview | str) -> bytes:
        self.calls.append(("POST", uri))
        body = bytes(body) if isinstance(body, memoryview) else body
        if uri == "/tools/lookup":
            uid = body.decode() if isinstance(body, bytes) else body
            found = [{"ID": i, "Type": level, "Path": f"/{level.lower()}s/{i}"}
                     for level in ("Study", "Series", "Instance") for i in self._lookup(uid.strip(), level)]
            return json.dumps(found).encode()
        if uri == "/tools/bulk-content":
            return json.dumps(self._bulk(json.loads(body))).encode()
        if uri == "/instances":
            return json.dumps(self.receive(body.encode() if isinstance(body, str) else body, origin="Plugins",
                                           remote_aet=None)).encode()
        raise UnknownRoute(f"the fake Orthanc does not answer POST {uri}")

    def post_json_bytes(self, uri: str, body: bytes | memoryview) -> Any:
        return json.loads(self.post_bytes(uri, body))

    def delete(self, uri: str) -> None:
        self.calls.append(("DELETE", uri))
        parts = uri.strip("/").split("/")
        if parts[0] == "instances" and len(parts) == 2:
            instance = self._instance(parts[1], uri)
            del self.instances[instance.id]
            if not self.instances_of(instance.study_id):
                del self.studies[instance.study_id]  # Orthanc removes an emptied study
                self._forget_changes(instance.study_id)
            return
        if parts[0] == "studies" and len(parts) == 2:
            study = self._study(parts[1], uri)
            for instance in self.instances_of(study.id):
                del self.instances[instance.id]
            del self.studies[study.id]
            self._forget_changes(study.id)
            return
        raise UnknownRoute(f"the fake Orthanc does not answer DELETE {uri}")

    def system(self) -> dict[str, Any]:
        return {"Name": "fake", "Version": "1.10.1", "ApiVersion": 18, "DicomAet": "EHRIMAGING"}

    def statistics(self) -> dict[str, Any]:
        return {"CountStudies": len(self.studies), "CountInstances": len(self.instances),
                "TotalDiskSize": str(sum(len(i.data) for i in self.instances.values()))}

    # --- answers ------------------------------------------------------------------------------------

    def _study(self, study_id: str, uri: str) -> Study:
        if study_id not in self.studies:
            raise NotFound(f"not in Orthanc: {uri}")  # as pacs.OrthancPacs turns Orthanc's unknown resource
        return self.studies[study_id]

    def _instance(self, instance_id: str, uri: str) -> Instance:
        if instance_id not in self.instances:
            raise NotFound(f"not in Orthanc: {uri}")
        return self.instances[instance_id]

    def _study_json(self, study: Study, rest: list[str], query: str) -> Any:
        instances = self.instances_of(study.id)
        if not rest:
            return {"ID": study.id, "Type": "Study", "IsStable": study.stable, "MainDicomTags": dict(study.tags),
                    "PatientMainDicomTags": dict(study.patient_tags), "ParentPatient": orthanc_id(study.patient_id),
                    "Series": sorted(study.series)}
        if rest == ["statistics"]:
            return {"CountSeries": len(study.series), "CountInstances": len(instances),
                    "DiskSize": str(sum(len(i.data) for i in instances)),
                    "UncompressedSize": str(sum(len(i.data) for i in instances))}
        if rest == ["series"]:
            return [{"ID": series_id, "Type": "Series", "ParentStudy": study.id, "MainDicomTags": dict(tags),
                     "Instances": sorted(i.id for i in instances if i.series_id == series_id)}
                    for series_id, tags in sorted(study.series.items())]
        if rest == ["instances"]:
            return [self._instance_json(i) for i in sorted(instances, key=lambda i: i.id)]
        if rest == ["shared-tags"] and query == "simplify":
            return self._shared_tags(instances)
        raise UnknownRoute(f"the fake Orthanc does not answer GET /studies/{study.id}/{'/'.join(rest)}?{query}")

    def _bulk(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        """``/tools/bulk-content`` at one level: the resources it holds, in the order asked; the others left out
        (as Orthanc 1.10 does); ``Metadata``: each one's metadata too (instances only, here)."""
        level, found = request["Level"], []
        for resource in request["Resources"]:
            if level == "Study" and resource in self.studies:
                found.append(self._study_json(self.studies[resource], [], ""))
            elif level == "Series":
                found += [s for study in self.studies.values() if resource in study.series
                          for s in self._study_json(study, ["series"], "") if s["ID"] == resource]
            elif level == "Instance" and resource in self.instances:
                instance = self.instances[resource]
                found.append({**self._instance_json(instance),
                              **({"Metadata": dict(instance.metadata)} if request.get("Metadata") else {})})
            elif level not in ("Study", "Series", "Instance"):
                raise UnknownRoute(f"the fake Orthanc does not answer bulk content at level {level}")
        return found

    @staticmethod
    def _instance_json(instance: Instance) -> dict[str, Any]:
        return {"ID": instance.id, "Type": "Instance", "ParentSeries": instance.series_id,
                "MainDicomTags": _tags(instance.dataset, INSTANCE_TAGS), "FileSize": len(instance.data)}

    @staticmethod
    def _shared_tags(instances: list[Instance]) -> dict[str, str]:
        """The top-level text values every instance of the study has in common (``?simplify``: keywords)."""
        def values(ds: Dataset) -> dict[str, str]:
            return {element.keyword: str(element.value) for element in ds
                    if element.keyword and element.VR not in ("SQ", "OB", "OW", "UN")}

        if not instances:
            return {}
        shared = values(instances[0].dataset)
        for instance in instances[1:]:
            theirs = values(instance.dataset)
            shared = {k: v for k, v in shared.items() if theirs.get(k) == v}
        return shared

    def _lookup(self, uid: str, level: str) -> list[str]:
        if level == "Study":
            return sorted(s.id for s in self.studies.values() if s.tags.get("StudyInstanceUID") == uid)
        if level == "Series":
            return sorted({s_id for s in self.studies.values() for s_id, tags in s.series.items()
                           if tags.get("SeriesInstanceUID") == uid})
        if level == "Instance":
            return sorted(i.id for i in self.instances.values() if str(i.dataset.SOPInstanceUID) == uid)
        return []
