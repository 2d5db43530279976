"""The inference log of safe rollout: sampled request/response records of a serving endpoint, written in
batches as Parquet files under the team's S3 prefix, read back by the controller for the live gates
(latency p50/p99, error rate, champion/candidate agreement, drift of live inputs).

Written by the rollout gateway's evidence shipper (mlplatform_service/evidence.py), outside the team's code:

    log = InferenceLog(S3Writer(s3, bucket, prefix), sample_rate=0.1)   # once per team and endpoint
    log.record(InferenceRecord(request_id=rid, endpoint="iris", side="champion", mode="shadow",
                               model_version="3", time=started, latency_ms=4.2, status=200,
                               inputs=body_text, outputs=predictions))
    log.close(timeout=10)                                               # at shutdown: writes what is left

`record` never blocks on S3 and never raises: it samples, appends to a bounded buffer and returns (a
few µs). A daemon thread takes batches of `batch_rows` records (or what there is every
`flush_seconds`), converts them to Parquet and hands them to the writer; a failing or slow S3 keeps
that thread retrying (exponential backoff) while `record` goes on returning at once. The buffer holds
at most `max_buffered_rows` records (and about `max_buffered_bytes` of inputs and outputs), the batch
being written included: beyond that a record is dropped and counted. Sampling is decided by a hash of
the request id (and `seed`), so both sides of a mirrored request, in whichever replica or process
they are logged, are kept or left out together.

Objects (Hive-style partitions, so a window read lists only the hours it needs):

    <team prefix>inference-log/<endpoint>/date=YYYY-MM-DD/hour=HH/<first record's time>-<uuid>.parquet

one object per endpoint and UTC hour of each batch; columns (`schema()`, `COLUMNS`): request_id, endpoint, side
(champion | candidate), mode (single | shadow | canary), model_version, time (UTC, µs: when the
request arrived), latency_ms, status (HTTP), error (null when none), inputs (JSON text: the request's
rows in any form /predict accepts, records or split orient, bare or wrapped), outputs (JSON text: the
answer's predictions), key (the routing key, null when none).

The controller:

    df = read_window(s3, bucket, team_prefix, "iris", since, until)    # records in [since, until), by time
    live = input_frame(df)                                               # feature columns, one copy per request
    prune(s3, bucket, team_prefix, older_than_days=30)                   # retention, daily
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time as _time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)

SIDES = ("champion", "candidate")
MODES = ("single", "shadow", "canary")
FOLDER = "inference-log/"  # under the team's prefix
# Defaults of the catalog's serving.inference_log section (the service passes its values).
DEFAULTS = {"sample_rate": 1.0, "batch_rows": 1000, "flush_seconds": 10.0, "max_buffered_rows": 20000,
            "max_buffered_mb": 64, "retention_days": 30}
_RECORD_OVERHEAD = 256  # bytes a record costs besides its inputs and outputs, for the byte bound
_FILE_TIME = "%Y%m%dT%H%M%S.%fZ"


@dataclass(slots=True)
class InferenceRecord:
    """One answer of one side to one request. `inputs` and `outputs` may be JSON text (the request body
    as received: no cost on the response path) or JSON-able values / a DataFrame, serialised later by
    the log's thread (so not to be changed after `record`). `time`: when the request arrived (UTC;
    naive times are taken as UTC). Fields are checked by the log's thread, not here: a record that does
    not fit (an unknown side or mode, a latency that is not a number) is left out and counted."""

    request_id: str
    endpoint: str
    side: str  # "champion" | "candidate"
    mode: str  # "single" | "shadow" | "canary"
    model_version: str
    latency_ms: float
    status: int  # HTTP status of this side's answer
    error: str | None = None
    inputs: Any = None
    outputs: Any = None
    key: str | None = None  # the routing key that pinned the caller to a side, if any
    time: datetime = field(default_factory=lambda: datetime.now(UTC))


def schema() -> pa.Schema:
    """The columns of every inference-log file, in order."""
    import pyarrow as pa

    return pa.schema([
        ("request_id", pa.string()), ("endpoint", pa.string()), ("side", pa.string()), ("mode", pa.string()),
        ("model_version", pa.string()), ("time", pa.timestamp("us", tz="UTC")), ("latency_ms", pa.float64()),
        ("status", pa.int32()), ("error", pa.string()), ("inputs", pa.string()), ("outputs", pa.string()),
        ("key", pa.string())])


COLUMNS = ("request_id", "endpoint", "side", "mode", "model_version", "time", "latency_ms", "status", "error",
           "inputs", "outputs", "key")


class Writer(Protocol):
    def write(self, endpoint: str, first_time: datetime, data: bytes) -> str:
        """Store one Parquet file of `endpoint`'s records, all of them in the UTC hour of `first_time`
        (their earliest time); returns where. Raises on failure (the log retries)."""


# --- writing -----------------------------------------------------------------------------------------

class InferenceLog:
    """A bounded, sampled buffer of InferenceRecords flushed by a daemon thread through `writer`.

    Counters (read them any time; `stats()` has them all): `recorded` records accepted, `skipped` left
    out by sampling, `written` rows stored, `dropped` records lost (buffer full, invalid, not written
    by the close deadline, or recorded after close), `invalid` of those the ones that could not be
    converted, `failed_batches` failed write attempts (each retry counts), `buffered` accepted and not
    yet written."""

    def __init__(self, writer: Writer, *, sample_rate: float = 1.0, batch_rows: int = 1000,
                 flush_seconds: float = 10.0, max_buffered_rows: int = 20000,
                 max_buffered_bytes: int = DEFAULTS["max_buffered_mb"] * 2**20, seed: int | str | None = None,
                 retry_initial_seconds: float = 0.5, retry_max_seconds: float = 30.0):
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"sample_rate is {sample_rate!r}; allowed: 0 to 1")
        if batch_rows < 1 or max_buffered_rows < batch_rows:
            raise ValueError(f"batch_rows {batch_rows!r} and max_buffered_rows {max_buffered_rows!r}: need "
                             "1 ≤ batch_rows ≤ max_buffered_rows")
        if flush_seconds <= 0 or max_buffered_bytes <= 0 or retry_initial_seconds <= 0 \
                or retry_max_seconds < retry_initial_seconds:
            raise ValueError("flush_seconds, max_buffered_bytes and the retry times must be positive "
                             "(retry_max_seconds ≥ retry_initial_seconds)")
        import pyarrow.parquet  # noqa: F401 (now, at the replica's start: a first import in the thread would hold the GIL ~0.3 s)

        self.writer = writer
        self.sample_rate = float(sample_rate)
        self.batch_rows = int(batch_rows)
        self.flush_seconds = float(flush_seconds)
        self.max_buffered_rows = int(max_buffered_rows)
        self.max_buffered_bytes = int(max_buffered_bytes)
        self.retry_initial_seconds = float(retry_initial_seconds)
        self.retry_max_seconds = float(retry_max_seconds)
        self._hasher = hashlib.blake2b(digest_size=8, key=b"" if seed is None else str(seed).encode()[:64])
        self.recorded = self.skipped = self.written = self.dropped = self.invalid = self.failed_batches = 0
        self._buffer: deque[tuple[InferenceRecord, int]] = deque()
        self._pending_rows = 0  # accepted, not yet written or given up (the batch in flight included)
        self._pending_bytes = 0
        self._finished = 0  # accepted and then written or given up: flush() waits on it
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # the same lock: flush() waits on it
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._closed = False
        self._flush_now = False
        self._deadline = float("inf")
        self._gave_up = False  # accepted records lost at close
        self._failing_since: float | None = None
        self._last_warning = float("-inf")
        self._thread = threading.Thread(target=self._run, name="inference-log", daemon=True)
        self._thread.start()

    @classmethod
    def from_settings(cls, writer: Writer, settings: Mapping[str, Any] | None = None, **kwargs) -> InferenceLog:
        """A log with the catalog's serving.inference_log settings (missing ones: DEFAULTS)."""
        settings = {**DEFAULTS, **(settings or {})}
        return cls(writer, sample_rate=float(settings["sample_rate"]), batch_rows=int(settings["batch_rows"]),
                   flush_seconds=float(settings["flush_seconds"]),
                   max_buffered_rows=int(settings["max_buffered_rows"]),
                   max_buffered_bytes=int(float(settings["max_buffered_mb"]) * 2**20), **kwargs)

    # --- the response path ---------------------------------------------------------------------
    def sampled(self, request_id: str) -> bool:
        """Whether `request_id` is logged: the same answer in every process with the same seed and rate."""
        if self.sample_rate >= 1.0:
            return True
        if self.sample_rate <= 0.0:
            return False
        hasher = self._hasher.copy()  # blake2b(request_id, key=seed), a copy being cheaper than a new one
        hasher.update(str(request_id).encode())
        digest = hasher.digest()
        return int.from_bytes(digest, "big") < self.sample_rate * 18446744073709551616  # 2**64

    def record(self, rec: InferenceRecord) -> bool:
        """Keep `rec` for the next batch if sampled and there is room; True if kept. Never blocks on
        I/O, never raises."""
        try:
            if not self.sampled(rec.request_id):
                with self._lock:
                    self.skipped += 1
                return False
            size = _RECORD_OVERHEAD + _size(rec.inputs) + _size(rec.outputs)
            with self._lock:
                if (self._closed or self._pending_rows >= self.max_buffered_rows
                        or self._pending_bytes + size > self.max_buffered_bytes):
                    self.dropped += 1
                    return False
                self._pending_rows += 1
                self._pending_bytes += size
                self.recorded += 1
                self._buffer.append((rec, size))
                full = len(self._buffer) >= self.batch_rows
            if full and not self._wake.is_set():
                self._wake.set()
            return True
        except Exception:  # a record we cannot even look at: lost, counted, never the caller's problem
            with self._lock:
                self.dropped += 1
                self.invalid += 1
            return False

    # --- control -------------------------------------------------------------------------------
    @property
    def buffered(self) -> int:
        return self._pending_rows

    def stats(self) -> dict[str, int]:
        with self._cond:
            return {"recorded": self.recorded, "skipped": self.skipped, "written": self.written,
                    "dropped": self.dropped, "invalid": self.invalid, "failed_batches": self.failed_batches,
                    "buffered": self._pending_rows}

    def flush(self, timeout: float | None = None) -> bool:
        """Write what was recorded so far now (not waiting for batch_rows or flush_seconds); True
        once all of it is written (or given up), False if `timeout` passed first."""
        with self._cond:
            target = self.recorded
            self._flush_now = True
        self._wake.set()
        with self._cond:
            return self._cond.wait_for(lambda: self._finished >= target, timeout)

    def close(self, timeout: float = 30.0) -> bool:
        """Stop accepting records, write what is buffered (retrying until `timeout`), stop the thread.
        True if everything accepted was written; what could not be is counted in `dropped`."""
        with self._cond:
            if not self._closed:
                self._closed = True
                self._deadline = _time.monotonic() + timeout
        self._closing.set()
        self._wake.set()
        self._thread.join(max(0.0, self._deadline - _time.monotonic()) + 0.5)
        with self._cond:
            return self._pending_rows == 0 and not self._gave_up

    def __enter__(self) -> InferenceLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- the thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        next_flush = _time.monotonic() + self.flush_seconds
        while True:
            self._wake.wait(max(0.0, next_flush - _time.monotonic()))
            self._wake.clear()
            closing = self._closing.is_set()
            with self._cond:
                due = self._flush_now or _time.monotonic() >= next_flush
                self._flush_now = False
                target = len(self._buffer) if (closing or due) else 0
            try:
                while self._buffer and (target > 0 or len(self._buffer) >= self.batch_rows):
                    if closing and _time.monotonic() >= self._deadline:
                        break
                    batch = self._take()
                    target -= len(batch)
                    self._write(batch)
            except Exception:  # a bug of ours: logged; the thread must go on
                log.exception("inference log: flushing failed")
            if due:
                next_flush = _time.monotonic() + self.flush_seconds
            if closing:
                with self._cond:
                    rest = [size for _, size in self._buffer]
                    self._buffer.clear()
                self._give_up(len(rest), sum(rest), "not written before the close deadline", at_close=True)
                return

    def _take(self) -> list[tuple[InferenceRecord, int]]:
        batch = []
        with self._cond:
            while self._buffer and len(batch) < self.batch_rows:
                batch.append(self._buffer.popleft())
        return batch

    def _write(self, batch: list[tuple[InferenceRecord, int]]) -> None:
        try:
            parts, invalid, invalid_bytes = _parts(batch)
        except Exception:  # not one bad record (those are left out alone) but the batch: lost, counted
            log.exception("inference log: a batch of %d records could not be converted", len(batch))
            parts, invalid, invalid_bytes = [], len(batch), sum(size for _, size in batch)
        del batch
        if invalid:
            with self._cond:
                self.invalid += invalid
            self._give_up(invalid, invalid_bytes, "invalid")
        for i, (endpoint, first, data, rows, size) in enumerate(parts):
            if not self._store(endpoint, first, data):
                rest = parts[i:]
                self._give_up(sum(p[3] for p in rest), sum(p[4] for p in rest),
                              "not written before the close deadline", at_close=True)
                return
            with self._cond:
                self.written += rows
                self._pending_rows -= rows
                self._pending_bytes -= size
                self._finished += rows
                self._cond.notify_all()

    def _store(self, endpoint: str, first: datetime, data: bytes) -> bool:
        """Write one file, retrying with backoff; False only when closing and past the deadline."""
        delay = self.retry_initial_seconds
        while True:
            try:
                self.writer.write(endpoint, first, data)
                if self._failing_since is not None:
                    log.info("inference log: writing again after %.0f s of failures",
                             _time.monotonic() - self._failing_since)
                    self._failing_since = None
                return True
            except Exception as e:
                with self._cond:
                    self.failed_batches += 1
                now = _time.monotonic()
                if self._failing_since is None:
                    self._failing_since = now
                if now - self._last_warning >= 60:
                    self._last_warning = now
                    log.warning("inference log: writing a batch failed (%s: %s); retrying, %d records buffered",
                                type(e).__name__, e, self._pending_rows)
            wait = delay * random.uniform(0.8, 1.2)
            delay = min(delay * 2, self.retry_max_seconds)
            if self._closing.is_set():
                left = self._deadline - _time.monotonic()
                if left <= 0:
                    return False
                _time.sleep(min(wait, left))
            else:
                self._closing.wait(wait)

    def _give_up(self, rows: int, size: int, why: str, *, at_close: bool = False) -> None:
        if not rows:
            return
        with self._cond:
            self.dropped += rows
            self._pending_rows -= rows
            self._pending_bytes -= size
            self._finished += rows
            self._gave_up = self._gave_up or at_close
            self._cond.notify_all()
        log.warning("inference log: %d records dropped (%s)", rows, why)


