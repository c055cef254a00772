"""The audit of tag changes made through modify-tags."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from .models import TagEditAudit


def record(engine: Engine, *, edited_by: str, sop_instance_uid: str, study_instance_uid: str, file_name: str,
           original: dict[str, str | None], new: dict[str, str], removed_private_tags: bool,
           private_tags_removed: int) -> int:
    """Write one audit row; returns its id. Called before the modified file is handed out."""
    with Session(engine) as session, session.begin():
        row = TagEditAudit(edited_by=edited_by, sop_instance_uid=sop_instance_uid or None,
                           study_instance_uid=study_instance_uid or None, file_name=file_name,
                           original_values=original, new_values=new, removed_private_tags=removed_private_tags,
                           private_tags_removed=private_tags_removed)
        session.add(row)
        session.flush()
        return row.id
