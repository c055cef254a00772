"""The Python plugin runtime's floor, for benchmarks/ct300.py: orthanc-python loaded with a script that registers
only a change callback doing nothing (the plugin cannot do without one: its wake-ups and deletions come from it).
Whatever a server with this script loses against plain Orthanc is the runtime's, not the plugin's."""

import orthanc


def _on_change(change_type: object, level: object, resource_id: str) -> None:
    return None


orthanc.RegisterOnChangeCallback(_on_change)
