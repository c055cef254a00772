"""Uploads' study holds shared between the nodes of one Orthanc index, from one thread per node.

Every ``INTERVAL_SECONDS``, and at once when an upload holds a new study, the thread publishes what this node's
uploads hold (store/upload_holds.py, each row renewed for ``TTL_SECONDS``) and reads what the other nodes hold
into ``services.holds``, so the follower of the shared change log passes over a study an upload on another node is
still writing, as it does for its own. A study turns stable ``StableAge`` seconds after its last instance (the
README asks for 1 at least; nothing enforces it); a new hold is published in this node's next transaction and
seen at the follower's next round (half a second), well within that. Its connection is its own (plugin.py), so
requests that use up the pool never keep it from renewing. A node that dies mid-upload stops renewing: its holds
run out after TTL_SECONDS and the follower records what was stored. An upload's file goes into a study only once
its hold is published (a new study's first file waits for the next round: one transaction) and while it is seen
(``StudyHolds.ready_for``): a node that cannot renew its holds (PostgreSQL out of its reach while the follower
reaches it; or, alone on a PostgreSQL index, the plugin's database away) refuses its uploads' files once they
may have run out (503, to send again), and a study whose hold may have lapsed gets no more of that upload: the
follower records the part stored, never a study still growing. Runs only with Orthanc's index in PostgreSQL, once
the plugin's tables exist (plugin.py): with its own index a node follows its own change log.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..services import Services
from ..store import upload_holds
from ..store.db import Engine

INTERVAL_SECONDS = 0.5
TTL_SECONDS = 30.0  # a dead node's holds run out this long after its last round
# An upload's files go into a study only while the other nodes see its hold: published, and renewed within
# TTL_SECONDS less this margin (core/holds.py ready_for); else refused with a 503 (app/uploading/batch.py).
MARGIN_SECONDS = 10.0


class HoldExchange:
    def __init__(self, services: Services, node: str, log_warning: Callable[[str], None], *,
                 engine: Engine | None = None) -> None:
        self._services = services
        self._engine = engine or services.engine
        self._node = node
        self._log_warning = log_warning
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="ehr-hold-exchange", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while True:
            self.exchange_once()
            self._services.holds.wait_for_new_hold(INTERVAL_SECONDS)  # a new hold is published at once

    def exchange_once(self) -> None:
        """One round. While the database is away the last reading stands (the follower cannot record then
        either); said once."""
        holds = self._services.holds
        began = time.monotonic()  # (PostgreSQL's clock starts each row's TTL later than this)
        held_here = holds.held_here()
        try:
            elsewhere = upload_holds.exchange(self._engine, self._node, held_here, TTL_SECONDS)
        except Exception as exc:  # noqa: BLE001 - the next round tries again
            if not self._failing:
                self._log_warning(f"ehr-imaging: uploads' holds not shared with the other nodes"
                                  f" ({type(exc).__name__}); retried every {INTERVAL_SECONDS:g} s")
            self._failing = True
            return
        self._failing = False
        holds.held_elsewhere(elsewhere)
        holds.published(held_here, began + TTL_SECONDS - min(MARGIN_SECONDS, TTL_SECONDS / 2))
