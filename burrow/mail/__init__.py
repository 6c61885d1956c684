"""Digest e-mail: what a digest mail says, who may stop it, and how it reaches an SMTP relay.

Each module does one small thing and no I/O beyond its job, so the digest worker can
compose them and the tests can exercise each alone:

* :mod:`burrow.mail.links` signs and checks the tokens of every link in a mail (one
  audience per kind of link, so none passes for another, nor for a chat access token);
* :mod:`burrow.mail.unsubscribe` signs the one-click unsubscribe links (RFC 8058) that must
  keep working in old mails, and that no chat access token can stand in for;
* :mod:`burrow.mail.verification` decides when an address gets a verification mail, binds
  its link to the user and the address, and writes the mail: digests go only to an
  address whose owner followed it;
* :mod:`burrow.mail.digest` renders the unread summary as text + HTML (Jinja2), with the
  headers mail providers look for (List-Unsubscribe, Auto-Submitted, a stable Message-ID);
* :mod:`burrow.mail.smtp_url` reads the relay's URL and refuses one that would send mail
  or a password in clear beyond loopback without being told to;
* :mod:`burrow.mail.smtp` hands a message to the relay and says only what the worker needs
  to know next: sent, rejected for good, or worth retrying.

May import: :mod:`burrow.core`, Jinja2, PyJWT and aiosmtplib (only in
:mod:`~burrow.mail.smtp`); never the storage, the broker or the processes: the digester
wires them together.
"""
