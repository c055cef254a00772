"""Orders and their links, as people and the EHR change them: an order pushed, a link made or undone by hand.

An order pushed after its study arrived links it now (the order was the missing piece); a link changed by
hand sends the study back through ingest when tag coercion is on (its tags follow the order).
"""

from __future__ import annotations

from ..core.orders import OrderInput
from ..services import Services
from ..store import links
from ..store import orders as order_store
from ..store.orders import Order


def push_order(services: Services, order: OrderInput) -> tuple[Order, bool]:
    """Insert or replace the EHR's order and link the studies waiting for it; (the order now, created)."""
    saved, created = order_store.upsert(services.engine, order)
    linked = links.rematch_for_order(services.engine, order.order_id, services.match_policy)
    for orthanc_id in linked:
        services.revisit_study(orthanc_id)
    if linked:
        saved = order_store.get(services.engine, order.order_id) or saved
    return saved, created


def link_by_hand(services: Services, study_uid: str, order_id: str, *, actor: str, force: bool) -> Order | None:
    """A person's link of a study to an order (audited in store.links); the order as it is now."""
    orthanc_id = links.link_manually(services.engine, study_uid, order_id, actor=actor, force=force,
                                     status_updates=services.settings.OrderStatusUpdates)
    services.revisit_study(orthanc_id)
    return order_store.get(services.engine, order_id)