def _size(value: Any) -> int:
    """About what `value` holds, in bytes, without walking it (the response path)."""
    if value is None:
        return 0
    if isinstance(value, (str, bytes, bytearray)):
        return len(value)
    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple) and shape:
        cells = 1
        for n in shape:
            cells *= int(n)
        return 16 * cells
    if isinstance(value, (list, tuple, dict)):
        return 64 * len(value)
    return 64


def _utc(moment: datetime) -> datetime:
    if not isinstance(moment, datetime):
        raise TypeError(f"a time must be a datetime; got {type(moment).__name__}")
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode()
    from .payload import jsonable

    return json.dumps(jsonable(value), separators=(",", ":"), default=str)


def _optional_text(value: Any) -> str | None:
    return None if value is None else str(value)


def _row(rec: InferenceRecord) -> tuple:
    """The record as a row of SCHEMA's columns; raises on a record that does not fit."""
    if rec.side not in SIDES:
        raise ValueError(f"side {rec.side!r}; allowed: {', '.join(SIDES)}")
    if rec.mode not in MODES:
        raise ValueError(f"mode {rec.mode!r}; allowed: {', '.join(MODES)}")
    status = int(rec.status)
    if not 0 <= status < 1000:
        raise ValueError(f"status {rec.status!r}")
    return (str(rec.request_id), str(rec.endpoint), rec.side, rec.mode, str(rec.model_version), _utc(rec.time),
            float(rec.latency_ms), status, _optional_text(rec.error), _json_text(rec.inputs),
            _json_text(rec.outputs), _optional_text(rec.key))


