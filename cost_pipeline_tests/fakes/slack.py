"""A stateful fake of Slack's Web API on 127.0.0.1 that records messages and can misbehave.

`FakeSlack().start()` serves `chat.postMessage` (form or JSON body, bearer token, message
`metadata` stored), `conversations.history` (newest first, `oldest` exclusive, `limit` +
`cursor` paging, metadata only with `include_all_metadata`) and `conversations.list` (every
channel posted to, with a stable id; history takes the id or the `#name`). `base_url` is what
`slack_sdk.WebClient(base_url=...)` needs. Misbehaviour: `down_for(n, status)` answers the
next n calls with 503 (or `status`, e.g. 500), `rate_limit(n, retry_after)` answers 429 with
`Retry-After`, `fail_with(error)` answers `ok: false` with a Slack error name, and
`accept_then_stall(n, seconds)` stores the next n posted messages but answers only after
`seconds` — longer than the client's timeout, it is the lost answer of an accepted message.

Files, as `files_upload_v2` sends them: `files.getUploadURLExternal` (filename, length) answers
a file id and an upload URL on this server, the bytes are POSTed there, and
`files.completeUploadExternal` (files, channel_id, thread_ts, initial_comment) shares them: a
message with `files` in the channel, or in the thread of `thread_ts`. `conversations.replies`
lists a thread (its parent first). Shared files are in `files`; `fail_next(method, n, status)`
answers the next n calls of one method with `status` (e.g. the upload's completion).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cost_pipeline_tests.fakes.loopback import JsonHandler, LoopbackServer


@dataclass
class Message:
    channel: str
    text: str
    blocks: list[dict]
    ts: str
    metadata: dict | None = None
    thread_ts: str | None = None
    files: list[dict] = field(default_factory=list)


@dataclass
class SharedFile:
    id: str
    filename: str
    title: str
    data: bytes
    channel: str | None = None
    thread_ts: str | None = None


@dataclass
class FakeSlack:
    token: str = "xoxb-test-token"
    messages: list[Message] = field(default_factory=list)
    calls: list[float] = field(default_factory=list)  # monotonic time of every request
    methods: list[str] = field(default_factory=list)  # the API method of every request
    files: list[SharedFile] = field(default_factory=list)  # completed uploads
    _pending: dict[str, SharedFile] = field(default_factory=dict)  # file id -> upload
    _failing: dict[str, tuple[int, int]] = field(default_factory=dict)  # method -> (n, status)
    _down: int = 0
    _down_status: int = 503
    _limited: int = 0
    _retry_after: int = 0
    _error: str | None = None
    _stalls: int = 0
    _stall_seconds: float = 0.0
    _ids: dict[str, str] = field(default_factory=dict)  # channel name -> id
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: LoopbackServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"{self._server.url}/api/"

    def down_for(self, calls: int, status: int = 503) -> None:
        self._down, self._down_status = calls, status

    def rate_limit(self, calls: int, retry_after: int = 1) -> None:
        self._limited, self._retry_after = calls, retry_after

    def fail_with(self, error: str | None) -> None:
        self._error = error

    def accept_then_stall(self, calls: int, seconds: float) -> None:
        self._stalls, self._stall_seconds = calls, seconds

    def fail_next(self, method: str, calls: int, status: int = 503) -> None:
        self._failing[method] = (calls, status)

    def thread(self, ts: str) -> list[Message]:
        """The replies in the thread of message `ts`, oldest first."""
        return [m for m in self.messages if m.thread_ts == ts and m.ts != ts]

    def channel_id(self, channel: str) -> str:
        """The id of a channel name (assigned on first use, like Slack's `C...`)."""
        name = channel.lstrip("#")
        return self._ids.setdefault(name, f"C{len(self._ids) + 1:08d}")

    def start(self) -> FakeSlack:
        fake = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.path.startswith("/upload/"):
                    status = fake._upload(self.path.rsplit("/", 1)[-1], body)
                    text = b"OK - %d" % len(body) if status == 200 else b"error"
                    self.send_json(status, text, content_type="text/plain")
                    return
                self._reply(body.decode())

            def do_GET(self) -> None:
                self._reply("")

            def _reply(self, raw: str) -> None:
                status, headers, body, stall = fake._answer(self.path, self.headers, raw)
                if stall:
                    time.sleep(stall)  # outside the lock: history stays readable meanwhile
                self.send_json(
                    status, body, headers, content_type="application/json; charset=utf-8"
                )

        self._server = LoopbackServer(Handler).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    def _answer(self, path: str, headers: Any, raw: str) -> tuple[int, dict, dict, float]:
        url = urlsplit(path)
        method = url.path.rsplit("/", 1)[-1]
        with self._lock:
            self.calls.append(time.monotonic())
            self.methods.append(method)
            if self._down > 0:
                self._down -= 1
                return self._down_status, {}, {"ok": False, "error": "service_unavailable"}, 0
            if self._limited > 0:
                self._limited -= 1
                headers_out = {"Retry-After": str(self._retry_after)}
                return 429, headers_out, {"ok": False, "error": "ratelimited"}, 0
            if headers.get("Authorization") != f"Bearer {self.token}":
                return 200, {}, {"ok": False, "error": "invalid_auth"}, 0
            failing, status = self._failing.get(method, (0, 0))
            if failing > 0:
                self._failing[method] = (failing - 1, status)
                return status, {}, {"ok": False, "error": "service_unavailable"}, 0
            args = {k: v[0] for k, v in parse_qs(url.query).items()}
            args.update(_parse(headers.get("Content-Type", ""), raw))
            if method == "chat.postMessage":
                return self._post(args)
            if method == "conversations.history":
                return (*self._history(args), 0)
            if method == "files.getUploadURLExternal":
                return (*self._upload_url(args), 0)
            if method == "files.completeUploadExternal":
                return (*self._complete(args), 0)
            if method == "conversations.replies":
                return (*self._replies(args), 0)
            if method == "conversations.list":
                channels = [{"id": i, "name": n} for n, i in self._ids.items()]
                return 200, {}, {"ok": True, "channels": channels}, 0
            return 200, {}, {"ok": False, "error": "unknown_method"}, 0

    def _post(self, args: dict[str, Any]) -> tuple[int, dict, dict, float]:
        if self._error:
            return 200, {}, {"ok": False, "error": self._error}, 0
        blocks = args.get("blocks") or []
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        metadata = args.get("metadata")
        if isinstance(metadata, str):
            metadata = json.loads(metadata)
        if not args.get("channel"):
            return 200, {}, {"ok": False, "error": "channel_not_found"}, 0
        ts = f"{time.time():.6f}"
        self.messages.append(Message(args["channel"], args.get("text", ""), blocks, ts, metadata))
        stall = 0.0
        if self._stalls > 0:
            self._stalls -= 1
            stall = self._stall_seconds
        channel = self.channel_id(args["channel"])
        return 200, {}, {"ok": True, "channel": channel, "ts": ts}, stall

    def _history(self, args: dict[str, Any]) -> tuple[int, dict, dict]:
        wanted = str(args.get("channel") or "")
        by_id = {i: n for n, i in self._ids.items()}
        name = by_id.get(wanted, wanted.lstrip("#"))
        if not wanted or (wanted not in by_id and not wanted.startswith("#")):
            return 200, {}, {"ok": False, "error": "channel_not_found"}
        oldest = float(args.get("oldest") or 0)
        with_metadata = str(args.get("include_all_metadata", "")).lower() in ("1", "true")
        found = [
            m
            for m in reversed(self.messages)
            if m.channel.lstrip("#") == name and float(m.ts) > oldest and m.thread_ts is None
        ]
        start = int(args.get("cursor") or 0)
        limit = int(args.get("limit") or 100)
        page = found[start : start + limit]
        more = start + limit < len(found)
        messages = []
        for m in page:
            item: dict[str, Any] = {"type": "message", "text": m.text, "ts": m.ts}
            if with_metadata and m.metadata:
                item["metadata"] = m.metadata
            messages.append(item)
        body = {
            "ok": True,
            "messages": messages,
            "has_more": more,
            "response_metadata": {"next_cursor": str(start + limit) if more else ""},
        }
        return 200, {}, body

    def _upload_url(self, args: dict[str, Any]) -> tuple[int, dict, dict]:
        if not args.get("filename") or not str(args.get("length") or "").isdigit():
            return 200, {}, {"ok": False, "error": "invalid_arguments"}
        file_id = f"F{len(self._pending) + 1:08d}"
        self._pending[file_id] = SharedFile(file_id, str(args["filename"]), "", b"")
        url = f"{self.base_url.removesuffix('/api/')}/upload/{file_id}"
        return 200, {}, {"ok": True, "upload_url": url, "file_id": file_id}

    def _upload(self, file_id: str, data: bytes) -> int:
        with self._lock:
            pending = self._pending.get(file_id)
            if pending is None:
                return 404
            pending.data = data
            return 200

    def _complete(self, args: dict[str, Any]) -> tuple[int, dict, dict]:
        items = args.get("files") or "[]"
        items = json.loads(items) if isinstance(items, str) else items
        by_id = {i: n for n, i in self._ids.items()}
        channel_id = args.get("channel_id")
        if channel_id and channel_id not in by_id:
            return 200, {}, {"ok": False, "error": "channel_not_found"}
        done = []
        for item in items:
            pending = self._pending.get(item["id"])
            if pending is None or not pending.data:
                return 200, {}, {"ok": False, "error": "file_not_found"}
            pending.title = item.get("title") or pending.filename
            done.append(pending)
        if channel_id:
            thread_ts = args.get("thread_ts") or None
            ts = f"{time.time():.6f}"
            files = [{"id": f.id, "name": f.filename, "title": f.title} for f in done]
            text = args.get("initial_comment") or ""
            channel = by_id[channel_id]
            self.messages.append(Message(channel, text, [], ts, None, thread_ts, files))
            for f in done:
                f.channel, f.thread_ts = channel, thread_ts
        self.files.extend(done)
        return 200, {}, {"ok": True, "files": [{"id": f.id, "title": f.title} for f in done]}

    def _replies(self, args: dict[str, Any]) -> tuple[int, dict, dict]:
        by_id = {i: n for n, i in self._ids.items()}
        wanted, ts = str(args.get("channel") or ""), str(args.get("ts") or "")
        if wanted not in by_id:
            return 200, {}, {"ok": False, "error": "channel_not_found"}
        name = by_id[wanted]
        parent = [m for m in self.messages if m.channel.lstrip("#") == name and m.ts == ts]
        if not parent:
            return 200, {}, {"ok": False, "error": "thread_not_found"}
        messages = [
            {"type": "message", "text": m.text, "ts": m.ts, "thread_ts": ts, "files": m.files}
            for m in [*parent, *self.thread(ts)]
        ]
        return 200, {}, {"ok": True, "messages": messages, "has_more": False}


def _parse(content_type: str, raw: str) -> dict[str, Any]:
    if "json" in content_type:
        return json.loads(raw or "{}")
    return {k: v[0] for k, v in parse_qs(raw).items()}
