"""The one settings class: every knob of the service and the workers, read from ``SBAUDIT_*`` variables.

The API, the local executor's job subprocesses and Celery workers all build their configuration from this
class, so a deployment is described by one set of environment variables (see docs/operations.md).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveFloat, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Share of the host's memory one job may be estimated to need by default: room for the API, the database
# and a second job beside it.
JOB_MEMORY_SHARE = 0.4
_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def host_memory_bytes() -> int:
    """Physical memory, or the container's memory limit (cgroup v2 or v1) when that is lower."""
    try:
        sizes = [os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")]
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): assume a small machine
        sizes = [8 << 30]
    for path in _CGROUP_LIMITS:
        with contextlib.suppress(OSError, ValueError):
            sizes.append(int(Path(path).read_text().strip()))  # "max" (no limit) is a ValueError
    return min(sizes)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SBAUDIT_", extra="ignore")

    # Where the SQLite database (embedded mode), artifacts, checkpoints and the admin key live.
    data_dir: Path = Path("./sbaudit-data")
    # Default: SQLite file in the data dir. Scaled mode: postgresql+psycopg://user:pass@host/db
    database_url: str = ""
    # Unset: local executor inside `sbaudit serve`. redis://host:6379/0: Celery workers (`sbaudit worker`).
    broker_url: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    raw_data_dir: Path | None = None
    # Whether workers may fetch missing MNIST/CIFAR-10 files from the internet (torchvision's mirrors). Off,
    # a preset whose files are not in the raw-data folder is refused with 422 at submission (service/
    # raw_data.py) instead of queueing a job that can only fail on a machine without network access.
    download_raw_data: bool = False
    max_upload_bytes: int = Field(
        default=1 << 30, ge=1, description="Largest uploaded checkpoint or dataset file (also uncompressed)."
    )
    max_json_bytes: int = Field(default=1 << 20, ge=1, description="Largest JSON request body.")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = True
    api_workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="API processes `sbaudit serve` starts (uvicorn workers). Above 1 only with a broker: in "
        "embedded mode the one API process also runs the jobs.",
    )

    # Job execution.
    workers: int = Field(default=1, ge=1, le=256, description="Concurrent jobs of the local executor.")
    # Job processes fork from a process that has imported what every job imports (worker/job_preload.py):
    # the local executor's fork server, a Celery worker's main process. Off: each job imports it itself.
    preload_job_modules: bool = True
    job_lease_seconds: float = Field(default=30.0, gt=0)
    job_max_attempts: int = Field(default=3, ge=1, le=100)
    progress_interval_seconds: float = Field(default=1.0, ge=0)
    poll_interval_seconds: float = Field(default=0.5, gt=0)
    # GET /v1/jobs/{id}/events closes after this long without `end`; EventSource clients then reconnect.
    events_max_seconds: float = Field(default=3600.0, gt=0)
    reaper_interval_seconds: float = Field(default=5.0, gt=0)
    # Scaled mode: a queued job whose broker message was lost (never sent, or Redis restarted) is sent again
    # once it has waited this long since its last send (worker/celery_app.py).
    redispatch_after_seconds: float = Field(default=30.0, gt=0)
    checkpoint_every_updates: int = Field(default=200, ge=1)
    # `sbaudit worker` touches this file on every reaper pass; a container health check reads its age.
    worker_health_file: Path | None = None
    # Wall time one attempt of a job may run (worker/runner.py); per-kind overrides as JSON, e.g.
    # SBAUDIT_JOB_TIME_LIMITS='{"train_model": 3600}'. Past limit + grace the job is stopped the hard way.
    job_time_limit_seconds: float = Field(default=24 * 3600.0, gt=0)
    job_time_limits: dict[str, PositiveFloat] = Field(default_factory=dict)
    job_time_limit_grace_seconds: float = Field(default=30.0, ge=0)
    # A canceled job that reaches no progress point within this long is killed (worker/cancel_watch.py).
    cancel_grace_seconds: float = Field(default=10.0, ge=0)
    # Each job process's memory limit (worker/memory_limit.py): the job's estimate plus the allowance,
    # capped by job_memory_limit_bytes, which is also the limit of a job without an estimate. Unset, it is
    # three quarters of the machine's memory (or the container's limit) shared by the local workers.
    job_memory_limit_bytes: int = Field(
        default_factory=lambda data: host_memory_bytes() * 3 // 4 // data["workers"], ge=64 << 20
    )
    job_memory_allowance_bytes: int = Field(
        default=3 << 30,
        ge=0,
        description="Added to a job's estimate for the interpreter, torch and CUDA (a CPU job process holds "
        "about 1 GiB after importing torch).",
    )

    # Request limits the API enforces before queueing a job (the engine checks again).
    max_samples: int = Field(default=1_000_000, ge=1, description="Upper bound on n_train, n_val, n_test.")
    max_features: int = Field(
        default=4096, ge=1, description="Upper bound on a composed dataset's dimension."
    )
    max_width: int = Field(default=8192, ge=1, description="Upper bound on widths, filters, hidden sizes.")
    max_depth: int = Field(default=64, ge=1, description="Upper bound on depth and layer counts.")
    max_batch_size: int = Field(default=65536, ge=1, description="Upper bound on training.batch_size.")
    max_updates: int = Field(default=10_000_000, ge=1, description="Upper bound on stop.max_updates.")
    max_epochs: int = Field(default=100_000, ge=1, description="Upper bound on stop.max_epochs.")
    max_repeats: int = Field(default=100, ge=1, description="Upper bound on audit repeats.")
    max_ensemble_size: int = Field(
        default=32, ge=1, le=32, description="Upper bound on ensemble_size (members trained by one job)."
    )

    # Job budgets (service/budget.py): a job estimated to need more is refused with 422 before it is queued.
    max_job_memory_bytes: int = Field(
        default_factory=lambda: round(JOB_MEMORY_SHARE * host_memory_bytes()),
        ge=1 << 20,
        description="Peak memory one job may be estimated to need (default: 40% of the memory this host "
        "offers at start-up).",
    )
    max_job_work: int = Field(
        default=10**17, ge=1, description="Multiply-adds one job may be estimated to need."
    )

    # Uploaded checkpoints and datasets are validated in a separate process with these limits.
    upload_check_timeout_seconds: float = Field(default=300.0, gt=0)
    upload_check_memory_bytes: int = Field(
        default=16 << 30, ge=1 << 28, description="Address-space limit of the validator (torch maps ~3 GiB)."
    )
    upload_check_concurrency: int = Field(
        default=2, ge=1, le=64, description="Validators running at once per API process; past it: 503."
    )
    # The validator's sandbox (service/uploads/sandbox.py): the user it runs as when the server runs as
    # root ("" keeps root's uid: only for hosts where no other user can run the interpreter), and where its
    # private working directories go (default: the system's temp dir; outside the data dir, which that user
    # must not read; on the data dir's filesystem, an upload is moved there instead of copied).
    upload_validator_user: str = Field(default="nobody", max_length=64)
    upload_sandbox_dir: Path | None = None
    # Bounds on what an upload form declares, checked before the validator starts.
    max_input_size: int = Field(
        default=1 << 18,
        ge=1,
        description="Upper bound on an upload's values per example (input_shape product).",
    )
    max_classes: int = Field(default=10_000, ge=2, description="Upper bound on an upload's num_classes.")

    # Token buckets per API key (service/ratelimit.py), per API process; 0 disables a limit.
    rate_limit_per_second: float = Field(default=50.0, ge=0)
    rate_limit_burst: int = Field(default=100, ge=1)
    job_rate_limit_per_minute: float = Field(default=60.0, ge=0)
    job_rate_limit_burst: int = Field(default=20, ge=1)
    # Caps (service/caps.py); 0 = no cap. Active jobs per owner are counted in the database, so the cap
    # holds across API processes; streams and long polls are counted per key in each API process.
    max_active_jobs_per_owner: int = Field(
        default=100, ge=0, description="Queued, running and canceling jobs one owner may have."
    )
    max_streams_per_key: int = Field(
        default=8, ge=0, description="Open GET /v1/jobs/{id}/events streams per key, per API process."
    )
    max_long_polls_per_key: int = Field(
        default=16, ge=0, description="GET /v1/jobs/{id}?wait= requests waiting at once per key, per process."
    )
    # Peers whose X-Forwarded-For names the client (service/app.py): comma-separated IPs or networks, or *.
    forwarded_allow_ips: str = "127.0.0.1,::1"
    # Bytes of artifacts an owner may hold (service/quota.py); 0 = unlimited.
    owner_quota_bytes: int = Field(default=20 << 30, ge=0)

    # Experiment tracking (worker/mlflow_runs.py). Set: every finished audit is logged as an MLflow run there
    # (the API and the workers need it; the workers the `mlflow` extra too). Unset or empty: off, and an audit
    # that asks for MLflow is refused.
    mlflow_tracking_uri: str | None = Field(
        default=None, description="MLflow tracking server, e.g. http://mlflow:5000."
    )
    mlflow_experiment: str = Field(
        default="sbaudit", min_length=1, max_length=256, description="Experiment of audits that name none."
    )
    # Where users reach this server, for links that leave it (an MLflow run's link to its report, the
    # report's reproduce commands when a worker renders it). Unset or empty: http://host:port.
    public_url: str | None = None

    page_size_default: int = Field(default=50, ge=1)
    page_size_max: int = Field(default=200, ge=1)
    idempotency_ttl_hours: float = Field(default=24.0, gt=0)

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _trusted_proxies(cls, value: str) -> str:
        """Each entry an IP address or a network (``10.0.0.0/8``), or ``*`` alone: uvicorn would take a
        misspelt entry for a host name no peer ever has, and trust nobody without a word."""
        entries = [entry.strip() for entry in value.split(",")]
        if entries == ["*"]:
            return "*"
        for entry in entries:
            try:
                ipaddress.ip_network(entry)
            except ValueError as exc:
                raise ValueError(
                    f"{entry!r} is not an IP address or network (comma-separated list, or * for any peer)"
                ) from exc
        return ",".join(entries)

    @model_validator(mode="after")
    def _resolve_paths(self) -> Settings:
        # Absolute, so job subprocesses and `sbaudit` run from another directory agree on it.
        self.data_dir = self.data_dir.expanduser().resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'sbaudit.db').resolve()}"
        return self

    def job_time_limit(self, kind: str) -> float:
        """Seconds one attempt of a job of ``kind`` may run."""
        return self.job_time_limits.get(kind, self.job_time_limit_seconds)

    def job_memory_limit(self, estimated_bytes: float | None) -> int:
        """Bytes a job process may hold: its estimate plus the allowance, never more than the cap."""
        if not estimated_bytes or estimated_bytes <= 0:
            return self.job_memory_limit_bytes
        return min(self.job_memory_limit_bytes, int(estimated_bytes) + self.job_memory_allowance_bytes)

    @property
    def base_url(self) -> str:
        """This server's address as users see it, without a trailing slash."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def checkpoints_dir(self) -> Path:
        return self.data_dir / "checkpoints"

    @property
    def scratch_dir(self) -> Path:
        return self.data_dir / "scratch"

    @property
    def uploads_dir(self) -> Path:
        """Uploads in progress and their validation (removed when the request ends)."""
        return self.data_dir / "uploads"

    @property
    def admin_key_file(self) -> Path:
        return self.data_dir / "admin-key"

    @property
    def key_revocation_file(self) -> Path:
        """Appended to by `sbaudit keys revoke`; every API process's key cache watches it."""
        return self.data_dir / "keys-revoked"


@lru_cache
def get_settings() -> Settings:
    """Settings from the environment, read once per process."""
    return Settings()
