"""Seeded mutators for the fuzz run (tests/integration/test_fuzz.py): DICOM files and HTTP requests.

Every mutant is a pure function of (seed, channel, index), so a failure is replayed from those three alone.
"""
