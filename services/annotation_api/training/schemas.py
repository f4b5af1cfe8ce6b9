"""Training request and answer bodies."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from services.annotation_api.jobs.schemas import JobOut


class TrainRequest(BaseModel):
    # Label Studio clients may send more (e.g. batch parameters); they do not change what we send.
    model_config = ConfigDict(extra="ignore", strict=True)

    use_ground_truth: bool = Field(
        default=False,
        description="Label Studio's flag; kept in the training job's selection, the backend is sent the "
        "same START_TRAINING event either way.",
    )


class TrainStarted(JobOut):
    """The training job (follow it with ``GET /api/jobs/{job_id}``)."""

    job_id: int = Field(description="The training job's id (same as `id`).")

    @classmethod
    def of_job(cls, out: JobOut) -> TrainStarted:
        return cls(**out.model_dump(), job_id=out.id)
