"""Remediation: the action registry, service managers, policy and verification."""
