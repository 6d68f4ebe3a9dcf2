"""A local HTTP file server with Range support that counts the bytes it serves (tests of remote rasters; no test
reaches beyond 127.0.0.1)."""

from __future__ import annotations

import hashlib
import re
import threading
from email.utils import formatdate
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class RangeServer:
    """``with RangeServer(folder) as server:`` serves ``folder`` at ``server.url``; ``served[name]`` counts the body
    bytes sent per file; ``failing`` makes every request answer 503 (a server that broke), and so does every
    request once ``fail_after`` bytes were served in all. ETag and Last-Modified come from the file's size and
    mtime."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.served, self.failing, self.requests = Path(folder), {}, False, 0
        self.fail_after: int | None = None
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(server.folder), **kwargs)

            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                server.requests += 1
                path = server.folder / self.path.lstrip("/").split("?")[0]
                if server.fail_after is not None and sum(server.served.values()) >= server.fail_after:
                    server.failing = True
                if server.failing:
                    self.send_error(503, "Service Unavailable")
                    return
                if not path.is_file():
                    self.send_error(404, "Not Found")
                    return
                stat = path.stat()
                size, start, end = stat.st_size, 0, stat.st_size - 1
                match = _RANGE.match(self.headers.get("Range", ""))
                if match and body:
                    first, last = match.groups()
                    start, end = (int(first), min(int(last or size - 1), size - 1)) if first else \
                        (max(0, size - int(last)), size - 1)
                self.send_response(206 if match and body else 200)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", '"' + hashlib.sha256(f"{size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
                                 + '"')
                self.send_header("Last-Modified", formatdate(stat.st_mtime, usegmt=True))
                self.send_header("Content-Length", str(end - start + 1))
                if match and body:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.end_headers()
                if body:
                    with open(path, "rb") as handle:
                        handle.seek(start)
                        data = handle.read(end - start + 1)
                    server.served[path.name] = server.served.get(path.name, 0) + len(data)
                    self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> RangeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