def _parts(batch: list[tuple[InferenceRecord, int]]) -> tuple[list[tuple], int, int]:
    """The batch as Parquet files, one per endpoint and UTC hour: (endpoint, first time, bytes, rows,
    buffered size) each, and the number and size of records that could not be converted."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    groups: dict[tuple[str, datetime], list[tuple[tuple, int]]] = {}
    invalid = invalid_bytes = 0
    first_error = None
    for rec, size in batch:
        try:
            row = _row(rec)
        except Exception as e:
            invalid += 1
            invalid_bytes += size
            first_error = first_error or e
            continue
        hour = row[5].replace(minute=0, second=0, microsecond=0)
        groups.setdefault((row[1], hour), []).append((row, size))
    if first_error is not None:
        log.warning("inference log: %d invalid records left out, the first: %s: %s", invalid,
                    type(first_error).__name__, first_error)
    target = schema()
    parts = []
    for (endpoint, _), members in groups.items():
        members.sort(key=lambda m: m[0][5])
        rows = [m[0] for m in members]
        columns = [pa.array([r[i] for r in rows], type=f.type) for i, f in enumerate(target)]
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_arrays(columns, schema=target), sink, compression="zstd")
        parts.append((endpoint, rows[0][5], sink.getvalue().to_pybytes(), len(rows), sum(m[1] for m in members)))
    return parts, invalid, invalid_bytes


# --- S3 layout ---------------------------------------------------------------------------------------

def _root(prefix: str) -> str:
    prefix = prefix or ""
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return prefix + FOLDER


def endpoint_prefix(prefix: str, endpoint: str) -> str:
    """Where `endpoint`'s records are, under the team `prefix`."""
    return f"{_root(prefix)}{quote(endpoint, safe='')}/"


