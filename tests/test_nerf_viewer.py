"""The nerfstudio viewer of a running `ns-train bn-nerf-cpu`, loaded in headless chromium: the
screenshot must show a render in the 3D view, not the viewer's empty dark canvas."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from websockets.sync.client import connect

from bn_nerf.nerf.scene import write_scene

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WINDOW = (1200, 800)
# The viewer's control panel is the right-hand 320 px; its title bar is the top 51 px.
CANVAS_BOX = (0, 60, WINDOW[0] - 330, 640)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class DevToolsPage:
    """A headless chromium page driven over the Chrome DevTools Protocol."""

    def __init__(self, user_data_dir: str):
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={user_data_dir}", "--remote-debugging-port=0",
                 f"--window-size={WINDOW[0]},{WINDOW[1]}",
                 # Software WebGL for the viewer's three.js canvas on a machine without a GPU.
                 "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "about:blank"]
        self.process = subprocess.Popen([CHROMIUM, *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(user_data_dir) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.2)
        port = port_file.read_text().split()[0]
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list").read())
        url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        self.socket = connect(url, max_size=None)
        self.message_id = 0

    def call(self, method: str, **params) -> dict:
        self.message_id += 1
        self.socket.send(json.dumps({"id": self.message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.message_id:
                return message.get("result", {})

    def screenshot(self) -> np.ndarray:
        png = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

    def close(self) -> None:
        self.socket.close()
        self.process.terminate()
        self.process.wait(timeout=10)


def rendered_fraction(screenshot: np.ndarray) -> float:
    """Share of the 3D view's pixels that are not the empty viewer's near-black background."""
    left, top, right, bottom = CANVAS_BOX
    canvas = screenshot[top:bottom, left:right].astype(float)
    return float((canvas.mean(-1) > 45).mean())


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (installed by .ci/run)")
def test_viewer_shows_a_render_in_headless_chromium(tmp_path):
    scene = tmp_path / "scene"
    write_scene(scene, size=16, views={"train": 4, "val": 1, "test": 1})
    port = free_port()
    training = subprocess.Popen(
        [Path(sys.executable).parent / "ns-train", "bn-nerf-cpu", "--data", scene, "--output-dir", tmp_path / "runs",
         "--viewer.websocket-port", str(port), "--max-num-iterations", "100000",
         "--pipeline.model.trunk-depth", "2", "--pipeline.model.trunk-width", "32",
         "--pipeline.model.skip-connections", "1", "--pipeline.model.num-coarse-samples", "8",
         "--pipeline.model.num-importance-samples", "8", "--pipeline.datamanager.train-num-rays-per-batch", "128"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # One torch thread: chromium's software WebGL needs the other core of a 2-core machine.
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        start_new_session=True,
    )
    page = None
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}", timeout=2)
                break
            except OSError:
                assert training.poll() is None, "ns-train exited before its viewer started"
                assert time.monotonic() < deadline, "the viewer did not start"
                time.sleep(1)
        page = DevToolsPage(tempfile.mkdtemp(dir=tmp_path))
        page.call("Page.navigate", url=f"http://127.0.0.1:{port}")
        fractions = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            time.sleep(2)
            screenshot = page.screenshot()
            fractions.append(rendered_fraction(screenshot))
            if fractions[-1] > 0.5:
                break
        Image.fromarray(screenshot).save(tmp_path / "viewer.png")
        assert fractions[-1] > 0.5, f"no render in the viewer after 90 s; see {tmp_path / 'viewer.png'}: {fractions}"
    finally:
        if page is not None:
            page.close()
        os.killpg(training.pid, signal.SIGTERM)
        training.wait(timeout=30)
