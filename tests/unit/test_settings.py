"""Settings come from BURROW_* variables; bad ones are refused with the variable's name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from burrow.runtime.settings import ConfigError, Settings
from burrow.runtime.variables import IGNORED, NAMES, VARIABLES

ROOT = Path(__file__).resolve().parents[2]
AMQP = {"BURROW_AMQP_URL": "amqp://u:p@127.0.0.1:5672/burrow"}


def test_defaults() -> None:
    settings = Settings.from_env(AMQP)
    assert settings.port == 8000 and settings.host == "127.0.0.1"
    assert settings.shards == 4
    assert settings.mongo_url.startswith("mongodb://127.0.0.1:27017/burrow")


def test_amqp_url_is_required_and_named() -> None:
    with pytest.raises(ConfigError, match="BURROW_AMQP_URL is not set"):
        Settings.from_env({})


@pytest.mark.parametrize(("name", "value", "message"), [
    ("BURROW_PORT", "eighty", "BURROW_PORT='eighty' is invalid"),
    ("BURROW_PORT", "70000", "a port is 1..65535"),
    ("BURROW_SHARDS", "0", "must be positive"),
    ("BURROW_HEALTH_INTERVAL", "-1", "must be positive"),
    ("BURROW_AMQP_URL", "http://127.0.0.1/", "amqp or amqps"),
    ("BURROW_MONGO_URL", "mongodb://", "with a host"),
    ("BURROW_LOG_LEVEL", "loud", "DEBUG, INFO"),
    ("BURROW_PROT", "8000", "unknown setting BURROW_PROT (did you mean BURROW_PORT?)"),
    # a ticket is for the connection about to open, not a second long-lived credential
    ("BURROW_WS_TICKET_TTL", "0", "whole seconds from 1 to 300"),
    ("BURROW_WS_TICKET_TTL", "301", "whole seconds from 1 to 300"),
    ("BURROW_WS_TICKET_TTL", "2.5", "BURROW_WS_TICKET_TTL='2.5' is invalid"),
])
def test_malformed_values_are_refused_with_the_variable(name: str, value: str,
                                                        message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.from_env({**AMQP, name: value})


def test_metrics_networks() -> None:
    from burrow.runtime.settings import allowed, networks
    default = Settings.from_env({"BURROW_AMQP_URL": "amqp://u:p@127.0.0.1/b"}).metrics_from
    for address in ("127.0.0.1", "::1", "10.2.3.4", "172.18.0.5", "192.168.1.9", "fd00::1"):
        assert allowed(address, default), address
    for address in ("203.0.113.5", "8.8.8.8", "2001:db8::1", "not an address", ""):
        assert not allowed(address, default), address
    assert networks("*") is None and allowed("8.8.8.8", networks("*"))
    assert not allowed("127.0.0.1", networks("10.0.0.0/8"))
    with pytest.raises(ConfigError, match="BURROW_METRICS_FROM"):
        Settings.from_env({"BURROW_AMQP_URL": "amqp://u:p@127.0.0.1/b",
                           "BURROW_METRICS_FROM": "10.0.0.0/33"})


@pytest.mark.parametrize(("name", "value"), [
    ("BURROW_AMQP_URL", "amqp://burrow-gateway:s3cret-pw@127.0.0.1:5672/burrow?no_verify_ssl=1"),
    ("BURROW_AMQP_URL", "http://burrow-gateway:s3cret-pw@127.0.0.1/burrow"),
    ("BURROW_MONGO_URL", "mongodb://burrow:s3cret-pw@db/burrow?tls=true&tlsInsecure=true"),
])
def test_a_refused_url_is_named_without_its_password(name: str, value: str) -> None:
    env = {"BURROW_AMQP_URL": "amqp://u:p@127.0.0.1:5672/burrow", name: value}
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(env)
    assert name in str(refused.value)
    assert "s3cret-pw" not in str(refused.value)


# --- the variables of the launcher, compose, clients, tools and tests ---------------------

# The ones docs/cli.md, docs/queues.md and the examples tell users to export.
CLIENT_SIDE = ("BURROW_URL", "BURROW_TOKEN", "BURROW_CA_FILE", "BURROW_BACKEND_URL")


@pytest.mark.parametrize("name", sorted(IGNORED))
def test_client_and_tool_variables_do_not_stop_the_servers(name: str) -> None:
    assert name not in NAMES
    assert Settings.from_env({**AMQP, name: "http://127.0.0.1:8000"}) == Settings.from_env(AMQP)


def test_the_documented_client_variables_are_ignored() -> None:
    assert set(CLIENT_SIDE) <= IGNORED
    Settings.from_env({**AMQP, **{name: "x" for name in IGNORED}})


@pytest.mark.parametrize(("name", "suggestion"), [
    ("BURROW_PROT", "BURROW_PORT"),
    ("BURROW_JWT_SECRETS", "BURROW_JWT_SECRET"),
    ("BURROW_AMQPURL", "BURROW_AMQP_URL"),
    ("BURROW_MONGO_URI", "BURROW_MONGO_URL"),
    # once spared as BURROW_DEV_*: a misspelt dev-mode switch was quietly ignored
    ("BURROW_DEV_MOD", "BURROW_DEV_MODE"),
    ("BURROW_DEV_TOKEN_TL", "BURROW_DEV_TOKEN_TTL"),
    ("BURROW_RABBITMQ_GATEWAY_PASSWROD", "BURROW_RABBITMQ_GATEWAY_PASSWORD"),
    ("BURROW_TOKN", "BURROW_TOKEN"),
    ("BURROW_XYZZY", None),
])
def test_a_misspelt_variable_is_refused_with_a_suggestion(name: str,
                                                          suggestion: str | None) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({**AMQP, name: "1"})
    message = str(refused.value)
    assert message.startswith(f"unknown setting {name}")
    assert "docs/configuration.md" in message
    if suggestion:
        assert f"(did you mean {suggestion}?)" in message
    else:
        assert "did you mean" not in message


def test_every_misspelt_variable_is_named_at_once() -> None:
    with pytest.raises(ConfigError, match=re.escape(
            "unknown settings BURROW_HSOT (did you mean BURROW_HOST?), BURROW_XYZZY:")):
        Settings.from_env({**AMQP, "BURROW_XYZZY": "1", "BURROW_HSOT": "0.0.0.0"})


# --- secrets never show in a refusal -------------------------------------------------------

MARKER = "Mk7-SeCrEt-MaRkEr-Qz9"
LONG = "x" * 40  # a secret long enough to be accepted
BASE = {**AMQP, "BURROW_JWT_SECRET": LONG}
# scheme and a query that makes each URL setting invalid
URLS = {"BURROW_AMQP_URL": ("amqp", "no_verify_ssl=1"),
        "BURROW_MONGO_URL": ("mongodb", "tlsInsecure=true"),
        "BURROW_SMTP_URL": ("smtp", "starttls=maybe"),
        "BURROW_RATE_STORAGE": ("redis+nope", "x=1")}
URL_SHAPES = (
    "{m}",  # not a URL at all
    "nope://user:{m}@host:1/x",
    "{s}//user:{m}@host:1/x",  # a ':' missing: no longer a URL to redact
    "{s}:/:{m}@host://x",
    "{s}://user:{m}@host:1?{bad}",
    "{s}://:{m}@host:1?{bad}",  # no user name (Redis)
    "{s}://user:pw@{m}/x@host:1?{bad}",  # '@' and '/' in the password
    "{s}://user:a {m}@host:1?{bad}",  # a space in it
    "{s}://user:{m}@[::1/x",  # an unbalanced bracket
    "{s}://host:1?{m}=1&{bad}",  # in the query, as a name
    "{s}://host:1?password={m}&{bad}",
    "{s}://host:1?{m}&{bad}",  # a malformed query
)
SECRETS = {
    **{name: [{name: shape.format(m=MARKER, s=scheme, bad=bad)} for shape in URL_SHAPES]
       for name, (scheme, bad) in URLS.items()},
    "BURROW_JWT_SECRET": [
        {"BURROW_JWT_SECRET": MARKER},  # too short
        {"BURROW_JWT_SECRET": f"-----BEGIN PUBLIC KEY-----\n{MARKER}{LONG}\n"
                              "-----END PUBLIC KEY-----"},
        {"BURROW_JWT_SECRET": MARKER + LONG, "BURROW_JWT_ALGORITHMS": "RS256"},
        {"BURROW_JWT_SECRET": MARKER + LONG, "BURROW_JWKS_URL": "https://idp.example/jwks"},
    ],
    "BURROW_UNSUBSCRIBE_SECRET": [{"BURROW_UNSUBSCRIBE_SECRET": MARKER}],  # too short
    "BURROW_ATTACHMENT_SECRET": [{"BURROW_ATTACHMENT_SECRET": MARKER}],  # too short
    "BURROW_WEBHOOK_SECRET": [{"BURROW_WEBHOOK_SECRET": MARKER}],  # too short
    "BURROW_WEBHOOK_URL": [{"BURROW_WEBHOOK_URL": MARKER},  # not a URL, or not http(s)
                           {"BURROW_WEBHOOK_URL": f"nope://user:{MARKER}@host:1/x"}],
    "BURROW_S3_SECRET_ACCESS_KEY": [
        {"BURROW_S3_SECRET_ACCESS_KEY": f"{MARKER} {MARKER}"},  # a space: not a key
        {"BURROW_S3_SECRET_ACCESS_KEY": MARKER},  # given to GridFS, which would ignore it
        {"BURROW_S3_SECRET_ACCESS_KEY": MARKER, "BURROW_ATTACHMENT_STORE": "s3",
         "BURROW_S3_BUCKET": "files"}],  # without its key id
}


def configure(env: dict[str, str]) -> None:
    """What a process does with its settings before it serves: the gateway's token
    verifier and dev-mode check, the digester's link secret."""
    from gateway import dev_api
    from gateway.auth import Verifier

    settings = Settings.from_env(env)
    Verifier.from_settings(settings)
    dev_api.check(settings)
    settings.unsubscribe_key()


