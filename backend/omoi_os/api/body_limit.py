"""The request-size limit: a body is read no further than `MAX_BODY_BYTES`."""

from fastapi import HTTPException, Request

# Above the largest body the schema admits, however it is escaped: 20,000 characters
# of execution_summary, each at most 12 bytes as JSON (a \\uXXXX\\uXXXX pair), plus the
# other fields. A valid request is never refused for its size.
MAX_BODY_BYTES = 256 * 1024


class BodyTooLarge(HTTPException):
    """Raised while reading the body. An HTTPException, because FastAPI turns any other
    exception raised there into a 400 before our route sees it."""

    def __init__(self) -> None:
        super().__init__(413, f"request body larger than {MAX_BODY_BYTES} bytes")


class SizeLimitedRequest(Request):
    """A request whose body is read no further than `MAX_BODY_BYTES`, declared or
    streamed: a route never sees half a body, and a huge one is never buffered."""

    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            declared = self.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
                raise BodyTooLarge
            body = bytearray()
            async for chunk in self.stream():
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    raise BodyTooLarge
            self._body = bytes(body)
        return self._body
