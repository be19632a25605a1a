"""Slack: post Block Kit messages with `slack_sdk`, honouring 429 Retry-After; dry-run twin.

Each message carries its alert keys as message metadata, and `find_sent` looks them up in the
channel's history (`conversations.history` with `include_all_metadata`), so the outbox can tell
whether an attempt whose answer was lost reached Slack. The bot needs `chat:write`,
`channels:history` (`groups:history` for private channels) and, to find a channel given by
name, `channels:read` (`groups:read`).

Posting never retries a connection error inside the client: the request may have been accepted,
and only the history can tell. 429s are retried after `Retry-After` (nothing was accepted).

A message may carry files (a digest's chart, `lib.outbox.Attachment`): `attach_files` uploads
them with `files_upload_v2` into the message's thread once the message is posted, skipping any
file whose title the thread already shows, so a retry after a lost answer completes the thread
without a second copy. Files need the `files:write` scope (and the history scopes above).

Without a bot token the resource is its own offline twin: `post_message` logs the message and
returns None, and the outbox records the alert as `dry_run` — never lost, never sent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import dagster as dg
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.http_retry import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler

from cost_pipeline.lib.outbox import Attachment, SendError, keys_in_metadata

log = logging.getLogger(__name__)

# Slack errors that will not go away by retrying the same message.
PERMANENT_ERRORS = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "invalid_blocks",
        "invalid_blocks_format",
        "msg_too_long",
        "no_text",
        "too_many_attachments",
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "missing_scope",
    }
)


class SlackResource(dg.ConfigurableResource):
    """Slack Web API client. `bot_token` empty means dry-run."""

    bot_token: str | None = None
    default_channel: str = ""
    base_url: str = "https://slack.com/api/"
    timeout_seconds: int = 15
    max_rate_limit_retries: int = 3
    # Bounds the history read before a re-send (pages of `history_page_size` messages).
    history_page_size: int = 200
    history_max_pages: int = 50

    @property
    def dry_run(self) -> bool:
        return not self.bot_token

    def client(self, *, retry_connection_errors: bool = True) -> WebClient:
        """A WebClient that honours 429 Retry-After; connection errors are retried only when
        asked (reads), never for a post, whose request may already have been accepted."""
        client = WebClient(
            token=self.bot_token,
            base_url=self.base_url if self.base_url.endswith("/") else self.base_url + "/",
            timeout=self.timeout_seconds,
            retry_handlers=[ConnectionErrorRetryHandler()] if retry_connection_errors else [],
        )
        client.retry_handlers.append(
            RateLimitErrorRetryHandler(max_retry_count=self.max_rate_limit_retries)
        )
        return client

    def post_message(
        self,
        *,
        channel: str | None,
        text: str,
        blocks: list[dict] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str | None:
        """Post one message (with its message `metadata`); return its `ts` (None in dry-run).

        Raises `SendError`. After a timeout, a reset or a 5xx Slack may have the message anyway:
        the outbox looks it up (`find_sent`) before trying again."""
        target = channel or self.default_channel
        if self.dry_run:
            log.info(
                "Slack dry-run (no SLACK_BOT_TOKEN) to %s: %s\n%s",
                target,
                text,
                json.dumps(blocks or [], ensure_ascii=False),
            )
            return None
        if not target:
            raise SendError("no Slack channel: set SLACK_CHANNEL or a routing", retryable=False)
        client = self.client(retry_connection_errors=False)
        try:
            response = client.chat_postMessage(
                channel=target, text=text, blocks=blocks, metadata=metadata
            )
        except SlackApiError as exc:
            raise _send_error("chat.postMessage", target, exc) from None
        except (OSError, ValueError) as exc:
            # Connection refused / reset / timeout, or a body that is not JSON (a proxy page).
            raise SendError(
                f"slack chat.postMessage to {target}: {type(exc).__name__}", retryable=True
            ) from None
        return str(response.get("ts"))

    def find_sent(
        self, *, channel: str | None, oldest: datetime, keys: list[str]
    ) -> dict[str, str]:
        """The `keys` that a message in `channel` since `oldest` carries, with its `ts`.

        Reads `conversations.history` page by page (newest first); raises `SendError` when the
        history cannot be read or is longer than `history_max_pages` pages — unknown is not
        "absent", and a guess would send twice."""
        target = channel or self.default_channel
        if self.dry_run or not keys:
            return {}
        wanted, found = set(keys), {}
        client = self.client()
        try:
            channel_id = self._channel_id(client, target)
            if channel_id is None:
                return {}
            cursor: str | None = None
            for _ in range(self.history_max_pages):
                page = client.conversations_history(
                    channel=channel_id,
                    oldest=f"{oldest.timestamp():.6f}",
                    include_all_metadata=True,
                    limit=self.history_page_size,
                    cursor=cursor,
                )
                for message in page.get("messages") or []:
                    for key in wanted.intersection(keys_in_metadata(message.get("metadata"))):
                        found.setdefault(key, str(message.get("ts")))
                cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
                if not cursor or wanted <= found.keys():
                    return found
        except SlackApiError as exc:
            raise _send_error("conversations.history", target, exc) from None
        except (OSError, ValueError) as exc:
            raise SendError(
                f"slack conversations.history of {target}: {type(exc).__name__}", retryable=True
            ) from None
        raise SendError(
            f"slack conversations.history of {target}: more than {self.history_max_pages} pages "
            "since the first attempt; cannot tell whether it was sent",
            retryable=True,
        )

    def attach_files(
        self,
        *,
        channel: str | None,
        thread_ts: str,
        attachments: Sequence[Attachment],
        check_thread: bool = True,
    ) -> list[str]:
        """Upload `attachments` into the thread of the message `thread_ts`; return the titles
        uploaded (none in dry-run).

        With `check_thread` (a retry: an earlier upload's answer may be lost), a file whose title
        the thread already shows is not uploaded again. Raises `SendError`."""
        target = channel or self.default_channel
        if self.dry_run or not attachments:
            return []
        reader, writer = self.client(), self.client(retry_connection_errors=False)
        uploaded: list[str] = []
        try:
            channel_id = self._channel_id(reader, target)
            if channel_id is None:
                raise SendError(f"slack: no channel {target} to attach files to", retryable=False)
            present = self._thread_files(reader, channel_id, thread_ts) if check_thread else set()
            for attachment in attachments:
                title = attachment.title or attachment.filename
                if title in present:
                    continue
                writer.files_upload_v2(
                    channel=channel_id,
                    thread_ts=thread_ts,
                    file=attachment.data,
                    filename=attachment.filename,
                    title=title,
                    alt_txt=title,
                )
                uploaded.append(title)
        except SlackApiError as exc:
            raise _send_error("files upload", target, exc) from None
        except (SlackRequestError, OSError, ValueError) as exc:
            raise SendError(
                f"slack files upload to {target}: {type(exc).__name__}", retryable=True
            ) from None
        return uploaded

    def _thread_files(self, client: WebClient, channel_id: str, thread_ts: str) -> set[str]:
        """The titles (and names) of the files in a message's thread."""
        titles: set[str] = set()
        cursor: str | None = None
        for _ in range(self.history_max_pages):
            page = client.conversations_replies(
                channel=channel_id, ts=thread_ts, limit=self.history_page_size, cursor=cursor
            )
            for message in page.get("messages") or []:
                for file in message.get("files") or []:
                    titles.update(str(file[k]) for k in ("title", "name") if file.get(k))
            cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                return titles
        raise SendError(
            f"slack conversations.replies of {thread_ts}: more than {self.history_max_pages} "
            "pages; cannot tell which files it has",
            retryable=True,
        )

    def _channel_id(self, client: WebClient, channel: str) -> str | None:
        """History takes a channel id; a `#name` (what routing holds) is looked up by name.
        None: no channel of that name, so nothing can have been posted to it."""
        if not channel.startswith("#"):
            return channel
        name, cursor = channel[1:], None
        while True:
            page = client.conversations_list(
                types="public_channel,private_channel",
                exclude_archived=True,
                limit=1000,
                cursor=cursor,
            )
            for found in page.get("channels") or []:
                if found.get("name") == name:
                    return str(found["id"])
            cursor = (page.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                return None


def _send_error(method: str, target: str, exc: SlackApiError) -> SendError:
    """A SendError for a Slack error answer, retryable unless the error is permanent."""
    error = str(exc.response.get("error", "unknown_error")) if exc.response else "?"
    status = exc.response.status_code if exc.response is not None else None
    return SendError(
        f"slack {method} to {target}: HTTP {status} {error}",
        retryable=error not in PERMANENT_ERRORS,
    )