def _date_prefix(base: str, day: datetime) -> str:
    return f"{base}date={day:%Y-%m-%d}/"


def _hour_prefix(base: str, hour: datetime) -> str:
    return f"{base}date={hour:%Y-%m-%d}/hour={hour:%H}/"


def object_key(prefix: str, endpoint: str, first_time: datetime) -> str:
    """A new object's key for records of `endpoint` from `first_time` on (all in its UTC hour)."""
    first = _utc(first_time)
    return f"{_hour_prefix(endpoint_prefix(prefix, endpoint), first)}{first.strftime(_FILE_TIME)}-{uuid.uuid4().hex}.parquet"


def _file_time(key: str) -> datetime | None:
    name = key.rsplit("/", 1)[-1]
    try:
        return datetime.strptime(name.split("-", 1)[0], _FILE_TIME).replace(tzinfo=UTC)
    except ValueError:
        return None


class S3Writer:
    """Writes the log's files to `bucket` under the team `prefix` (see the module docstring)."""

    def __init__(self, client: Any, bucket: str, prefix: str):
        self.client, self.bucket, self.prefix = client, bucket, prefix

    def write(self, endpoint: str, first_time: datetime, data: bytes) -> str:
        key = object_key(self.prefix, endpoint, first_time)
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType="application/vnd.apache.parquet")
        return key


