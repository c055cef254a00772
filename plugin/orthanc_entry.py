"""The script Orthanc loads (``PythonScript``): put the virtual environment and the plugin package
on ``sys.path``, then hand over to ``ehr_imaging.plugin``. Nothing else belongs here."""

import glob
import json
import os
import sys

import orthanc

_HERE = os.path.dirname(os.path.abspath(__file__))


def _site_packages() -> str:
    section = json.loads(orthanc.GetConfiguration()).get("EhrImaging", {})
    venv = (
        os.environ.get("EHR_IMAGING_VIRTUAL_ENV")
        or section.get("VirtualEnv")
        or os.path.join(os.path.dirname(_HERE), ".venv")
    )
    wanted = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    found = glob.glob(os.path.join(venv, "lib", wanted, "site-packages"))
    if not found:
        raise RuntimeError(f"ehr-imaging: no {wanted} virtual environment at {venv}")
    return found[0]


sys.path.insert(0, _site_packages())
sys.path.insert(0, _HERE)

from ehr_imaging.plugin import register  # noqa: E402

register()
