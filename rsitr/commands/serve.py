"""Serve an archive index over HTTP: a search web page plus a JSON API (text and image search, chip thumbnails).

Binds to 127.0.0.1 by default; the page is at http://HOST:PORT/ and the API description at /docs.
Requests are answered only when their Host header names the bound address, localhost or an --allowed-host
(so a web page cannot reach the server by rebinding its own DNS name to this machine).

Examples (after `rsitr index rsitr/demo_data/ucm --out ucm.index`):
  rsitr serve ucm.index
  rsitr serve ucm.index --port 8080 --host 0.0.0.0 --allowed-host archive.lan
  rsitr serve s2.index --basemap 'https://tile.openstreetmap.org/{z}/{x}/{y}.png'
"""

from __future__ import annotations

import argparse

from rsitr.commands import positive_float, positive_int
from rsitr.commands.options import add_inference_arguments
from rsitr.commands.search import MAX_PIXELS_HELP, add_checkpoint_argument, check_index
from rsitr.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("index", help="index directory written by `rsitr index`")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port, 0 to 65535 (0: any free one; default 8000)")
    parser.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                        help="another host name clients use to reach the server (repeatable; besides the bound "
                             "address and localhost), e.g. the machine's name when binding 0.0.0.0; '*' allows any")
    parser.add_argument("--max-upload-mb", type=positive_float, default=10.0,
                        help="largest accepted query image upload in MiB (default 10); larger ones get 413")
    parser.add_argument("--max-pixels", type=positive_int, default=None, help=MAX_PIXELS_HELP + "; larger get 413")
    parser.add_argument("--max-concurrent-images", type=positive_int, default=2,
                        help="uploads decoded and encoded at once; more wait, so memory stays bounded (default 2)")
    parser.add_argument("--basemap", metavar="URL_TEMPLATE",
                        help="tiles the page's map shows under the footprints, e.g. "
                             "'https://tile.example.org/{z}/{x}/{y}.png' (a page's user may set another); without it "
                             "the page contacts no tile server")
    add_checkpoint_argument(parser)
    add_inference_arguments(parser, runtime=True)


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be from 0 to 65535, got {args.port}")
    check_index(args.index)
    port = free_port(args.host, args.port)  # a busy or privileged port is one line before the model loads
    from rsitr.api.app import check_basemap

    if args.basemap is not None:
        check_basemap(args.basemap)
    from rsitr.runtime import device_name, set_threads

    device = device_name(args.device)
    import uvicorn

    from rsitr.api.app import LOCAL_HOSTS, create_app
    from rsitr.api.server import HeaderTimeoutProtocol
    from rsitr.index.archive import DEFAULT_MAX_QUERY_PIXELS

    set_threads(args.threads)
    print(f"loading the index {args.index} and its model ...", flush=True)
    app = create_app(args.index, max_upload_bytes=int(args.max_upload_mb * 2**20),
                     max_pixels=args.max_pixels or DEFAULT_MAX_QUERY_PIXELS,
                     max_concurrent_images=args.max_concurrent_images, device=device,
                     checkpoint=args.checkpoint, precision=args.precision, runtime=args.runtime,
                     allowed_hosts=[args.host, *LOCAL_HOSTS, *args.allowed_host], basemap=args.basemap)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"serving {args.index} at http://{host}:{port}/ (API described at /docs); Ctrl-C stops", flush=True)
    uvicorn.run(app, host=args.host, port=port, log_level="info" if args.verbose else "warning",
                http=HeaderTimeoutProtocol)
    return 0


def free_port(host: str, port: int) -> int:
    """``port`` (or, for 0, a free one) after checking that ``host`` can bind it now, as a :class:`UserError` that
    says why not: in use, privileged, or not an address of this machine. uvicorn would say so only after the model
    has loaded, in several log lines."""
    import errno
    import socket

    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                                 flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as err:
        raise UserError(f"--host {host}: not an address or a name this machine resolves ({err.strerror})") from err
    with socket.socket(family, kind, protocol) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise UserError(f"port {port} on {host} is in use (another `rsitr serve`?): stop that process, or "
                                f"pick another --port (0: any free one)") from err
            if err.errno == errno.EACCES:
                raise UserError(f"port {port} needs administrator rights (ports below 1024 are privileged): pick "
                                f"--port 1024 or above, e.g. 8000") from err
            if err.errno == errno.EADDRNOTAVAIL:
                raise UserError(f"--host {host} is not an address of this machine: bind 127.0.0.1 (this machine "
                                f"only) or 0.0.0.0 (every interface)") from err
            raise
        return probe.getsockname()[1]