# --- reading -----------------------------------------------------------------------------------------

def _list(client: Any, bucket: str, prefix: str, delimiter: str | None = None) -> Iterator[dict]:
    """Pages of ListObjectsV2 (plain calls, so any client with list_objects_v2 does)."""
    params = {"Bucket": bucket, "Prefix": prefix, **({"Delimiter": delimiter} if delimiter else {})}
    while True:
        page = client.list_objects_v2(**params)
        yield page
        if not page.get("IsTruncated"):
            return
        params["ContinuationToken"] = page["NextContinuationToken"]


def _keys(client: Any, bucket: str, prefix: str) -> list[str]:
    return [o["Key"] for page in _list(client, bucket, prefix) for o in page.get("Contents", [])]


def _children(client: Any, bucket: str, prefix: str) -> list[str]:
    """The "folders" right under `prefix` (their names, without it or the slash)."""
    return [p["Prefix"][len(prefix):].rstrip("/") for page in _list(client, bucket, prefix, "/")
            for p in page.get("CommonPrefixes", [])]


def window_prefixes(prefix: str, endpoint: str, since: datetime, until: datetime) -> list[str]:
    """The partitions a read of [since, until) lists: a whole day's folder for each day it covers
    entirely, else one folder per hour."""
    since, until = _utc(since), _utc(until)
    base = endpoint_prefix(prefix, endpoint)
    out = []
    hour = since.replace(minute=0, second=0, microsecond=0)
    while hour < until:
        day = hour.replace(hour=0)
        if hour == day and day + timedelta(days=1) <= until:
            out.append(_date_prefix(base, day))
            hour = day + timedelta(days=1)
        else:
            out.append(_hour_prefix(base, hour))
            hour += timedelta(hours=1)
    return out


