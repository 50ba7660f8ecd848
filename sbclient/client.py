"""``Client``: the sbaudit REST API from Python, one method per operation.

Reads are retried on a connection error or a 502/503/504 (with backoff); POSTs that create jobs carry an
``Idempotency-Key`` (a fresh uuid4 unless you pass one), so they are retried the same way without ever
creating a second job. Every error is a :class:`~sbclient.errors.ClientError` whose ``str()`` is one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Literal, cast

import httpx

from sbclient.errors import ApiError, ClientError, ConnectionFailed
from sbclient.sse import EventStreamParser
from sbclient.types import TERMINAL_STATES, Audit, AuditComparison, Dataset, Job, JobEvent, Model, Upload

DEFAULT_URL = "http://127.0.0.1:8000"
RETRY_STATUSES = frozenset({502, 503, 504})
# Uploads are validated within the request (a fresh process that imports torch): allow it time.
UPLOAD_TIMEOUT = httpx.Timeout(30.0, read=900.0, write=900.0)
# The event stream sends a keep-alive every 15 s; a quieter connection is a dead one.
EVENTS_READ_TIMEOUT = 60.0
# get_job(wait=...) long-polls up to this long per request while wait() falls back to polling.
POLL_WAIT_SECONDS = 20.0
# What export_audit can fetch: the path under /v1/audits/{id} and its query.
EXPORTS: dict[str, tuple[str, dict[str, str]]] = {
    "csv": ("results.csv", {}),
    "html": ("report", {"download": "true"}),
}
ExportFormat = Literal["csv", "html"]
_FILENAME = re.compile(r"""filename\*?=(?:UTF-8'')?"?([^";]+)"?""", re.IGNORECASE)


