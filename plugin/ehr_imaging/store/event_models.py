"""Typed SQLAlchemy models of the event outbox (store/outbox.py owns them): each event once, and its delivery
to each endpoint (status, attempts, when next). Part of the one schema description with ``models.py`` (same
``Base``, same rules: every constraint and index migration 13 creates).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, ForeignKey, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.schema import CheckConstraint, Index, UniqueConstraint

from .model_base import ZERO, Base


class OutboxEvent(Base):
    """One event, written in the transaction of the change it reports; ``seq`` is the delivery order."""

    __tablename__ = "event_outbox"
    __table_args__ = (UniqueConstraint("event_id", name="event_outbox_event_id_key"),
                      Index("ix_event_outbox_study", "study_instance_uid"))

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    event_id: Mapped[uuid.UUID]
    type: Mapped[str]
    study_instance_uid: Mapped[str | None]
    order_id: Mapped[str | None]
    patient_id: Mapped[str | None]
    ordering_key: Mapped[str]
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class EventDelivery(Base):
    """One event to one endpoint (its URL): pending until delivered, failed once its retries ran out."""

    __tablename__ = "event_deliveries"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'failed', 'delivered')", name="event_deliveries_status_check"),
        Index("ix_event_deliveries_due", "next_attempt_at", postgresql_where=text("status = 'pending'")),
        Index("ix_event_deliveries_in_order", "endpoint", "ordering_key", "event_seq",
              postgresql_where=text("status = 'pending'")),
        Index("ix_event_deliveries_status", "status", "event_seq"),
    )

    event_seq: Mapped[int] = mapped_column(BigInteger, ForeignKey("event_outbox.seq", ondelete="CASCADE",
                                                                  name="event_deliveries_event_seq_fkey"),
                                           primary_key=True)
    endpoint: Mapped[str] = mapped_column(primary_key=True)
    ordering_key: Mapped[str]
    status: Mapped[str] = mapped_column(default="pending", server_default=text("'pending'"))
    attempts: Mapped[int] = mapped_column(default=0, server_default=ZERO)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    retry_since: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None]
