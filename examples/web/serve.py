"""Serve the page (this folder, with its node_modules) and exported models from 127.0.0.1, Python's standard library only.

    python examples/web/serve.py MODELS [--port 8000]

MODELS holds one folder per model as `eelbert export onnx CKPT MODELS/NAME` writes it; the page loads NAME from
/models/NAME/: open http://127.0.0.1:8000/?model=NAME&task=feature-extraction (or text-classification, fill-mask).
The tests and benchmarks/bench_web.py use `PageServer` and `run_headless` (the page POSTs its results to /results
when the URL has report=1).
"""

import argparse
import functools
import http.server
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

PAGE = Path(__file__).resolve().parent


class _Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, models: Path, results: queue.Queue, **kwargs):
        self.models, self.results = models, results
        super().__init__(*args, directory=str(PAGE), **kwargs)

    def translate_path(self, path):
        local = Path(super().translate_path(path)).relative_to(PAGE)  # normalised: no way out of the folder
        if local.parts[:1] == ("models",):  # /models/... from the models folder, the rest from the page's folder
            return str(self.models.joinpath(*local.parts[1:]))
        return str(PAGE / local)

    def do_POST(self):
        self.results.put(self.rfile.read(int(self.headers["Content-Length"])).decode())
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


class PageServer:
    """The page and the models folder on 127.0.0.1 (a free port), in a thread; `results` receives each POSTed body."""

    def __init__(self, models, port: int = 0):
        self.results = queue.Queue()
        handler = functools.partial(_Handler, models=Path(models).resolve(), results=self.results)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def run_headless(server: PageServer, query: str, timeout: float = 120) -> str:
    """Open the page with `query` (plus report=1) in a fresh headless Chromium profile; return the body it POSTs.
    Chromium is told not to reach anything but the page (no component updates, sync or background requests)."""
    with tempfile.TemporaryDirectory() as profile:
        command = [chromium(), "--headless", "--disable-gpu", f"--user-data-dir={profile}", "--no-first-run",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   "--no-default-browser-check", f"{server.url}?report=1&{query}"]
        if os.geteuid() == 0:
            command.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        # Chromium's own process group, so that stopping it stops its helper processes too
        browser = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)
        try:
            return server.results.get(timeout=timeout)
        except queue.Empty:
            os.killpg(browser.pid, signal.SIGKILL)
            raise TimeoutError(f"the page sent no results within {timeout} s; Chromium said:\n"
                               f"{browser.communicate()[1][-3000:]}") from None
        finally:
            os.killpg(browser.pid, signal.SIGKILL)
            browser.communicate()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", help="folder with one exported model per subfolder")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    with PageServer(args.models, args.port) as server:
        print(f"serving {PAGE} and {args.models} at {server.url} (Ctrl-C stops)")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
