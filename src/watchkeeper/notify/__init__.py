"""Reaching a human: notification routes, their outbox, and Alertmanager."""
