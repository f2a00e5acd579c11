"""Importing this module registers every SSD-family model (each neck module registers its own builders)."""

from detectors.ssd.necks import dfssd, fssd, mdssd, mfssd, ssd  # noqa: F401
