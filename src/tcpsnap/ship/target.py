"""Where shipped files go: an S3 bucket and prefix, through boto3.

Why boto3 and not pyarrow's ``S3FileSystem`` (which tcpsnap already has): shipping must
*prove* an upload before a local file may go. boto3 gives the S3 calls that do it: a PUT
carrying ``ChecksumSHA256`` (the server refuses bytes that do not match), a HEAD returning
the stored size, checksum and metadata, and explicit multipart uploads that we abort on
failure and find again after a crash (``ListMultipartUploads``). pyarrow's output stream
hides all of these, and a killed writer leaves its incomplete multipart upload behind.
Credentials come from boto3's standard chain (environment, ``~/.aws``, an instance role).

Objects: one per file, never rewritten; a file of at most ``part_size`` bytes is one PUT
(an object appears whole or not at all), a larger one a multipart upload whose parts each
carry their SHA-256. A crash mid-upload leaves no object, only an incomplete upload that
the next run aborts (and that a bucket lifecycle rule ``AbortIncompleteMultipartUpload``
removes too, if no run comes). Uploads are never aborted below the prefix at large:
other hosts ship there at the same time.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
from dataclasses import dataclass
from typing import Any

from .._errors import ShipError, UsageError

__all__ = ["Target", "Transient", "parse_url", "sha256_file", "DEFAULT_PART_SIZE"]

#: Files up to this size are one PUT; larger ones go in parts of this size (S3's minimum
#: part is 5 MiB).
DEFAULT_PART_SIZE = 16 << 20
MIN_PART_SIZE = 5 << 20
#: The object metadata key (``x-amz-meta-tcpsnap-sha256``) holding the whole file's
#: SHA-256 (hex): a multipart object's own checksum is of its parts, not of the file.
META_SHA = "tcpsnap-sha256"
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_READ = 1 << 20

# The S3 error codes that no retry will fix: said at once, in one line.
_FATAL = {"AccessDenied", "NoSuchBucket", "InvalidAccessKeyId", "SignatureDoesNotMatch",
          "InvalidBucketName", "AllAccessDisabled", "AccountProblem", "InvalidToken",
          "ExpiredToken", "InvalidArgument", "InvalidRequest"}


class Transient(Exception):
    """A failure worth retrying (the network, the server busy or down)."""


def parse_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix/")`` (prefix "" or ending
    in ``/``); ``UsageError`` for anything else."""
    m = re.match(r"^s3://([^/]+)(?:/(.*))?$", url or "")
    if not m or not _BUCKET_RE.match(m.group(1)):
        raise UsageError(f"{url!r} is not an S3 URL: give s3://BUCKET or s3://BUCKET/PREFIX "
                         f"(BUCKET: 3-63 lowercase letters, digits, '.', '-')")
    prefix = (m.group(2) or "").strip("/")
    if any(p in ("", ".", "..") for p in prefix.split("/")) and prefix:
        raise UsageError(f"{url!r}: the prefix has an empty, '.' or '..' part")
    return m.group(1), prefix + "/" if prefix else ""


def sha256_file(fd: int, size: int) -> str:
    """The hex SHA-256 of the first ``size`` bytes of ``fd`` (read with pread)."""
    h = hashlib.sha256()
    pos = 0
    while pos < size:
        b = os.pread(fd, min(_READ, size - pos), pos)
        if not b:
            raise ShipError(f"file shrank while shipping (fd {fd})")
        h.update(b)
        pos += len(b)
    return h.hexdigest()


@dataclass
class Head:
    size: int
    sha256_hex: str | None


