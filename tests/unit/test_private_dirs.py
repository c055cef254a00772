"""``private_dirs`` and the upload-job folder: created 0700, refused when it is a link, not ours, or open."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from ehr_imaging.api.router import status_of
from ehr_imaging.app.uploading import JobRunner, UploadRejected
from ehr_imaging.config import Settings
from ehr_imaging.private_dirs import UnsafeDirectory, check_private, private_directory


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_missing_folder_is_created_private_with_its_parents(tmp_path: Path) -> None:
    old = os.umask(0o022)  # a permissive umask: the mode must not depend on it
    try:
        made = private_directory(tmp_path / "a" / "b")
    finally:
        os.umask(old)
    assert made == tmp_path / "a" / "b" and made.is_dir()
    assert mode(made) == 0o700
    assert private_directory(made) == made  # an existing private folder is used as it is


@pytest.mark.parametrize("bits", [0o750, 0o705, 0o710, 0o701, 0o777])
def test_a_folder_open_to_group_or_others_is_refused(tmp_path: Path, bits: int) -> None:
    folder = tmp_path / "jobs"
    folder.mkdir()
    folder.chmod(bits)
    with pytest.raises(UnsafeDirectory, match=f"open to group or others \\(mode {bits:04o}\\)"):
        private_directory(folder)
    assert mode(folder) == bits  # refused, not silently changed


def test_a_symbolic_link_is_refused_even_to_a_private_folder(tmp_path: Path) -> None:
    target = private_directory(tmp_path / "real")
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(UnsafeDirectory, match="symbolic link"):
        private_directory(link)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(UnsafeDirectory, match="symbolic link"):
        private_directory(dangling)
    assert not (tmp_path / "nowhere").exists()  # nothing was created through the link


def test_a_file_in_the_way_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(UnsafeDirectory, match="not a directory"):
        private_directory(tmp_path / "file")


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_a_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    folder = private_directory(tmp_path / "theirs")
    os.chown(folder, 65534, 65534)
    with pytest.raises(UnsafeDirectory, match="belongs to uid 65534, not to Orthanc's user"):
        check_private(folder)


class Logged(list[str]):
    def __call__(self, message: str) -> None:
        self.append(message)


def runner(upload_job_dir: str) -> tuple[JobRunner, Logged]:
    logged = Logged()
    services = SimpleNamespace(settings=Settings(UploadJobDir=upload_job_dir), node="host:8042", log_error=logged)
    return JobRunner(services), logged  # type: ignore[arg-type]


def test_the_job_folder_is_this_nodes_private_folder_in_upload_job_dir(tmp_path: Path) -> None:
    jobs, logged = runner(str(tmp_path / "upload-jobs"))
    assert jobs.directory == tmp_path / "upload-jobs" / "host_8042"
    assert mode(tmp_path / "upload-jobs") == 0o700 and mode(jobs.directory) == 0o700
    assert logged == []


@pytest.mark.parametrize("setting", ["", "open", "link"])
def test_an_unusable_job_folder_refuses_jobs_with_503_and_says_why_in_the_log(tmp_path: Path, setting: str) -> None:
    (tmp_path / "open").mkdir(mode=0o755)
    (tmp_path / "open").chmod(0o755)
    (tmp_path / "link").symlink_to(private_directory(tmp_path / "real"))
    jobs, logged = runner(str(tmp_path / setting) if setting else "")
    with pytest.raises(UploadRejected) as refused:
        _ = jobs.directory
    assert status_of(refused.value.error) == 503
    assert "job folder is not usable" in refused.value.detail and str(tmp_path) not in refused.value.detail
    reason = {"": "UploadJobDir is not set", "open": "open to group or others", "link": "symbolic link"}[setting]
    assert len(logged) == 1 and reason in logged[0]


def test_the_job_folder_is_never_the_shared_temp_folder_by_default() -> None:
    assert Settings().UploadJobDir == ""  # required: no default under /tmp
    jobs, logged = runner("")
    with pytest.raises(UploadRejected):
        _ = jobs.directory
    assert "UploadJobDir is not set" in logged[0]


def test_the_api_listener_binds_loopback_by_default() -> None:
    assert Settings().ApiListenAddress == "127.0.0.1"
