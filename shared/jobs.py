"""Names both services use for the arq queue and the jobs on it."""

from __future__ import annotations

QUEUE_NAME = "labelloop:queue"
