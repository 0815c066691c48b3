"""The limits of ``semask serve`` (no web dependencies: the CLI reads the defaults from here)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Limits of the demo server.

    Attributes:
        max_upload_bytes: largest request body (the multipart upload) in bytes.
        max_pixels: largest decoded image, H * W in pixels, checked from the image header before decoding.
        queue: requests that may wait while one inference runs; more at once get 503.
        timeout_s: seconds a request may take in all (upload, queue, inference) before it gets 408/503.
    """

    max_upload_bytes: int = 20 * 2**20
    max_pixels: int = 2**24
    queue: int = 4
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_upload_bytes <= 0 or self.max_pixels <= 0 or self.queue < 0 or self.timeout_s <= 0:
            raise ValueError(f"limits must be positive (queue >= 0), got {self}")
