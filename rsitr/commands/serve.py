"""Serve an archive index over HTTP: a search web page plus a JSON API (text and image search, chip thumbnails).

Binds to 127.0.0.1 by default; the page is at http://HOST:PORT/ and the API description at /docs.
Requests are answered only when their Host header names the bound address, localhost or an --allowed-host
(so a web page cannot reach the server by rebinding its own DNS name to this machine).
"""

from __future__ import annotations

import argparse

from rsitr.commands import positive_float, positive_int
from rsitr.commands.options import add_inference_arguments, check_readable
from rsitr.commands.search import MAX_PIXELS_HELP, PRETRAINED_HELP
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
    parser.add_argument("--pretrained", metavar="CHECKPOINT", help=PRETRAINED_HELP)
    add_inference_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be from 0 to 65535, got {args.port}")
    check_readable(("index", args.index))
    import uvicorn

    from rsitr.api.app import LOCAL_HOSTS, create_app
    from rsitr.index.archive import DEFAULT_MAX_QUERY_PIXELS
    from rsitr.runtime import resolve_device, set_threads

    set_threads(args.threads)
    app = create_app(args.index, max_upload_bytes=int(args.max_upload_mb * 2**20),
                     max_pixels=args.max_pixels or DEFAULT_MAX_QUERY_PIXELS,
                     max_concurrent_images=args.max_concurrent_images, device=str(resolve_device(args.device)),
                     pretrained=args.pretrained, precision=args.precision,
                     allowed_hosts=[args.host, *LOCAL_HOSTS, *args.allowed_host])
    uvicorn.run(app, host=args.host, port=args.port)
    return 0
