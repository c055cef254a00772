"""Viewer access: what an OHIF viewer holding a viewer token may read, decided on every request."""
