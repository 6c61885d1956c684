"""The push providers and the mail server of a benchmark run, in a process of their own.

``python -m bench.providers DIR`` starts the local FCM and APNs servers and the SMTP
server the tests use (:mod:`tests.fakes`: the providers' documented wire APIs over TLS),
writes ``DIR/providers.json`` (the worker environment that points Burrow at them), and
serves until SIGTERM. A process of its own so that its CPU is neither the load
generator's nor the stack's: the report counts neither (FCM and APNs are Google's and
Apple's servers in production, SMTP is the operator's relay).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from tests.fakes.apns import ApnsFake, write_p8_key
from tests.fakes.fcm import FcmFake
from tests.fakes.smtp import FakeSmtpServer

TOPIC = "bench.burrow.chat"
KEY_ID, TEAM_ID = "BENCHKEY01", "BENCHTEAM1"
ENV_FILE = "providers.json"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python -m bench.providers DIR")
    directory = Path(args[0])
    directory.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()

    def stopping(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    key = write_p8_key(directory / "AuthKey.p8")
    with FcmFake() as fcm, ApnsFake(key=key, key_id=KEY_ID, team_id=TEAM_ID,
                                    topics=[TOPIC]) as apns, FakeSmtpServer() as smtp:
        account = fcm.write_service_account(directory / "service-account.json")
        env = {"BURROW_FCM_PROJECT": fcm.project_id, "BURROW_FCM_CREDENTIALS": str(account),
               "BURROW_FCM_ENDPOINT": fcm.base_url, **fcm.client_env(),
               "BURROW_APNS_KEY_FILE": str(directory / "AuthKey.p8"),
               "BURROW_APNS_KEY_ID": KEY_ID, "BURROW_APNS_TEAM_ID": TEAM_ID,
               "BURROW_APNS_TOPIC": TOPIC, "BURROW_APNS_SANDBOX": "true",
               "BURROW_APNS_ENDPOINT": f"127.0.0.1:{apns.port}",
               "BURROW_APNS_CA_FILE": str(apns.ca_file),
               "BURROW_SMTP_URL": smtp.url}
        written = directory / f"{ENV_FILE}.tmp"
        written.write_text(json.dumps(env))
        written.rename(directory / ENV_FILE)  # whole or absent: the stack polls for it
        stop.wait()


if __name__ == "__main__":
    main()
