"""A real SMTP server on 127.0.0.1 (`aiosmtpd`) that keeps what it takes and can misbehave.

`FakeSmtp().start()` listens on a free port (`host`, `port`) and stores each message it accepts
in `messages` (parsed, with its envelope). Misbehaviour, each for the next n messages:
`refuse(n, reply)` answers the end of DATA with `reply` (e.g. `451 ...` or `554 ...`) and keeps
nothing; `stall_before_accept(n, seconds)` waits `seconds`, then refuses — longer than the
client's timeout, it is a timeout before the server took the message; `accept_then_stall(n,
seconds)` keeps the message, then answers `250` only after `seconds` — the lost answer of a
message the server took. `refuse_recipients(reply)` refuses every RCPT TO. With `credentials`,
AUTH LOGIN / PLAIN is offered (without TLS: loopback only) and required.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import threading
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class FakeSmtp:
    credentials: tuple[str, str] | None = None
    messages: list[Received] = field(default_factory=list)
    sessions: int = 0  # DATA commands seen, accepted or not
    host: str = "127.0.0.1"
    port: int = 0
    _refusals: int = 0
    _reply: str = "451 4.3.0 Try again later"
    _stalls_before: int = 0
    _stalls_after: int = 0
    _stall_seconds: float = 0.0
    _rcpt_reply: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _controller: Controller | None = None

    def refuse(self, messages: int, reply: str = "451 4.3.0 Try again later") -> None:
        self._refusals, self._reply = messages, reply

    def stall_before_accept(self, messages: int, seconds: float) -> None:
        self._stalls_before, self._stall_seconds = messages, seconds

    def accept_then_stall(self, messages: int, seconds: float) -> None:
        self._stalls_after, self._stall_seconds = messages, seconds

    def refuse_recipients(self, reply: str | None) -> None:
        self._rcpt_reply = reply

    def start(self) -> FakeSmtp:
        fake = self

        class Handler:
            async def handle_RCPT(
                self, server: Any, session: Any, envelope: Any, address: str, options: list
            ) -> str:
                if fake._rcpt_reply:
                    return fake._rcpt_reply
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                return await fake._data(envelope)

        kwargs: dict[str, Any] = {}
        if self.credentials is not None:
            kwargs.update(
                authenticator=self._authenticate, auth_require_tls=False, auth_required=True
            )
        for _ in range(5):  # a port picked free can be taken before we bind it: pick again
            self.port = _free_port()
            controller = Controller(Handler(), hostname=self.host, port=self.port, **kwargs)
            try:
                controller.start()
            except OSError:
                continue
            self._controller = controller
            return self
        raise RuntimeError("no free port for the fake SMTP server")

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and self.credentials == (
            auth_data.login.decode(),
            auth_data.password.decode(),
        )
        return AuthResult(success=ok, handled=False)

    async def _data(self, envelope: Any) -> str:
        with self._lock:
            self.sessions += 1
            if self._refusals > 0:
                self._refusals -= 1
                return self._reply
            before = self._stalls_before > 0
            after = not before and self._stalls_after > 0
            if before:
                self._stalls_before -= 1
            elif after:
                self._stalls_after -= 1
            else:
                self._keep(envelope)
        if before:
            await asyncio.sleep(self._stall_seconds)
            return "451 4.4.2 Timed out before the message was taken"
        if after:
            with self._lock:
                self._keep(envelope)
            await asyncio.sleep(self._stall_seconds)
        return "250 Message accepted for delivery"

    def _keep(self, envelope: Any) -> None:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos), message))
