"""An S3-compatible bucket holding attachment bytes, through aiobotocore (``burrow[s3]``).

Only the calls the attachments need (docs/attachments.md#s3-compatible-storage): a
presigned POST policy to upload one object of an exact size and type, ``HEAD``, a read
of an object pinned to the ETag that was checked, a server-side copy (pinned the same
way), deletes, and a presigned ``GET`` whose response headers S3 sets as the gateway
would. Nothing here decides anything about attachments: that is
:mod:`burrow.storage.s3attachments`.

aiobotocore is imported when the first call needs a client, never at import time: a
server installed without the extra still starts (and stores in GridFS). Every failure
to reach the bucket or of the bucket's answer, other than those the caller asks about
(a missing object, a changed one), is :exc:`Unavailable`, so callers handle one error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final

CHUNK_BYTES: Final = 256 * 1024


@dataclass(frozen=True)
class S3Config:
    """Where the bucket is and how to sign for it. No key (both None): botocore's
    credential chain (``AWS_*`` variables, ``~/.aws``, an instance or container role)."""

    bucket: str
    region: str
    endpoint_url: str | None
    access_key_id: str | None
    secret_access_key: str | None = field(repr=False)
    url_ttl: int  # seconds a presigned download URL lives
    grant_ttl: int  # seconds an upload policy lets its upload start
    attempts: int = 3  # tries of a call (botocore's standard retry mode)


@dataclass(frozen=True)
class Head:
    size: int
    etag: str
    content_type: str


class Unavailable(Exception):
    """The bucket could not be reached, or answered with an error we do not expect."""


class Changed(Exception):
    """The object is not the one checked (another upload replaced it), or is gone."""


class S3Blobs:
    """One aiobotocore client per process, opened at its first use (on the running loop)."""

    def __init__(self, config: S3Config) -> None:
        self.config = config
        self._client: Any = None
        self._stack = contextlib.AsyncExitStack()
        self._lock = asyncio.Lock()

    async def _s3(self) -> Any:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    from aiobotocore.session import get_session
                    from botocore.config import Config

                    cfg = self.config
                    style = "path" if cfg.endpoint_url else "auto"  # MinIO, moto, ... on a host:port
                    self._client = await self._stack.enter_async_context(
                        get_session().create_client(
                            "s3", region_name=cfg.region, endpoint_url=cfg.endpoint_url,
                            aws_access_key_id=cfg.access_key_id,
                            aws_secret_access_key=cfg.secret_access_key,
                            config=Config(signature_version="s3v4",
                                          s3={"addressing_style": style},
                                          connect_timeout=5, read_timeout=30,
                                          retries={"mode": "standard",
                                                   "max_attempts": cfg.attempts})))
        return self._client

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None

    @contextlib.asynccontextmanager
    async def _call(self, changed: tuple[str, ...] = ()) -> AsyncIterator[Any]:
        """The client, with botocore's errors turned into ours: a ClientError whose code
        is in *changed* is :exc:`Changed`, anything else :exc:`Unavailable`."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield await self._s3()
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in changed:
                raise Changed(code) from None
            raise Unavailable(f"S3 answered {code or 'an error'}") from None
        except (BotoCoreError, OSError) as exc:  # TimeoutError is an OSError
            raise Unavailable(f"S3 is unreachable: {type(exc).__name__}") from None

    async def upload_grant(self, key: str, content_type: str, size: int) -> dict[str, Any]:
        """A presigned POST policy for one object: this *key*, exactly *size* bytes
        (``content-length-range``), exactly this ``Content-Type``, starting within
        ``grant_ttl`` seconds. S3 refuses any other upload with it."""
        async with self._call() as s3:
            grant: dict[str, Any] = await s3.generate_presigned_post(
                Bucket=self.config.bucket, Key=key, Fields={"Content-Type": content_type},
                Conditions=[{"Content-Type": content_type},
                            ["content-length-range", size, size]],
                ExpiresIn=self.config.grant_ttl)
        return grant

    async def head(self, key: str) -> Head | None:
        """The object's size, ETag and type; None when there is none."""
        try:
            async with self._call(changed=("404", "NoSuchKey", "NotFound")) as s3:
                found = await s3.head_object(Bucket=self.config.bucket, Key=key)
        except Changed:
            return None
        return Head(int(found["ContentLength"]), str(found["ETag"]),
                    str(found.get("ContentType", "")))

    async def read(self, key: str, etag: str, first: int | None = None
                   ) -> AsyncGenerator[bytes, None]:
        """The object's bytes (its *first* ones only, with a ranged GET), in chunks, if it
        still has ETag *etag*; :exc:`Changed` if not."""
        extra = {"Range": f"bytes=0-{first - 1}"} if first else {}
        async with self._call(changed=("PreconditionFailed", "412", "NoSuchKey", "404")) as s3:
            found = await s3.get_object(Bucket=self.config.bucket, Key=key, IfMatch=etag,
                                        **extra)
            async with found["Body"] as body:
                async for piece in body.iter_chunks(CHUNK_BYTES):
                    yield piece

    async def copy(self, source: str, target: str, etag: str) -> None:
        """Copy *source* to *target* inside the bucket (no byte passes through us) if
        *source* still has ETag *etag*; :exc:`Changed` if not."""
        async with self._call(changed=("PreconditionFailed", "412", "NoSuchKey", "404")) as s3:
            await s3.copy_object(Bucket=self.config.bucket, Key=target,
                                 CopySource={"Bucket": self.config.bucket, "Key": source},
                                 CopySourceIfMatch=etag, MetadataDirective="COPY")

    async def delete(self, *keys: str) -> None:
        """Delete *keys*; one that is not there is no error (S3 answers 204 either way)."""
        async with self._call() as s3:
            for key in keys:
                await s3.delete_object(Bucket=self.config.bucket, Key=key)

    async def download_url(self, key: str, content_type: str, disposition: str,
                           cache_control: str) -> str:
        """A presigned GET of *key*, ``url_ttl`` seconds long, whose answer carries these
        ``Content-Type``, ``Content-Disposition`` and ``Cache-Control`` (S3's
        ``response-*`` overrides, signed with the rest: the holder cannot change them)."""
        async with self._call() as s3:
            url: str = await s3.generate_presigned_url(
                "get_object", ExpiresIn=self.config.url_ttl,
                Params={"Bucket": self.config.bucket, "Key": key,
                        "ResponseContentType": content_type,
                        "ResponseContentDisposition": disposition,
                        "ResponseCacheControl": cache_control})
        return url
