"""The local stack (PostgreSQL + Orthanc with the plugin) for development, tests and benchmarks.

One implementation serves ``make up``/``make run``/``make down`` and the pytest fixtures, so the
tests exercise exactly what a developer runs.
"""
