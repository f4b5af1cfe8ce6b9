"""Names both services use for the arq queue and the jobs on it."""

from __future__ import annotations

QUEUE_NAME = "labelloop:queue"

PROCESS_CHUNK = "process_chunk"
"""arq job ``process_chunk(chunk_id: int)``: predict one chunk of a bulk job and write it back."""

TRAIN_BACKEND = "train_backend"
"""arq job ``train_backend(job_id: int)``: send START_TRAINING to a backend and record its answer."""

DELIVER_EVENTS = "deliver_events"
"""arq job ``deliver_events(backend_id: int)``: push a backend's pending annotation events, in order."""


def chunk_job_id(chunk_id: int, attempt: int) -> str:
    """arq job id of a chunk attempt: re-enqueueing the same attempt twice is a no-op in arq."""
    return f"chunk:{chunk_id}:{attempt}"