class Target:
    """An S3 bucket and prefix (``s3://bucket/prefix``) on AWS or any S3-compatible
    endpoint (``endpoint_url``). ``limit_rate``: bytes per second at most (None: no
    limit). Raises ``UsageError`` for a bad URL, ``ShipError`` when boto3 is missing."""

    def __init__(self, url: str, *, endpoint_url: str | None = None,
                 part_size: int = DEFAULT_PART_SIZE, limit_rate: int | None = None) -> None:
        self.url = url
        self.bucket, self.prefix = parse_url(url)
        if part_size < MIN_PART_SIZE:
            raise UsageError(f"part size must be at least 5MiB (S3's minimum), got {part_size}")
        self.part_size = part_size
        self.limit_rate = limit_rate
        self.endpoint_url = endpoint_url
        try:
            import boto3
            import botocore.config
            import botocore.exceptions
        except ImportError:
            raise ShipError("shipping needs boto3: pip install 'tcpsnap[ship]'") from None
        self._exc = botocore.exceptions
        session = boto3.session.Session()
        if session.get_credentials() is None:
            raise ShipError("no AWS credentials found (environment AWS_ACCESS_KEY_ID/"
                            "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws/credentials or an "
                            "instance role): shipping needs them")
        # botocore retries once quickly; the shipper's own backoff does the long waits
        cfg = botocore.config.Config(retries={"max_attempts": 2, "mode": "standard"},
                                     connect_timeout=5, read_timeout=60,
                                     request_checksum_calculation="when_required",
                                     response_checksum_validation="when_required")
        self.s3: Any = session.client("s3", endpoint_url=endpoint_url, config=cfg,
                                      region_name=session.region_name or "us-east-1")

    def key(self, date: str, host: str, name: str) -> str:
        """The object key of a file: fleet partitions first, ``date=`` then ``host=``."""
        return f"{self.prefix}date={date}/host={host}/{name}"

    def where(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    # -- errors -------------------------------------------------------------------------

    def _call(self, what: str, fn: Any, **kw: Any) -> Any:
        """One S3 call; a network or server failure becomes ``Transient``, a refusal no
        retry can fix a ``ShipError``."""
        exc = self._exc
        try:
            return fn(**kw)
        except exc.NoCredentialsError:
            raise ShipError("no AWS credentials found: shipping needs them") from None
        except exc.ClientError as e:
            err = e.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if code in _FATAL or status in (400, 401, 403) or code == "404" and what == "bucket":
                raise ShipError(f"{what} {self.where(kw.get('Key', ''))}: {code}: "
                                f"{err.get('Message', '')}".rstrip(": ")) from None
            raise Transient(f"{what}: {code or status}: {err.get('Message', '')}") from None
        except (exc.BotoCoreError, OSError) as e:
            raise Transient(f"{what}: {e}") from None

    def check_bucket(self) -> None:
        """``ShipError`` if the bucket does not exist or refuses us; ``Transient`` if the
        endpoint cannot be reached."""
        self._call("bucket", self.s3.head_bucket, Bucket=self.bucket)

    # -- objects ------------------------------------------------------------------------

    def head(self, key: str) -> Head | None:
        """The stored object's size and whole-file SHA-256 (hex, from its metadata), or
        None if there is no object."""
        try:
            r = self.s3.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except self._exc.ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                return None
            return self._call("HEAD", self.s3.head_object, Bucket=self.bucket, Key=key)
        except (self._exc.BotoCoreError, OSError) as e:
            raise Transient(f"HEAD: {e}") from None
        sha = (r.get("Metadata") or {}).get(META_SHA)
        stored = r.get("ChecksumSHA256")
        multipart = "-" in str(r.get("ETag", "")) or r.get("ChecksumType") == "COMPOSITE"
        if stored and not multipart and sha is not None:
            # a single PUT: S3's own checksum of the stored bytes must say the same (a
            # multipart object's checksum is of its parts' checksums, each verified by S3)
            if base64.b64decode(stored.split("-")[0]).hex() != sha:
                sha = None
        return Head(int(r["ContentLength"]), sha)

    def upload(self, key: str, fd: int, size: int, sha_hex: str) -> None:
        """Upload ``size`` bytes of ``fd`` to ``key``, each request checksummed; on any
        failure a multipart upload is aborted (no partial object, ever)."""
        meta = {META_SHA: sha_hex}
        if size <= self.part_size:
            body = os.pread(fd, size, 0) if size else b""
            self._throttle(len(body), time.monotonic())
            self._call("PUT", self.s3.put_object, Bucket=self.bucket, Key=key, Body=body,
                       ChecksumSHA256=base64.b64encode(hashlib.sha256(body).digest()).decode(),
                       ChecksumAlgorithm="SHA256", Metadata=meta, ContentType="application/vnd.apache.parquet")
            return
        up = self._call("PUT", self.s3.create_multipart_upload, Bucket=self.bucket, Key=key,
                        Metadata=meta, ChecksumAlgorithm="SHA256",
                        ContentType="application/vnd.apache.parquet")
        uid = up["UploadId"]
        try:
            parts = []
            pos, n = 0, 1
            while pos < size:
                t0 = time.monotonic()
                body = os.pread(fd, min(self.part_size, size - pos), pos)
                digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
                r = self._call("PUT part", self.s3.upload_part, Bucket=self.bucket, Key=key,
                               UploadId=uid, PartNumber=n, Body=body, ChecksumSHA256=digest,
                               ChecksumAlgorithm="SHA256")
                parts.append({"PartNumber": n, "ETag": r["ETag"], "ChecksumSHA256": digest})
                pos += len(body)
                n += 1
                self._throttle(len(body), t0)
            self._call("PUT", self.s3.complete_multipart_upload, Bucket=self.bucket, Key=key,
                       UploadId=uid, MultipartUpload={"Parts": parts})
        except BaseException:
            self.abort(key, uid)
            raise

    def abort(self, key: str, upload_id: str) -> None:
        try:
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except (self._exc.BotoCoreError, self._exc.ClientError, OSError):
            pass  # found and aborted by the next run (abort_stale), or by a lifecycle rule

    def abort_stale(self, key: str) -> int:
        """Abort the incomplete multipart uploads of ``key`` (what a killed shipper left:
        never an object, but billed storage). Only that key's: other hosts ship below the
        same prefix at the same time. Returns how many."""
        n = 0
        r = self._call("LIST uploads", self.s3.list_multipart_uploads, Bucket=self.bucket, Prefix=key)
        for u in r.get("Uploads") or []:
            if u.get("Key") == key:
                self.abort(key, u["UploadId"])
                n += 1
        return n

    def _throttle(self, nbytes: int, t0: float) -> None:
        if self.limit_rate:
            wait = nbytes / self.limit_rate - (time.monotonic() - t0)
            if wait > 0:
                time.sleep(wait)
