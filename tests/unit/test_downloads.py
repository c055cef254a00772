"""``api.downloads``: download slots travel with their answer; Orthanc's port refuses large studies."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from ehr_imaging.api.downloads import DownloadSlots, refuse_if_too_large_here
from ehr_imaging.api.router import Request, headers_of, status_of
from ehr_imaging.core import errors

MB = 1024 * 1024


def chunks(fail: bool = False) -> Iterator[bytes]:
    yield b"a"
    if fail:
        raise RuntimeError("cut")
    yield b"b"


def busy(slots: DownloadSlots) -> bool:
    try:
        slots.take().release()
    except errors.DomainError as exc:
        assert status_of(exc) == 503 and headers_of(exc)["Retry-After"]
        return True
    return False


def test_a_slot_is_held_until_the_stream_ends() -> None:
    slots = DownloadSlots(1)
    stream = slots.take().hold(chunks())
    assert busy(slots)
    assert b"".join(stream) == b"ab"
    assert not busy(slots)


def test_a_failing_stream_gives_its_slot_back() -> None:
    slots = DownloadSlots(1)
    stream = slots.take().hold(chunks(fail=True))
    with pytest.raises(RuntimeError):
        b"".join(stream)
    assert not busy(slots)


def test_a_stream_closed_unread_gives_its_slot_back_once() -> None:
    slots = DownloadSlots(2)
    stream = slots.take().hold(chunks())
    stream.close()
    stream.close()
    first, second = slots.take(), slots.take()  # both free again, and no third: released exactly once
    assert busy(slots)
    first.release()
    second.release()


def test_a_dropped_answer_gives_its_slot_back() -> None:
    slots = DownloadSlots(1)
    stream = slots.take().hold(chunks())
    del stream
    gc.collect()
    assert not busy(slots)


def test_orthancs_port_refuses_a_study_over_the_limit_and_names_the_api_port() -> None:
    on_orthanc = Request("GET", "/api/v1/dicom/download/1.2.3")
    refuse_if_too_large_here(on_orthanc, 8 * MB, 8, 8044)  # at the limit: served
    with pytest.raises(errors.DomainError) as refused:
        refuse_if_too_large_here(on_orthanc, 8 * MB + 1, 8, 8044)
    assert status_of(refused.value) == 413
    assert "API port 8044" in refused.value.detail and "/api/v1/dicom/download/1.2.3" in refused.value.detail
    with pytest.raises(errors.DomainError) as no_port:
        refuse_if_too_large_here(on_orthanc, 9 * MB, 8, 0)
    assert "ApiPort" in no_port.value.detail


def test_the_api_port_streams_any_size() -> None:
    refuse_if_too_large_here(Request("GET", "/x", can_stream=True), 10**12, 8, 8044)
