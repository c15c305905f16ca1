"""What the application itself costs per request, without sockets: the ASGI callables driven in-process.

    python bench/asgi_bench.py            # ~20 s

The service app (`create_app`, its lifespan run, one random policy of the default preset's shape loaded) and the
bare floor app of bench/floor_app.py are called with the scope, `receive` and `send` uvicorn would give them for a
one-observation `POST /act`, N times in a row; the figure is the best of several rounds of process CPU time per
request, so neighbours on a shared machine change it far less than they change a served benchmark's requests per
second. `/act minus floor` is what the service adds to the floor on a real server (bench/serve_bench.py measures
that server: uvicorn's own per-request cost comes on top of both).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/asgi_bench.py` from the repository root
    sys.path.insert(0, str(REPO))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as `python -m app` sets it

import uvloop  # noqa: E402
from starlette.types import ASGIApp, Message, Scope  # noqa: E402

from app.main import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402
from bench.floor_app import app as floor_app  # noqa: E402
from bench.service import random_policy_bytes  # noqa: E402

BODY = b'{"observation": [0.5, -0.25, 3.0]}'
HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"content-type", b"application/json"),
    (b"content-length", str(len(BODY)).encode()),
]


def http_scope(path: str) -> Scope:
    """A new scope per request, as uvicorn builds one."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "POST",
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": HEADERS,
        "state": {},
    }


async def receive() -> Message:
    return {"type": "http.request", "body": BODY, "more_body": False}


class Statuses:
    def __init__(self) -> None:
        self.not_ok = 0

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            self.not_ok += 1


async def cpu_us_per_request(app: ASGIApp, path: str, requests: int, rounds: int, statuses: Statuses) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(requests):
            await app(http_scope(path), receive, statuses.send)
        best = min(best, (time.process_time() - started) / requests)
    return best * 1e6


async def measure(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="asgi-bench-"))
    policy = workdir / "actor.safetensors"
    policy.write_bytes(random_policy_bytes(1, args.hidden_size))
    settings = Settings(
        data_dir=workdir,
        database_url=f"sqlite:///{workdir}/db.sqlite",
        policy_file=policy,
        bench_endpoints=True,
        log_level="WARNING",
    )
    app = create_app(settings)
    statuses = Statuses()
    async with app.router.lifespan_context(app):
        print("| Round | floor app us/req | POST /bench/noop us/req | POST /act us/req | /act minus floor us |")
        print("|---:|---:|---:|---:|---:|")
        for index in range(args.repeats):
            floor = await cpu_us_per_request(floor_app, "/act", args.requests, args.rounds, statuses)
            noop = await cpu_us_per_request(app, "/bench/noop", args.requests, args.rounds, statuses)
            act = await cpu_us_per_request(app, "/act", args.requests, args.rounds, statuses)
            print(f"| {index + 1} | {floor:.2f} | {noop:.2f} | {act:.2f} | {act - floor:.2f} |")
    if statuses.not_ok:
        raise SystemExit(f"{statuses.not_ok} answers were not 200")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per figure (the best is kept)")
    parser.add_argument("--repeats", type=int, default=3, help="table rows")
    parser.add_argument("--hidden-size", type=int, default=64, help="actor width (the default preset's is 64)")
    uvloop.run(measure(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
