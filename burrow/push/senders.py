"""The push senders a notifier runs, built from its settings.

A platform without settings has no sender: its devices' jobs are parked in ``push.dead``
as "not configured", where an admin sees them, rather than silently dropped.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from burrow.push import Sender
from burrow.runtime.settings import ConfigError, Settings, conceal

log = logging.getLogger(__name__)


def build_senders(settings: Settings) -> dict[str, Sender]:
    senders: dict[str, Sender] = {}
    if settings.fcm_project:
        from burrow.push.fcm import FcmSender
        if not settings.fcm_credentials and not settings.fcm_endpoint:
            raise ConfigError("BURROW_FCM_CREDENTIALS (a service-account JSON file) is needed "
                              "with BURROW_FCM_PROJECT")
        try:
            senders["fcm"] = FcmSender(settings.fcm_project, settings.fcm_credentials or None,
                                       endpoint=settings.fcm_endpoint or None)
        except (OSError, ValueError) as exc:  # a missing or malformed service-account file
            raise ConfigError("BURROW_FCM_CREDENTIALS: " + conceal(
                str(exc), {"BURROW_FCM_CREDENTIALS": settings.fcm_credentials})) from None
    if settings.apns_key_file:
        from burrow.push.apns import ApnsSender
        missing = [name for name, value in (("BURROW_APNS_KEY_ID", settings.apns_key_id),
                                            ("BURROW_APNS_TEAM_ID", settings.apns_team_id),
                                            ("BURROW_APNS_TOPIC", settings.apns_topic))
                   if not value]
        if missing:
            raise ConfigError(f"{', '.join(missing)} needed with BURROW_APNS_KEY_FILE")
        host, port = None, None
        if settings.apns_endpoint:
            host, _, raw_port = settings.apns_endpoint.rpartition(":")
            if not host or not raw_port.isdigit():
                raise ConfigError(f"BURROW_APNS_ENDPOINT={settings.apns_endpoint!r}: "
                                  "expected host:port")
            port = int(raw_port)
        try:
            context = (ssl.create_default_context(cafile=settings.apns_ca_file)
                       if settings.apns_ca_file else None)
            key = Path(settings.apns_key_file).read_text()
            senders["apns"] = ApnsSender(
                key=key, key_id=settings.apns_key_id, team_id=settings.apns_team_id,
                topic=settings.apns_topic, use_sandbox=settings.apns_sandbox, host=host,
                port=port, ssl_context=context)
        except (OSError, ValueError, TypeError) as exc:
            # a .p8 pasted where its path belongs would be in the OSError's text
            raise ConfigError("BURROW_APNS_KEY_FILE / BURROW_APNS_CA_FILE: " + conceal(
                str(exc), {"BURROW_APNS_KEY_FILE": settings.apns_key_file,
                           "BURROW_APNS_CA_FILE": settings.apns_ca_file})) from None
    log.info("push senders: %s", ", ".join(senders) or "none configured")
    return senders
