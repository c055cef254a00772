"""Pure logic: no ``orthanc``, no database, no network. Everything here is unit-testable."""