@pytest.mark.parametrize("name", sorted(v.name for v in VARIABLES if v.secret))
def test_a_secret_never_shows_in_a_refusal(name: str) -> None:
    """For every secret in the table: malformed values carrying a marker (servers' own
    settings), and the variable misspelt (anyone's), are refused without the marker."""
    server = name in NAMES
    assert not server or name in SECRETS, f"give {name} malformed values to try here"
    tries = [{name + "S": f"amqp://u:{MARKER}@h/{MARKER}"}, *SECRETS.get(name, [])]
    for env in tries:
        with pytest.raises(ConfigError) as refused:
            configure({**BASE, **env})
        message = str(refused.value)
        assert MARKER not in message, (env, message)
        assert MARKER[:8] not in message and "Qz9" not in message, (env, message)
        assert next(iter(env)) in message, message  # still says which variable
    if not server:  # the processes ignore the variable itself
        configure({**BASE, name: MARKER})


def test_credentials_are_marked_secret() -> None:
    """What holds a credential, or a URL that may carry one, is a secret in the table."""
    credentials = {v.name for v in VARIABLES if re.search(r"SECRET|PASSWORD", v.name)} | {
        "BURROW_AMQP_URL", "BURROW_MONGO_URL", "BURROW_SMTP_URL", "BURROW_RATE_STORAGE",
        "BURROW_TOKEN", "BURROW_BACKEND_URL", "BURROW_TEST_MONGO_URL",
        "BURROW_WEBHOOK_URL"}  # a receiver's URL often carries its token
    assert credentials == {v.name for v in VARIABLES if v.secret}


