"""BURROW_ATTACHMENT_STORE=s3's settings (docs/attachments.md#s3-compatible-storage):
what a process starts with, the one-line refusals that never show the secret key, and
the servers still starting with GridFS where the ``s3`` extra is not installed."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from burrow.runtime.settings import ConfigError, Settings
from burrow.storage.attachments import Attachment
from burrow.storage.s3attachments import served_as
from burrow.storage.s3blobs import S3Config

ROOT = Path(__file__).resolve().parents[2]
BASE = {"BURROW_AMQP_URL": "amqp://u:p@127.0.0.1/burrow"}
SECRET = "Mk7-SeCrEt-MaRkEr-Qz9/abcdefghijklmnop"
S3 = {**BASE, "BURROW_ATTACHMENT_STORE": "s3", "BURROW_S3_BUCKET": "chat-files"}


def test_gridfs_by_default() -> None:
    settings = Settings.from_env(BASE)
    assert settings.attachment_store == "gridfs" and settings.s3_config() is None


def test_the_s3_config() -> None:
    settings = Settings.from_env({**S3, "BURROW_S3_ENDPOINT_URL": "http://127.0.0.1:9000/",
                                  "BURROW_S3_ACCESS_KEY_ID": "AKID",
                                  "BURROW_S3_SECRET_ACCESS_KEY": SECRET,
                                  "BURROW_S3_URL_TTL": "30", "BURROW_ATTACHMENT_URL_TTL": "120"})
    config = settings.s3_config()
    assert config == S3Config("chat-files", "us-east-1", "http://127.0.0.1:9000", "AKID",
                              SECRET, url_ttl=30, grant_ttl=120)
    assert SECRET not in repr(config)
    chain = Settings.from_env(S3).s3_config()  # no key: botocore's credential chain
    assert chain is not None and (chain.endpoint_url, chain.access_key_id,
                                  chain.secret_access_key, chain.url_ttl) == (None, None,
                                                                              None, 60)


@pytest.mark.parametrize(("env", "says"), [
    ({**BASE, "BURROW_ATTACHMENT_STORE": "s3"}, ("BURROW_ATTACHMENT_STORE=s3 needs "
                                                "BURROW_S3_BUCKET")),
    ({**BASE, "BURROW_ATTACHMENT_STORE": "S3"}, ("BURROW_ATTACHMENT_STORE='S3' is invalid "
                                                "(expected gridfs or s3)")),
    ({**BASE, "BURROW_S3_BUCKET": "chat-files"}, ("BURROW_S3_BUCKET is set but "
                                                 "BURROW_ATTACHMENT_STORE is gridfs")),
    ({**BASE, "BURROW_S3_SECRET_ACCESS_KEY": SECRET}, ("BURROW_S3_SECRET_ACCESS_KEY is set "
                                                      "but BURROW_ATTACHMENT_STORE is gridfs")),
    ({**S3, "BURROW_S3_SECRET_ACCESS_KEY": SECRET}, ("BURROW_S3_SECRET_ACCESS_KEY is set but "
                                                    "BURROW_S3_ACCESS_KEY_ID is not")),
    ({**S3, "BURROW_S3_ACCESS_KEY_ID": "AKID"}, ("BURROW_S3_ACCESS_KEY_ID is set but "
                                                "BURROW_S3_SECRET_ACCESS_KEY is not")),
    ({**S3, "BURROW_S3_ACCESS_KEY_ID": "AKID", "BURROW_S3_SECRET_ACCESS_KEY": SECRET + " x"},
     "BURROW_S3_SECRET_ACCESS_KEY is invalid (not a secret key"),
    ({**S3, "BURROW_S3_BUCKET": "Chat_Files"}, "BURROW_S3_BUCKET='Chat_Files' is invalid"),
    ({**S3, "BURROW_S3_REGION": "us east"}, "BURROW_S3_REGION='us east' is invalid"),
    ({**S3, "BURROW_S3_URL_TTL": "3601"}, ("BURROW_S3_URL_TTL='3601' is invalid (must be "
                                          "from 1 to 3600 seconds)")),
    ({**S3, "BURROW_S3_ENDPOINT_URL": "minio:9000"}, ("BURROW_S3_ENDPOINT_URL='minio:9000' "
                                                     "is invalid (expected an http")),
    ({**S3, "BURROW_S3_ENDPOINT_URL": "http://minio:9000/chat-files"},
     "expected scheme://host[:port] only"),
    ({**S3, "BURROW_S3_ENDPOINT_URL": "http://AKID:Mk7-Qz9@minio:9000"},
     "no user or password in the URL"),
    ({**S3, "BURROW_S3_ENDPOINT_URL": f"http://AKID:{SECRET}@minio:9000"},  # a '/' in it
     "BURROW_S3_ENDPOINT_URL='http://AKID:[redacted]@minio:9000' is invalid"),
])
def test_a_malformed_setting_is_one_line_without_the_secret(env: dict[str, str],
                                                             says: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(env)
    message = str(refused.value)
    assert says in message and "\n" not in message
    assert SECRET not in message and "Qz9" not in message, message


def test_s3_without_the_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "aiobotocore" else real(name, *a))
    with pytest.raises(ConfigError, match=r"^BURROW_ATTACHMENT_STORE=s3 needs aiobotocore, "
                                          r"which is not installed: pip install 'burrow\[s3\]'$"):
        Settings.from_env(S3)


def test_the_servers_start_without_the_extra() -> None:
    """aiobotocore and botocore made unimportable: the gateway's and the sequencer's code
    loads, and GridFS is the store (the S3 code imports them at its first call only)."""
    code = (
        "import sys\n"
        "sys.modules.update(aiobotocore=None, botocore=None)\n"
        "import gateway.app, consumers.sequencer\n"
        "from burrow.runtime.settings import Settings\n"
        "from burrow.storage.s3attachments import attachment_store\n"
        "from burrow.storage.attachments import AttachmentStore, Limits\n"
        "from pymongo import AsyncMongoClient\n"
        "s = Settings.from_env({'BURROW_AMQP_URL': 'amqp://u:p@h/v'})\n"
        "db = AsyncMongoClient('mongodb://127.0.0.1:9', connect=False)['x']\n"
        "store = attachment_store(db, Limits(1, frozenset(), 1), s.s3_config())\n"
        "assert type(store) is AttachmentStore\n")
    done = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_served_as_the_gridfs_download_serves() -> None:
    def of(kind: str, name: str) -> Attachment:
        return Attachment("0" * 24, "r", "ann", name, kind, 1, "", None, None, "attached",
                          "m", "s3")

    assert served_as(of("image/png", "cat 1.png")) == (
        "image/png", "inline; filename*=UTF-8''cat%201.png")
    assert served_as(of("text/plain", "a;b\".txt")) == (
        "text/plain; charset=utf-8", "attachment; filename*=UTF-8''a%3Bb%22.txt")
    assert served_as(of("image/svg+xml", "x.svg"))[1].startswith("attachment;")
