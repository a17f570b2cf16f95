"""Reliability and security under faults, load and bad input (``make test-reliability``)."""
