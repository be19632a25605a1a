"""Email alerts over SMTP with the standard library (`smtplib`, `email`); dry-run twin.

One message per alert, plain text (with `html` and `inline` files, a digest: the text, and the
HTML with its images as `multipart/related` parts it shows by `cid:`), with a `Message-ID`
derived from the alert's fact key, the same on every attempt. SMTP cannot be asked afterwards
whether it took a message, so when the answer is lost (a timeout after the final `.`, a run that
died after sending) the outbox sends again and the server may hold two copies with one
Message-ID: at-least-once at the server, with the Message-ID as the dedup key. Everything else
is exactly once: a transient refusal (4xx), a dropped connection or a timeout before the server
took the message are retried, a permanent refusal (5xx) is not (RFC 5321): the row is `failed`,
naming the server's answer.

Without an SMTP host the resource is its own offline twin: `send` logs the message and returns
None, and the outbox records the alert as `dry_run`.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from email.utils import formatdate
from typing import Literal

import dagster as dg

from cost_pipeline.lib.messages import ALERT_KEY_HEADER, message_id
from cost_pipeline.lib.outbox import Attachment, SendError

log = logging.getLogger(__name__)


class EmailResource(dg.ConfigurableResource):
    """An SMTP relay. `host` empty means dry-run. `security`: `starttls` (port 587), `ssl`
    (implicit TLS, port 465) or `none` (a local relay only)."""

    host: str = ""
    port: int = 587
    username: str | None = None
    password: str | None = None
    security: Literal["starttls", "ssl", "none"] = "starttls"
    from_address: str = "cost-alerts@localhost"
    timeout_seconds: float = 30.0

    @property
    def dry_run(self) -> bool:
        return not self.host

    @property
    def domain(self) -> str:
        """The right part of every Message-ID: the sender's domain."""
        return self.from_address.rpartition("@")[2] or "localhost"

    def build_message(
        self,
        *,
        to: list[str],
        subject: str,
        body: str,
        fact_key: str,
        html: str | None = None,
        inline: Sequence[Attachment] = (),
    ) -> EmailMessage:
        """The message; with `html`, `multipart/alternative` of the text and a `multipart/related`
        HTML part holding each `inline` file under `Content-ID: <file.content_id>`."""
        message = EmailMessage()
        message["From"] = self.from_address
        message["To"] = ", ".join(to)
        message["Subject"] = subject
        message["Date"] = formatdate(usegmt=True)
        message["Message-ID"] = message_id(fact_key, self.domain)
        message[ALERT_KEY_HEADER] = fact_key
        message.set_content(body)
        if html is not None:
            message.add_alternative(html, subtype="html")
            html_part = message.get_payload()[-1]
            for file in inline:
                maintype, _, subtype = file.mime_type.partition("/")
                html_part.add_related(
                    file.data,
                    maintype=maintype,
                    subtype=subtype or "octet-stream",
                    cid=f"<{file.content_id}>",
                    filename=file.filename,
                    disposition="inline",
                )
        return message

    def send(
        self,
        *,
        to: list[str],
        subject: str,
        body: str,
        fact_key: str,
        html: str | None = None,
        inline: Sequence[Attachment] = (),
    ) -> str | None:
        """Send one alert (with `html` and its `inline` files: see `build_message`); return its
        Message-ID (None in dry-run). Raises `SendError`."""
        if self.dry_run:
            log.info("Email dry-run (no SMTP_HOST) to %s: %s\n%s", ", ".join(to), subject, body)
            return None
        if not to:
            raise SendError("email: no recipients (channels.email_to)", retryable=False)
        message = self.build_message(
            to=to, subject=subject, body=body, fact_key=fact_key, html=html, inline=inline
        )
        try:
            with self._open_smtp() as smtp:
                if self.username:
                    smtp.login(self.username, self.password or "")
                refused = smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise SendError(
                f"email to {len(to)} recipient(s): every recipient refused ({codes})",
                retryable=all(400 <= c < 500 for c in codes),
            ) from None
        except smtplib.SMTPResponseException as exc:
            # 4xx: try later; 5xx: the server will not take it however often it is asked.
            reason = exc.smtp_error.decode(errors="replace") if exc.smtp_error else ""
            raise SendError(
                f"email via {self.host}: SMTP {exc.smtp_code} {reason[:200]}",
                retryable=exc.smtp_code < 500,
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            # Refused, reset or timed out: the server may or may not have taken it.
            raise SendError(
                f"email via {self.host}: {type(exc).__name__}", retryable=True
            ) from None
        if refused:
            log.warning("email %s: refused by %s", message["Message-ID"], sorted(refused))
        return str(message["Message-ID"])

    def _open_smtp(self) -> smtplib.SMTP:
        if self.security == "ssl":
            context = ssl.create_default_context()
            return smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout_seconds, context=context
            )
        smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout_seconds)
        try:
            if self.security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
        except BaseException:
            smtp.close()
            raise
        return smtp
