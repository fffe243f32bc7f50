"""A stand-in for a vLLM server process, for unit tests of server supervision.

`python -m tests.fake_server_process --port P` answers `GET /health` with its pid; `POST /crash`
makes it write a Python exception line to its log and exit with code 7, as vLLM does when its
engine dies; with `--crash_after_health N` it does so by itself once it has answered N health
checks. While the file named by `--refuse_start_if` exists it exits at once with code 1 and an
`OSError` line, as vLLM does when its port is taken or its model cannot be loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CRASH_LINE = "RuntimeError: scripted crash"
REFUSED_LINE = "OSError: scripted start failure"


def crash() -> None:
    print("INFO a line before the error", flush=True)
    print(CRASH_LINE, flush=True)
    print("Shutting down", flush=True)
    os._exit(7)


class Handler(BaseHTTPRequestHandler):
    health_checks_left: int | None = None

    def do_GET(self) -> None:
        body = json.dumps({"pid": os.getpid()}).encode()
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if self.path == "/health" and Handler.health_checks_left is not None:
            Handler.health_checks_left -= 1
            if Handler.health_checks_left <= 0:
                crash()

    def do_POST(self) -> None:
        if self.path == "/crash":
            crash()
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:  # quiet: the log is for the error lines
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--refuse_start_if")
    parser.add_argument("--crash_after_health", type=int)
    args, _vllm_flags = parser.parse_known_args()  # it stands in for vLLM: vLLM's flags change nothing
    Handler.health_checks_left = args.crash_after_health
    if args.refuse_start_if and Path(args.refuse_start_if).exists():
        print(REFUSED_LINE, flush=True)
        sys.exit(1)
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
