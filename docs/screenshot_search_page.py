"""Take docs/search_page.png: the search page in headless Chromium on an index of real UC Merced images.

    python docs/screenshot_search_page.py INDEX_DIR [--query "tennis courts"] [--out docs/search_page.png]

INDEX_DIR is any index of ../shared/data/ucm/images (``benchmarks/feedback.py`` builds one under /tmp). The
page runs the query, marks the first result wanted and the last not wanted, refines, and is captured at
1400 x 900; the PNG is scaled to 1200 px wide and quantised to 128 colours to stay under 300 KB.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import uvicorn
from PIL import Image
from playwright.sync_api import sync_playwright

from rsitr.api.app import create_app

CHROMIUM = "/usr/bin/chromium"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index", type=Path)
    parser.add_argument("--query", default="many buildings and green trees")
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "search_page.png")
    args = parser.parse_args()
    server = uvicorn.Server(uvicorn.Config(create_app(args.index), host="127.0.0.1", port=args.port,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{args.port}"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{url}/?{'&'.join(['q=' + args.query.replace(' ', '+'), 'k=15'])}")
            page.wait_for_selector("#results figure")
            ids = page.eval_on_selector_all("#results figure", "f => f.map(x => x.dataset.chipId)")
            page.click(f"#results figure[data-chip-id='{ids[0]}'] .mark-wanted")
            page.click(f"#results figure[data-chip-id='{ids[-1]}'] .mark-unwanted")
            page.click("#refine")
            page.wait_for_function("document.querySelector('#status').textContent.includes('refined')")
            page.wait_for_function("[...document.querySelectorAll('#results img')].every(i => i.complete)")
            page.screenshot(path=str(args.out))
            browser.close()
    finally:
        server.should_exit = True
    image = Image.open(args.out).convert("RGB")
    image.resize((1200, 1200 * image.height // image.width), Image.LANCZOS).quantize(128).save(args.out, optimize=True)
    print(f"{args.out}: {args.out.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