def read_window(client: Any, bucket: str, prefix: str, endpoint: str, since: datetime, until: datetime, *,
                max_workers: int = 8) -> pd.DataFrame:
    """Every record of `endpoint` with `since` ≤ time < `until` (naive times taken as UTC), ordered by
    time (then request id and side), as a DataFrame with SCHEMA's columns; empty when there are none."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    since, until = _utc(since), _utc(until)
    keys = []
    if since < until:
        for part in window_prefixes(prefix, endpoint, since, until):
            for key in _keys(client, bucket, part):
                first = _file_time(key)
                if key.endswith(".parquet") and (first is None or first < until):
                    keys.append(key)

    def fetch(key: str) -> pa.Table:
        data = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        return pq.read_table(pa.BufferReader(data))

    target = schema()
    if keys:
        with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(keys)))) as pool:
            tables = list(pool.map(fetch, keys))
        table = pa.concat_tables(tables, promote_options="default")
        times = table["time"]
        table = table.filter(pc.and_(pc.greater_equal(times, pa.scalar(since, target.field("time").type)),
                                     pc.less(times, pa.scalar(until, target.field("time").type))))
        table = table.sort_by([("time", "ascending"), ("request_id", "ascending"), ("side", "ascending")])
    else:
        table = target.empty_table()
    return table.to_pandas().reset_index(drop=True)


def _rows_of(doc: Any) -> list[dict]:
    """The rows of one /predict body (records or split orient, bare or wrapped; `inputs`/`instances` as
    /predict reads them, its `params` aside); [] for anything else."""
    if isinstance(doc, dict) and "params" in doc:
        doc = {key: value for key, value in doc.items() if key != "params"}
    if isinstance(doc, dict) and len(doc) == 1 and set(doc) & {"inputs", "instances"}:
        from .payload import PayloadError, tf_serving_frame

        try:
            return tf_serving_frame(*next(iter(doc.items()))).to_dict("records")
        except PayloadError:
            return []
    if isinstance(doc, dict) and len(doc) == 1:
        if "dataframe_records" in doc:
            doc = doc["dataframe_records"]
        elif "dataframe_split" in doc:
            doc = doc["dataframe_split"]
    if isinstance(doc, list):
        return [r for r in doc if isinstance(r, dict)]
    if isinstance(doc, dict) and isinstance(doc.get("columns"), list) and isinstance(doc.get("data"), list):
        columns = doc["columns"]
        return [dict(zip(columns, r)) for r in doc["data"] if isinstance(r, list) and len(r) == len(columns)]
    return []


def input_frame(df: pd.DataFrame, *, side: str | None = None) -> pd.DataFrame:
    """The live inputs of a window (read_window's frame) as one DataFrame of feature columns, one
    copy of each request's rows (a mirrored request is logged by both sides); `side` keeps only that
    side's requests. Bodies that are not rows (/generate prompts, unparseable text) are left out."""
    import pandas as pd

    frame = df if side is None else df[df["side"] == side]
    frame = frame.drop_duplicates("request_id", keep="first")
    rows: list[dict] = []
    for text in frame["inputs"]:
        if not isinstance(text, str):
            continue
        try:
            rows.extend(_rows_of(json.loads(text)))
        except ValueError:
            continue
    return pd.DataFrame.from_records(rows) if rows else pd.DataFrame()


# --- retention ---------------------------------------------------------------------------------------

def _delete(client: Any, bucket: str, keys: Iterable[str]) -> int:
    keys, deleted = list(keys), 0
    for i in range(0, len(keys), 1000):
        chunk = keys[i:i + 1000]
        answer = client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True})
        errors = answer.get("Errors") or []
        if errors:
            first = errors[0]
            raise RuntimeError(f"could not delete {len(errors)} inference-log objects, e.g. {first.get('Key')}: "
                               f"{first.get('Code')} {first.get('Message')}")
        deleted += len(chunk)
    return deleted


