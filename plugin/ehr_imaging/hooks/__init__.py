"""Callbacks Orthanc calls: the HTTP filter, ingest and change hooks, worklist, Explorer extension."""
