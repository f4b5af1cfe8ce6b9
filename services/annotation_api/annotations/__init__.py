"""Annotations: results people made for a task, each change recorded as an outbox event."""
