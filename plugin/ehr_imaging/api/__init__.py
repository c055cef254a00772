"""The REST routes the EHR calls: a tiny router, authentication, JSON errors; one module per area."""