def test_logs_redact_a_password_without_a_user_name() -> None:
    from burrow.runtime.logs import redact
    assert MARKER not in redact(f"redis://:{MARKER}@cache:6379/0 is unreachable")


KEY = f"-----BEGIN PRIVATE KEY-----\nMIIE{MARKER}\n-----END PRIVATE KEY-----\n"


@pytest.mark.parametrize(("env", "needs"), [
    ({"BURROW_TLS_KEY": KEY, "BURROW_TLS_CERT": KEY}, "BURROW_TLS_"),
    ({"BURROW_TLS_KEY": f'"{KEY}"', "BURROW_TLS_CERT": "/etc/hosts"}, "BURROW_TLS_KEY"),
    # a private key pasted, quoted, where the public key or its path belongs
    ({"BURROW_JWT_SECRET": "", "BURROW_JWT_PUBLIC_KEY": f'"{KEY}"'}, "BURROW_JWT_PUBLIC_KEY"),
])
def test_key_material_given_for_a_path_is_not_shown(env: dict[str, str], needs: str) -> None:
    with pytest.raises(ConfigError) as refused:
        configure({**BASE, **env})
    message = str(refused.value)
    assert needs in message and "not shown" in message
    assert MARKER not in message and "MIIE" not in message, message


@pytest.mark.parametrize(("env", "needs"), [
    ({"BURROW_APNS_KEY_FILE": KEY, "BURROW_APNS_KEY_ID": "K", "BURROW_APNS_TEAM_ID": "T",
      "BURROW_APNS_TOPIC": "t"}, "BURROW_APNS_KEY_FILE"),
    ({"BURROW_FCM_PROJECT": "p", "BURROW_FCM_CREDENTIALS": (
        '{"type": "service_account", "private_key": "' + KEY.replace("\n", "\\n") + '"}')},
     "BURROW_FCM_CREDENTIALS"),
])
def test_push_key_material_given_for_a_path_is_not_shown(env: dict[str, str],
                                                         needs: str) -> None:
    from burrow.push.senders import build_senders

    with pytest.raises(ConfigError) as refused:
        build_senders(Settings.from_env({**BASE, **env}))
    message = str(refused.value)
    assert needs in message
    assert MARKER not in message and "MIIE" not in message, message


def test_a_path_is_still_shown() -> None:
    with pytest.raises(ConfigError, match=re.escape(
            "BURROW_TLS_KEY='/nonexistent/burrow.key' is invalid (cannot read "
            "/nonexistent/burrow.key: No such file")):
        Settings.from_env({**AMQP, "BURROW_TLS_KEY": "/nonexistent/burrow.key"})