class Client:
    """A connection to one server with one API key. Use as a context manager (or call :meth:`close`).

    ``url`` defaults to ``$SBAUDIT_URL`` or http://127.0.0.1:8000, ``api_key`` to ``$SBAUDIT_API_KEY``.
    ``transport`` replaces the network (tests pass an ``httpx.MockTransport``).
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
        *,
        retries: int = 3,
        backoff: float = 0.25,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = (url or os.environ.get("SBAUDIT_URL") or DEFAULT_URL).rstrip("/")
        self.api_key = api_key or os.environ.get("SBAUDIT_API_KEY") or None
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        headers = {"User-Agent": "sbclient"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- datasets ---------------------------------------------------------------------------------

    def create_dataset(self, body: Mapping[str, Any], idempotency_key: str | None = None) -> Dataset:
        """Generate a dataset (``{"preset": "LMS-5", ...}`` or ``{"blocks": [...], ...}``); it is queued,
        its ``job_id`` tells when it is ready (see :meth:`wait`)."""
        return cast(Dataset, self._create("/v1/datasets", body, idempotency_key))

    def upload_dataset(
        self,
        path: str | os.PathLike[str],
        *,
        blocks: list[dict[str, Any]],
        simple_blocks: list[int] | None = None,
        num_classes: int | None = None,
        name: str | None = None,
        label: str | None = None,
        split_column: str | None = None,
        categorical: list[str] | None = None,
        image_size: list[int] | None = None,
        masks: str | os.PathLike[str] | None = None,
    ) -> Upload[Dataset]:
        """Upload evaluation data with its declared feature blocks: arrays (.npz or safetensors), a table
        (CSV or Parquet: ``label``, ``split_column``, ``categorical``; blocks by ``columns``) or images in a
        zip or tar archive (``image_size``; ``masks``, a second archive of masks, is merged in under
        ``masks/`` before sending, for blocks ``{"name": ..., "mask": "region" | "complement"}``)."""
        fields = {
            "blocks": blocks,
            "simple_blocks": simple_blocks,
            "num_classes": num_classes,
            "name": name,
            "label": label,
            "split_column": split_column,
            "categorical": categorical,
            "image_size": image_size,
        }
        if masks is None:
            return cast(Upload[Dataset], self._upload("/v1/datasets/uploads", path, fields))
        from sbclient.archives import merge_masks

        with tempfile.TemporaryDirectory(prefix="sbaudit-upload-") as scratch:
            merged = merge_masks(path, masks, Path(scratch) / f"{Path(path).stem}.zip")
            return cast(Upload[Dataset], self._upload("/v1/datasets/uploads", merged, fields))

    def get_dataset(self, dataset_id: str) -> Dataset:
        return cast(Dataset, self._get_json(f"/v1/datasets/{dataset_id}"))

    def list_datasets(self, *, status: str | None = None) -> Iterator[Dataset]:
        """Every dataset, newest first (pages are fetched as the iteration reaches them)."""
        return cast(Iterator[Dataset], self._items("/v1/datasets", {"status": status}))

    def delete_dataset(self, dataset_id: str) -> None:
        self._request("DELETE", f"/v1/datasets/{dataset_id}")

    # --- models -----------------------------------------------------------------------------------

    def train_model(self, body: Mapping[str, Any], idempotency_key: str | None = None) -> Model:
        return cast(Model, self._create("/v1/models", body, idempotency_key))

    def upload_model(
        self,
        path: str | os.PathLike[str],
        *,
        architecture: dict[str, Any] | None = None,
        input_shape: list[int] | None = None,
        num_classes: int | None = None,
        normalization: dict[str, Any] | None = None,
        dataset_id: str | None = None,
        name: str | None = None,
    ) -> Upload[Model]:
        """Upload a checkpoint (safetensors or a torch.save'd state_dict) for an architecture, or an ONNX
        graph (``architecture`` None: the graph describes itself)."""
        fields = {
            "architecture": architecture,
            "input_shape": input_shape,
            "num_classes": num_classes,
            "normalization": normalization,
            "dataset_id": dataset_id,
            "name": name,
        }
        return cast(Upload[Model], self._upload("/v1/models/uploads", path, fields))

    def get_model(self, model_id: str) -> Model:
        return cast(Model, self._get_json(f"/v1/models/{model_id}"))

    def list_models(self, *, status: str | None = None, dataset_id: str | None = None) -> Iterator[Model]:
        return cast(Iterator[Model], self._items("/v1/models", {"status": status, "dataset_id": dataset_id}))

    def delete_model(self, model_id: str) -> None:
        self._request("DELETE", f"/v1/models/{model_id}")

    # --- audits -----------------------------------------------------------------------------------

    def run_audit(self, body: Mapping[str, Any], idempotency_key: str | None = None) -> Audit:
        return cast(Audit, self._create("/v1/audits", body, idempotency_key))

    def get_audit(self, audit_id: str) -> Audit:
        return cast(Audit, self._get_json(f"/v1/audits/{audit_id}"))

    def list_audits(self, *, status: str | None = None, model_id: str | None = None) -> Iterator[Audit]:
        return cast(Iterator[Audit], self._items("/v1/audits", {"status": status, "model_id": model_id}))

    def delete_audit(self, audit_id: str) -> None:
        self._request("DELETE", f"/v1/audits/{audit_id}")

    def report_url(self, audit_id: str) -> str:
        """Where a browser shows the audit's HTML report."""
        return f"{self.url}/v1/audits/{audit_id}/report"

    def audit_report_html(self, audit_id: str) -> str:
        return self._request("GET", f"/v1/audits/{audit_id}/report", retry=True).text

    def audit_report_json(self, audit_id: str) -> dict[str, Any]:
        return self._get_json(f"/v1/audits/{audit_id}/report.json")

    def audit_results_csv(self, audit_id: str) -> str:
        """The finished audit's results, one row per check, figure, block and statistic (header
        ``audit_id,check,metric,block,statistic,value``)."""
        return self._request("GET", f"/v1/audits/{audit_id}/results.csv", retry=True).text

    def export_audit(
        self, audit_id: str, dest_path: str | os.PathLike[str], *, format: ExportFormat = "csv"
    ) -> Path:
        """Save the results as CSV (``format="csv"``) or the report as one self-contained HTML file
        (``"html"``) to ``dest_path`` (a file, or a folder to put it in under the server's name,
        ``<id>-results.csv`` / ``<id>-report.html``; ``out/`` is a folder, created if need be) and return
        the path; a failure leaves nothing behind."""
        if format not in EXPORTS:
            raise ClientError(f"format: {format!r} is not one of {', '.join(EXPORTS)}")
        path, params = EXPORTS[format]
        response = self._request("GET", f"/v1/audits/{audit_id}/{path}", params=params, retry=True)
        dest = Path(dest_path)
        if _folder(dest_path):
            dest = dest / _served_filename(response, fallback=f"{audit_id}.{format}")
        with _replacing(dest) as fh:
            fh.write(response.content)
        return dest

    def compare_audits(self, audit_ids: Sequence[str]) -> AuditComparison:
        """Two or more finished audits side by side: every figure with its delta from the first audit, and
        each audit's verdict and whether it changed."""
        return cast(
            AuditComparison, self._get_json("/v1/audits/compare", params={"ids": ",".join(audit_ids)})
        )

    def comparison_url(self, audit_ids: Sequence[str]) -> str:
        """Where a browser shows the comparison of these audits."""
        return f"{self.url}/v1/audits/compare/report?ids={','.join(audit_ids)}"

    # --- jobs -------------------------------------------------------------------------------------

    def get_job(self, job_id: str, wait: float = 0) -> Job:
        """The job; with ``wait`` (up to 60 s) the server answers as soon as it ends, or after ``wait``."""
        params = {"wait": wait} if wait else None
        timeout = httpx.Timeout(self.timeout, read=self.timeout + wait)
        return cast(Job, self._get_json(f"/v1/jobs/{job_id}", params=params, timeout=timeout))

    def list_jobs(
        self, *, state: str | None = None, kind: str | None = None, resource_id: str | None = None
    ) -> Iterator[Job]:
        params = {"state": state, "kind": kind, "resource_id": resource_id}
        return cast(Iterator[Job], self._items("/v1/jobs", params))

    def cancel_job(self, job_id: str, *, cascade: bool = False) -> Job:
        """Cancel a job; the jobs waiting for its result then fail, or with ``cascade`` are canceled too."""
        params = {"cascade": "true"} if cascade else None
        return cast(Job, self._request("POST", f"/v1/jobs/{job_id}/cancel", retry=True, params=params).json())

    def events(self, job_id: str) -> Iterator[JobEvent]:
        """The job's progress as it happens (``GET /v1/jobs/{id}/events``): a ``job`` event now and on each
        change, then one ``end`` event. A dropped connection is reopened once (twice in a row without an
        event in between raises :class:`ConnectionFailed`); the server's own periodic close is followed
        by a reconnect too."""
        job: Job | None = None
        misses = 0
        while True:
            parser = EventStreamParser()
            received = False
            cause: BaseException | None = None
            try:
                with self._stream(
                    "GET",
                    f"/v1/jobs/{job_id}/events",
                    timeout=httpx.Timeout(self.timeout, read=EVENTS_READ_TIMEOUT),
                ) as response:
                    content_type = response.headers.get("content-type", "")
                    if not content_type.startswith("text/event-stream"):
                        raise ClientError(f"{self.url} sent {content_type or 'no content type'}, not events")
                    for sse in parser.parse(response.iter_lines()):
                        if sse.event == "job":
                            job, received = cast(Job, json.loads(sse.data)), True
                            yield JobEvent("job", job)
                        elif sse.event == "end":
                            yield JobEvent("end", job if job is not None else self.get_job(job_id))
                            return
            except ConnectionFailed as exc:
                cause = exc.cause
            misses = 0 if received else misses + 1
            if misses > 1:
                raise ConnectionFailed(
                    self.url, cause or ClientError("the event stream closed without events")
                )
            if misses:  # a failed connection: wait as the server asked (at most 2 s) before the retry
                time.sleep(min((parser.retry_ms or 2000) / 1000, 2.0))

    def wait(self, job_id: str, on_event: Callable[[JobEvent], None] | None = None) -> Job:
        """Block until the job ends and return it; ``on_event`` sees every change on the way. Follows the
        event stream, or long-polls ``GET /v1/jobs/{id}?wait=`` where a server or proxy offers no stream."""
        try:
            for event in self.events(job_id):
                if on_event is not None:
                    on_event(event)
                if event.event == "end":
                    return event.job
        except ApiError as exc:
            if exc.status not in (404, 405, 501):
                raise
        except ClientError:  # no usable stream (dropped twice, or a proxy in the way): poll instead
            pass
        return self._poll(job_id, on_event)

    def _poll(self, job_id: str, on_event: Callable[[JobEvent], None] | None) -> Job:
        seen = None
        while True:
            job = self.get_job(job_id, wait=POLL_WAIT_SECONDS)
            fingerprint = (job["state"], job["progress"], job.get("stage"), job["updated_at"])
            if on_event is not None and fingerprint != seen:
                on_event(JobEvent("job", job))
            seen = fingerprint
            if job["state"] in TERMINAL_STATES:
                if on_event is not None:
                    on_event(JobEvent("end", job))
                return job

    # --- artifacts --------------------------------------------------------------------------------

    def download_artifact(self, artifact_id: str, dest_path: str | os.PathLike[str]) -> Path:
        """Save an artifact to ``dest_path`` (a file, or a folder to put it in under the server's file
        name) and return the path. The bytes go to a temporary file next to it, are checked against the
        server's sha256, and only then renamed into place: a failed download leaves nothing behind."""
        dest = Path(dest_path)
        with self._stream("GET", f"/v1/artifacts/{artifact_id}") as response:
            if _folder(dest_path):
                dest = dest / _served_filename(response, fallback=artifact_id)
            digest = hashlib.sha256()
            with _replacing(dest) as fh:
                for chunk in response.iter_bytes():
                    fh.write(chunk)
                    digest.update(chunk)
                expected = response.headers.get("etag", "").strip('"')
                if expected and expected != digest.hexdigest():
                    raise ClientError(f"artifact {artifact_id}: the download is corrupted (sha256 mismatch)")
        return dest

    # --- plumbing ---------------------------------------------------------------------------------

    def _create(self, path: str, body: Mapping[str, Any], idempotency_key: str | None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        created: dict[str, Any] = self._request(
            "POST", path, json=dict(body), headers=headers, retry=True
        ).json()
        return created

    def _get_json(self, path: str, **kwargs: Any) -> dict[str, Any]:
        document: dict[str, Any] = self._request("GET", path, retry=True, **kwargs).json()
        return document

    def _items(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        query = {k: v for k, v in params.items() if v is not None}
        while True:
            page = self._get_json(path, params=query)
            yield from page["data"]
            if not page.get("next_cursor"):
                return
            query["cursor"] = page["next_cursor"]

    def _upload(self, path: str, file: str | os.PathLike[str], fields: dict[str, Any]) -> Upload[Any]:
        file = Path(file)
        if not file.is_file():
            raise ClientError(f"{file}: no such file")
        data = {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items() if v is not None}
        hint = "a file over the server's SBAUDIT_MAX_UPLOAD_BYTES also ends the connection early"
        with open(file, "rb") as fh:
            files = {"file": (file.name, fh, "application/octet-stream")}
            response = self._request("POST", path, data=data, files=files, timeout=UPLOAD_TIMEOUT, hint=hint)
        return Upload(resource=response.json(), created=response.status_code == 201)

    def _request(
        self, method: str, path: str, *, retry: bool = False, hint: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        """Send, retrying (when ``retry``) connection errors and 502/503/504; raise on an error status."""
        attempts = 1 + (self.retries if retry else 0)
        for attempt in range(attempts):
            last = attempt + 1 == attempts
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if last:
                    raise ConnectionFailed(self.url, exc, hint) from None
                self._pause(attempt)
                continue
            if response.status_code in RETRY_STATUSES and not last:
                self._pause(attempt)
                continue
            if response.is_error:
                raise ApiError.from_response(response)
            return response
        raise AssertionError("unreachable")  # the loop returns or raises

    @contextmanager
    def _stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed response (errors read and raised as ApiError; transport errors as ConnectionFailed)."""
        try:
            with self._http.stream(method, path, **kwargs) as response:
                if response.is_error:
                    response.read()
                    raise ApiError.from_response(response)
                yield response
        except httpx.TransportError as exc:
            raise ConnectionFailed(self.url, exc) from None

    def _pause(self, attempt: int) -> None:
        time.sleep(self.backoff * 2**attempt)


@contextmanager
def _replacing(dest: Path) -> Iterator[BinaryIO]:
    """A new temporary file beside ``dest``, renamed onto it when the block ends; removed if it raises, so
    a failed write never leaves a half-written ``dest`` (nor a stray temporary file)."""
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:12]}.part")
    try:
        with open(tmp, "xb") as fh:
            yield fh
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _folder(dest_path: str | os.PathLike[str]) -> bool:
    """Whether ``dest_path`` names a folder: an existing one, or one written with a trailing separator
    (``out/``), which is created."""
    text = os.fspath(dest_path)
    if text.endswith(("/", os.sep)) and not Path(text).is_dir():
        Path(text).mkdir(parents=True)
    return Path(text).is_dir()


def _served_filename(response: httpx.Response, *, fallback: str) -> str:
    """The file name from Content-Disposition, reduced to a plain name (never a path)."""
    match = _FILENAME.search(response.headers.get("content-disposition", ""))
    name = Path(match.group(1)).name if match else ""
    return name if name not in ("", ".", "..") else fallback
