"""The gateway tests' committed tenants and DICOM files, for every module of this folder.

They are defined beside the gateway tests that introduced them; naming them here makes them
fixtures of each module (module-scoped ones once per module) without importing each into it.
"""

from tests.dicomnet.test_gateway import committed, ct, dcmtk, sites

__all__ = ["committed", "ct", "dcmtk", "sites"]
