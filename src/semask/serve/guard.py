"""What keeps ``semask serve`` serving under abuse (:class:`~semask.serve.limits.Limits`): a one-at-a-time
inference gate with a bounded queue, and an ASGI guard that caps request bodies and times requests out.

Every refusal is an HTTP error whose JSON body is ``{"detail": "<one line>"}``: 413 for a body above the
upload cap (from ``Content-Length`` before reading, or while reading a chunked body), 503 when the queue is
full or a request runs past the timeout, 408 when a client takes longer than the timeout to send its body.
"""

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

T = TypeVar("T")


class Busy(HTTPException):
    """503: the inference queue is full."""

    def __init__(self, capacity: int) -> None:
        super().__init__(503, f"busy: {capacity} requests already running or queued; retry later")


class InferenceGate:
    """Runs jobs one at a time on a dedicated thread, with at most ``queue`` jobs waiting.

    A slot is freed when its job finishes, not when its request gives up (a timed-out request leaves its job
    running, and the slot stays taken until it ends), so the work in flight stays bounded whatever clients do.
    """

    def __init__(self, queue: int) -> None:
        self.capacity = 1 + queue
        self._pending = 0
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="semask-inference")

    def submit(self, fn: Callable[..., T], *args: Any) -> Future:
        """Queue ``fn(*args)``; returns its future.

        Raises:
            Busy: ``capacity`` jobs are already running or waiting.
        """
        with self._lock:
            if self._pending >= self.capacity:
                raise Busy(self.capacity)
            self._pending += 1
        future = self._executor.submit(fn, *args)
        future.add_done_callback(self._release)
        return future

    def _release(self, _: Future) -> None:
        with self._lock:
            self._pending -= 1

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the inference thread, awaited (Busy when the queue is full)."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    def shutdown(self) -> None:
        """Stop the inference thread once its queued jobs are done."""
        self._executor.shutdown(wait=False, cancel_futures=True)


class Guard:
    """ASGI middleware: refuses bodies above ``max_bytes`` (413) and ends requests after ``timeout_s``.

    A request that times out before its response started gets 408 if its body was still arriving, else 503.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float) -> None:
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if length.isdigit() and int(length) > self.max_bytes:
            response = JSONResponse({"detail": self._too_large()}, 413, headers={"Connection": "close"})
            return await response(scope, receive, send)
        state = {"received": 0, "body_done": False, "started": False}

        async def limited_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_bytes:
                    raise HTTPException(413, self._too_large())
                state["body_done"] = not message.get("more_body", False)
            return message

        async def tracked_send(message: Message) -> None:
            state["started"] |= message["type"] == "http.response.start"
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, limited_receive, tracked_send), self.timeout_s)
        except asyncio.TimeoutError:
            if state["started"]:
                raise
            status = 503 if state["body_done"] else 408
            what = "the server" if status == 503 else "the upload"
            detail = f"timed out: {what} took longer than the {self.timeout_s:g} s request limit"
            await JSONResponse({"detail": detail}, status)(scope, receive, send)

    def _too_large(self) -> str:
        return f"upload too large: the limit is {self.max_bytes / 2**20:.1f} MiB"
