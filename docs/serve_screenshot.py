"""The page of ``camvideo serve`` as a browser shows it: a screenshot by headless Chromium.

Runs the real command (``camvideo serve sample``, the default model) on a free port of
127.0.0.1, opens the printed URL in Debian's chromium through Playwright, waits for frames
and the status line, and saves a screenshot (``docs/serve.png`` comes from
``python docs/serve_screenshot.py --out docs/serve.png``). Then stops the server with
Ctrl-C (SIGINT), as a user would.
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("serve.png"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--seconds", type=float, default=6.0, help="of frames before the screenshot [6]")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "camvideo", "serve", "sample", "--port", str(port)],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        line = server.stdout.readline()  # type: ignore[union-attr]
        print(line.strip(), file=sys.stderr)
        url = f"http://127.0.0.1:{port}/"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, headless=True, args=BROWSER_ARGS)
            page = browser.new_page(viewport={"width": 1180, "height": 590})
            page.goto(url)
            page.wait_for_function("window.camvideo.frames > 0", timeout=120_000)
            time.sleep(args.seconds)
            page.wait_for_function("document.getElementById('status').textContent.includes('model')")
            page.screenshot(path=str(args.out))
            print(page.inner_text("#status"), file=sys.stderr)
            browser.close()
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(60)
    print(f"saved {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
