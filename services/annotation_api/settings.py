"""Configuration of the annotation API (env prefix ``LABELLOOP_``; ``DATABASE_URL`` / ``REDIS_URL`` bare)."""

from __future__ import annotations

from pydantic import AliasChoices, Field

from shared.settings import CommonSettings, RedisSettingsMixin

DEFAULT_DB_PING_AFTER_IDLE_S = 1.0


class ApiSettings(CommonSettings, RedisSettingsMixin):
    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/labelloop",
        validation_alias=AliasChoices("DATABASE_URL", "LABELLOOP_DATABASE_URL"),
        description="`postgresql://user:pass@host:port/db` (embedded under `make run` / `make test`).",
    )
    db_pool_size: int = Field(
        default=10, ge=1, description="Database connections per API process (+ as many overflow)."
    )
    db_ping_after_idle_s: float = Field(
        default=DEFAULT_DB_PING_AFTER_IDLE_S,
        ge=0,
        description="A users' pool connection idle this long (seconds) is pinged before a request uses it, "
        "so one a firewall or proxy dropped silently is replaced first; 0 pings every time. One Postgres "
        "closed is noticed without a ping.",
    )
    internal_db_pool_size: int = Field(
        default=4,
        ge=1,
        description="Database connections per API process for `/internal` (gateway workers leasing and "
        "reporting chunks), apart from the users' pool so bulk work never holds the connections user "
        "requests need; also how many `/internal` calls one process serves at once.",
    )
    internal_wait_s: float = Field(
        default=2.0,
        gt=0,
        description="How long an `/internal` call waits for one of those connections before it is answered "
        "503 with `Retry-After`: workers back off instead of piling up on the API.",
    )
    internal_retry_after_s: int = Field(
        default=1, ge=1, description="The `Retry-After` (seconds) of a busy `/internal` answer."
    )
    api_token: str = Field(
        default="",
        description="When set, a user with this API token is created at start-up (if missing).",
    )
    secret_key: str = Field(
        default="",
        repr=False,
        description="Key(s) encrypting stored ML backend passwords, comma-separated: the first encrypts, "
        "all decrypt (rotate: prepend a new key, run `cli rotate-secret-key`, drop the old one). "
        "Generated into `.data/secret_key` by `make run`.",
    )
    public_url: str = Field(
        default="http://127.0.0.1:8080",
        description="URL ML backends use to reach this API (sent as `hostname` in /setup).",
    )
    gateway_url: str = Field(default="http://127.0.0.1:8090", description="Model gateway base URL.")
    max_request_bytes: int = Field(
        default=200 * 1024 * 1024,
        ge=1,
        description="Largest body of the bulk routes (task and prediction import, chunk reports); "
        "larger gets 413.",
    )
    max_json_request_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1,
        description="Largest body of every other route (parsed whole as JSON); larger gets 413.",
    )
    max_page_size: int = Field(default=1000, ge=1, description="Largest page any list returns.")
    chunk_size: int = Field(
        default=1000,
        ge=1,
        description="Tasks per bulk-prediction chunk. Each chunk costs ~20 ms of CPU across the API, a worker "
        "and Postgres whatever its size (a lease, a report, their transactions), so bigger chunks cost less "
        "per task, while its report, read whole, and its /internal calls grow with it (bench/README).",
    )
    chunk_lease_s: float = Field(
        default=120.0,
        gt=0,
        description="A chunk not finished within this is given to another worker.",
    )
    sweep_interval_s: float = Field(default=5.0, gt=0, description="How often expired chunks are re-queued.")
    job_batch_size: int = Field(
        default=5000,
        ge=1,
        description="Tasks per transaction of the jobs the API runs itself (deletes, auto-labeling, "
        "chunk planning): bounds how long one batch holds its locks.",
    )
    job_inline_tasks: int = Field(
        default=1000,
        ge=0,
        description="A delete or auto-labeling of at most this many tasks is done within the request "
        "(answered like Label Studio, done when answered); larger ones run as a background job.",
    )
    background_loops: bool = Field(
        default=True,
        description="Run the background loops in this process: the job runner (deletes, auto-labeling, "
        "chunk planning), the chunk sweeper and fold, event delivery, backend checks, the job watchdog. "
        "Off: the process only serves requests, and the jobs they record are run by the API processes "
        "with the loops on (woken through Postgres `NOTIFY`); at least one must run. `make run` turns "
        "them off in the users' API and on in the `/internal` one.",
    )
    redis_claim_ttl_s: float = Field(
        default=60.0,
        gt=0,
        description="How long this deployment's claim on its Redis database outlives its last API process "
        "(renewed every third of it): a Redis database is one deployment's, and an API finding it claimed "
        "by another is not ready.",
    )
    job_poll_interval_s: float = Field(
        default=1.0, gt=0, description="How often each API replica looks for background jobs to advance."
    )
    job_stall_timeout_s: float = Field(
        default=3600.0,
        gt=0,
        description="A queued or running job with no progress for this long (no chunk leased, "
        "heartbeated or finished, no batch done, no worker report) is failed with the reason; a running "
        "training job gets twice its backend's `timeout` on top.",
    )
    chunk_retention_s: float = Field(
        default=86400.0,
        gt=0,
        description="How long a finished job keeps its per-chunk rows; the job's summary stays.",
    )
    event_max_attempts: int = Field(
        default=10,
        ge=1,
        description="Attempts at delivering one annotation event that a backend answers with an error "
        "(4xx other than 401/408/429, or 5xx) before it is parked and the backend's queue moves on "
        "(`GET /api/ml/{id}/events`); an event that cannot be encoded is parked at once. An unreachable "
        "backend parks nothing: its events wait.",
    )
    backend_check_interval_s: float = Field(
        default=60.0, gt=0, description="How often each ML backend's health and model version are re-checked."
    )
    task_lock_ttl_s: float = Field(
        default=600.0, gt=0, description="How long a task served by /next stays reserved for its annotator."
    )
    job_events_poll_s: float = Field(
        default=0.5,
        gt=0,
        description="How often a `/api/jobs/{id}/events` stream re-reads its job (one short query each).",
    )
    job_events_keepalive_s: float = Field(
        default=15.0,
        gt=0,
        description="Seconds between `: keep-alive` comments on an idle job event stream.",
    )
