"""sbclient: a small typed Python client for the sbaudit REST API (depends on httpx only).

from sbclient import Client

with Client("http://127.0.0.1:8000", api_key="sbk_...") as sb:
    dataset = sb.create_dataset({"preset": "LMS-5", "n_train": 2000, "n_test": 500})
    sb.wait(dataset["job_id"])
"""

from sbclient.client import DEFAULT_URL, Client
from sbclient.errors import ApiError, ClientError, ConnectionFailed, FieldError
from sbclient.sse import EventStreamParser, ServerSentEvent
from sbclient.types import (
    TERMINAL_STATES,
    Artifact,
    Audit,
    AuditComparison,
    CheckComparison,
    ComparedAudit,
    ComparisonRow,
    Dataset,
    FeatureBlock,
    Job,
    JobDetail,
    JobEvent,
    JobState,
    Model,
    ResourceStatus,
    Upload,
)

__all__ = [
    "DEFAULT_URL",
    "TERMINAL_STATES",
    "ApiError",
    "Artifact",
    "Audit",
    "AuditComparison",
    "CheckComparison",
    "Client",
    "ClientError",
    "ComparedAudit",
    "ComparisonRow",
    "ConnectionFailed",
    "Dataset",
    "EventStreamParser",
    "FeatureBlock",
    "FieldError",
    "Job",
    "JobDetail",
    "JobEvent",
    "JobState",
    "Model",
    "ResourceStatus",
    "ServerSentEvent",
    "Upload",
]
