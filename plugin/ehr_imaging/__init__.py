"""ehr-imaging: an Orthanc plugin that makes Orthanc the imaging back end of an EHR."""

__version__ = "0.1.0"
