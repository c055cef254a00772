"""Benchmarks: the plugin against plain Orthanc, side by side in one run (``make bench``)."""
