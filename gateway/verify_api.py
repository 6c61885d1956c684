"""The link in a verification mail (``/v1/settings/email/verify?token=...``), no login.

The token (:mod:`burrow.mail.verification`) proves that whoever holds it read the mail
sent to an address, for one user and for that address only. ``GET`` shows a page with a
*Confirm* button and changes nothing: mail scanners and link previews fetch links, and a
victim's scanner must not confirm an address an attacker typed. ``POST`` (the button)
marks the address verified if it is still the user's.

Answers are small HTML pages, for a browser: 200 (the page, confirmed, or confirmed
already), 400 (not a link of ours: malformed, forged, tampered, another kind of token),
410 (expired, or for an address the user no longer has). None of them changes anything
but a successful ``POST``.
"""

from __future__ import annotations

import html
import logging

from sanic import Blueprint, Request, response
from sanic.response import HTTPResponse

from burrow.mail import verification
from burrow.mail.verification import BadToken, Claim
from burrow.runtime.settings import ConfigError
from burrow.storage import database
from burrow.storage.users import UserStore
from gateway.http_json import FORM_FIELDS, without_body
from gateway.unsubscribe_api import PAGE  # one page shell for the links in mails

log = logging.getLogger(__name__)

FORM = ('<form method="post" action="{path}?token={token}">'
        '<button type="submit">Confirm this address</button></form>')


class Refused(Exception):
    def __init__(self, status: int, title: str, text: str) -> None:
        super().__init__(text)
        self.status, self.title, self.text = status, title, text


def _page(status: int, title: str, text: str, form: str = "") -> HTTPResponse:
    return response.html(PAGE.format(title=html.escape(title), text=html.escape(text),
                                     form=form), status=status,
                         headers={"Cache-Control": "no-store"})


def _claim(request: Request, secret: str) -> Claim:
    try:
        return verification.read_token(secret, request.args.get("token", ""))
    except BadToken as exc:
        if exc.reason == "expired":
            raise Refused(410, "Link expired", "This confirmation link has expired. Set "
                          "your email address again in the app to get a new one.") from None
        raise Refused(400, "Invalid link",
                      f"This confirmation link is not valid ({exc}).") from None


async def _current(request: Request, secret: str) -> tuple[Claim, str, bool, UserStore]:
    """The claim, the address it names (still the user's) and whether it is verified."""
    claim = _claim(request, secret)
    users = UserStore(database.database(request.app.ctx.runtime.db))
    state = await users.email_state(claim.user)
    if not claim.names(secret, state.email):
        raise Refused(410, "Link no longer valid", "This link is for an email address "
                      "that is no longer set. Use the link in the newest mail.")
    assert state.email is not None
    return claim, state.email, state.verified, users


async def _answer(request: Request, confirm: bool) -> HTTPResponse:
    try:
        secret = request.app.ctx.settings.unsubscribe_key()
    except ConfigError:
        return _page(503, "Not available", "Email links are not configured here.")
    try:
        claim, address, verified, users = await _current(request, secret)
    except Refused as refused:
        return _page(refused.status, refused.title, refused.text)
    if verified:
        return _page(200, "Already confirmed", f"{address} is confirmed already.")
    if not confirm:
        token = html.escape(request.args.get("token", ""), quote=True)
        return _page(200, "Confirm your email address",
                     f"Send chat digests to {address}?",
                     FORM.format(path=verification.PATH, token=token))
    if not await users.confirm_email(claim.user, address):
        return _page(410, "Link no longer valid", "This link is for an email address that "
                     "is no longer set. Use the link in the newest mail.")
    log.info("user %s verified their email address", claim.user)
    return _page(200, "Address confirmed", f"Chat digests will go to {address}.")


def blueprint() -> Blueprint:
    bp = Blueprint("verify_email", url_prefix="/v1/settings/email")

    @bp.get("/verify")
    async def page(request: Request) -> HTTPResponse:
        return await _answer(request, confirm=False)

    @bp.post("/verify", stream=True)
    @without_body(FORM_FIELDS)  # the token is in the query; the form's fields are dropped
    async def confirm(request: Request) -> HTTPResponse:
        return await _answer(request, confirm=True)

    return bp
