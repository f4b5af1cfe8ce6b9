"""Configuration of the model gateway and its workers (env prefix ``LABELLOOP_``, ``REDIS_URL`` bare).

Network lists are comma-separated CIDRs in the environment, e.g.
``LABELLOOP_ALLOWED_NETWORKS="127.0.0.0/8,::1/128"`` (what ``make run`` passes).
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from shared.settings import CommonSettings, RedisSettingsMixin

Network = IPv4Network | IPv6Network


def parse_networks(value: Any) -> tuple[Network, ...]:
    """A CIDR list from a comma-separated string or a sequence; a bad entry is named in the error."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    networks: list[Network] = []
    for item in items:
        if isinstance(item, IPv4Network | IPv6Network):
            networks.append(item)
            continue
        text = str(item).strip()
        if not text:
            continue
        try:
            networks.append(ip_network(text, strict=False))
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a CIDR network: {exc}") from None
    return tuple(networks)


class GatewaySettings(CommonSettings, RedisSettingsMixin):
    api_url: str = Field(
        default="http://127.0.0.1:8080",
        description="Annotation API base URL (results are written there).",
    )

    # ---- address policy -------------------------------------------------------------------
    allowed_networks: Annotated[tuple[Network, ...], NoDecode] = Field(
        default=(),
        description="Networks backends may live in although a built-in rule denies them (loopback, "
        "private, link-local…). Default: none, so only public addresses are reachable.",
    )
    denied_networks: Annotated[tuple[Network, ...], NoDecode] = Field(
        default=(),
        description="Extra networks backends may never live in. The most specific matching rule wins; "
        "on a tie this list beats allowed_networks.",
    )
    dns_timeout_s: float = Field(default=2.0, gt=0, description="Resolving a backend's host name.")

    # ---- timeouts (seconds) ---------------------------------------------------------------
    connect_timeout_s: float = Field(default=1.0, gt=0, description="TCP connect, as Label Studio.")
    health_timeout_s: float = Field(default=3.0, gt=0, description="A backend's /health answer.")
    setup_timeout_s: float = Field(default=10.0, gt=0, description="A backend's /setup answer.")
    webhook_timeout_s: float = Field(default=10.0, gt=0, description="Annotation events to /webhook.")
    interactive_timeout_s: float = Field(default=5.0, gt=0, description="Whole interactive predict.")
    call_deadline_s: float = Field(
        default=300.0, gt=0, description="One backend call including all its retries and backoffs."
    )

    # ---- retries, budget, breaker ---------------------------------------------------------
    retry_attempts: int = Field(default=3, ge=1, description="Attempts per call, the first included.")
    retry_base_s: float = Field(default=0.2, ge=0, description="First retry backoff cap (full jitter).")
    retry_max_s: float = Field(default=5.0, ge=0, description="Largest retry backoff.")
    retry_after_max_s: float = Field(default=30.0, ge=0, description="Longest Retry-After honoured.")
    retry_budget_ratio: float = Field(
        default=0.2, ge=0, le=1, description="Retries allowed per first attempt, per backend."
    )
    retry_budget_burst: float = Field(
        default=10.0, ge=1, description="Retry tokens a backend starts with and can save up."
    )
    breaker_failure_threshold: int = Field(default=5, ge=1, description="Consecutive failures to open.")
    breaker_cool_down_s: float = Field(default=10.0, ge=0, description="Open time before a probe.")

    # ---- connection pools -----------------------------------------------------------------
    max_backend_clients: int = Field(
        default=256,
        ge=1,
        description="Backends whose breaker, retry budget and limits are remembered (4x this many, least "
        "recently used forgotten first).",
    )
    keepalive_expiry_s: float = Field(default=30.0, gt=0, description="Idle keep-alive connection lifetime.")
    max_response_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="Largest backend answer body (decoded) held in memory; read in chunks, dropped at once "
        "when over.",
    )
    max_buffered_response_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024,
        description="Backend answer bytes the whole process may hold while reading them; a call over it is "
        "refused as too large (its batch is split).",
    )
    max_header_bytes: int = Field(
        default=8190,
        ge=256,
        le=1024 * 1024,
        description="Longest status line or header field a backend may answer (at most 128 fields).",
    )

    # ---- TLS and proxy for backend calls ------------------------------------------------------
    backend_ca_bundle: str | None = Field(
        default=None,
        description="PEM file of CAs that backend certificates must chain to. Default: certifi's public roots.",
    )
    backend_client_cert: str | None = Field(
        default=None,
        description="PEM client certificate (and key, unless backend_client_key is set) shown to backends (mTLS).",
    )
    backend_client_key: str | None = Field(
        default=None, description="PEM private key of backend_client_cert, when kept in its own file."
    )
    backend_proxy_url: str | None = Field(
        default=None,
        description="HTTP proxy for every backend call (opt-in; environment proxies are ignored). The "
        "address policy still checks each backend host before the call.",
    )
    whoami_cache_s: float = Field(
        default=60.0, ge=0, description="How long the gateway trusts a client token the API confirmed."
    )
    public_max_tasks: int = Field(default=100, ge=1, description="Tasks per POST /api/predict.")
    delivery_lock_ttl_s: float = Field(
        default=60.0,
        gt=0,
        description="Lifetime of a backend's event-delivery lock; its holder extends it every third of "
        "this while delivering, so a slow webhook call never outlives it.",
    )

    # ---- worker process -------------------------------------------------------------------
    worker_probe_port: int = Field(
        default=9100,
        ge=0,
        le=65535,
        description="Worker only: port of its `/metrics`, `/health` (liveness) and `/ready` listener; 0: none.",
    )
    worker_probe_host: str = Field(default="0.0.0.0", description="Worker only: address the listener binds.")
    worker_max_jobs: int = Field(
        default=3,
        ge=1,
        description="Worker only: queued jobs one worker runs at once (bulk-prediction chunks, webhook "
        "deliveries, training calls). Each chunk is a lease and a report to the API; chunks beyond what "
        "the API processes can serve at once only wait there, so they wait on the queue instead, where "
        "any worker can take them. With 1000-task chunks on two shared cores, 4 per worker took the "
        "/internal calls' p99 to 175-225 ms and 3 kept it at 144-150 ms for the same CPU per task "
        "(bench/README).",
    )
    worker_drain_grace_s: float = Field(
        default=20.0,
        ge=0,
        description="Worker only: on SIGTERM, how long held chunks may still finish before they are "
        "released to other workers (keep it below the orchestrator's kill timeout).",
    )

    # ---- what callers may send the gateway --------------------------------------------------
    internal_max_request_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        description="Largest request body on the /internal routes (413 beyond; read only after auth). Not "
        "LABELLOOP_MAX_REQUEST_BYTES, the API's cap on imports, which is far larger.",
    )
    public_max_request_bytes: int = Field(
        default=2 * 1024 * 1024,
        ge=1024,
        description="Largest request body on POST /api/predict (413 beyond; read only after auth).",
    )
    public_max_response_bytes: int = Field(
        default=2 * 1024 * 1024,
        ge=1024,
        description="Largest backend answer a POST /api/predict call may hold (max_response_bytes elsewhere).",
    )
    max_request_head_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="Request line and headers of one request to the gateway (431 and close beyond).",
    )

    @field_validator("allowed_networks", "denied_networks", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> tuple[Network, ...]:
        return parse_networks(value)
