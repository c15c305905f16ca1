"""The floor of the serving stack: a bare ASGI app answering a constant, served exactly as `python -m app` serves.

    python -m bench.floor_app          # PORT, WORKERS and the other settings from the environment, as the service

bench/serve_bench.py runs it as a server process of its own beside the service and loads both with the same
generator in the same run, so `/act` can be stated as a share of what this uvicorn (same loop, same HTTP protocol
class, same options: `app.launcher.uvicorn_options`) does with no application at all. The app reads the request
body, as any POST endpoint must, and answers a prebuilt JSON body with prebuilt headers: nothing else.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/floor_app.py` from the repository root
    sys.path.insert(0, str(REPO))

from starlette.types import Message, Receive, Scope, Send  # noqa: E402

FLOOR_BODY = b'{"ok":true}'
_START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-length", str(len(FLOOR_BODY)).encode()), (b"content-type", b"application/json")],
}
_BODY: Message = {"type": "http.response.body", "body": FLOOR_BODY}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        while (await receive()).get("more_body", False):
            pass
        await send(_START)
        await send(_BODY)
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def main() -> int:
    import uvicorn

    from app.launcher import uvicorn_options
    from app.settings import Settings

    uvicorn.run("bench.floor_app:app", **uvicorn_options(Settings()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
