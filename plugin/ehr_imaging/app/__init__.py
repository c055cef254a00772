"""The application's use cases, between the adapters (``api/``, ``hooks/``) and ``core/`` + ``store/``.

Each module is one use case or the service behind one: ingest of a stable study, uploads and jobs, offline
sync, study resolution, viewer-token issuing, deletion, images and summaries, and the DICOMweb gate that
decides every viewer request. They call ``core/`` for decisions, ``store/`` and the Orthanc adapter
(``Services.pacs``) for effects, and raise the error vocabulary of ``core/errors.py``; they know no HTTP.
"""