def prune(client: Any, bucket: str, prefix: str, endpoint: str | None = None, *, older_than_days: float,
          now: datetime | None = None) -> int:
    """Delete the partitions (UTC hours) of `endpoint` (default: every endpoint of the team `prefix`)
    whose records are all older than `older_than_days`; returns the number of objects deleted."""
    if older_than_days <= 0:
        raise ValueError(f"older_than_days is {older_than_days!r}; it must be positive")
    cutoff = _utc(now or datetime.now(UTC)) - timedelta(days=older_than_days)
    root = _root(prefix)
    endpoints = [quote(endpoint, safe="")] if endpoint is not None else _children(client, bucket, root)
    deleted = 0
    for name in endpoints:
        base = f"{root}{name}/"
        for date_folder in _children(client, bucket, base):
            try:
                day = datetime.strptime(date_folder, "date=%Y-%m-%d").replace(tzinfo=UTC)
            except ValueError:
                continue  # not ours: left alone
            if day + timedelta(days=1) <= cutoff:
                deleted += _delete(client, bucket, _keys(client, bucket, f"{base}{date_folder}/"))
            elif day < cutoff:
                for hour_folder in _children(client, bucket, f"{base}{date_folder}/"):
                    try:
                        hour = day + timedelta(hours=int(hour_folder.removeprefix("hour=")))
                    except ValueError:
                        continue
                    if hour_folder.startswith("hour=") and hour + timedelta(hours=1) <= cutoff:
                        deleted += _delete(client, bucket, _keys(client, bucket, f"{base}{date_folder}/{hour_folder}/"))
    return deleted
