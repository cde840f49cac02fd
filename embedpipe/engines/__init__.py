"""Execution engines other than the local threads (Ray Data)."""
