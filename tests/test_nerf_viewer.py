"""The nerfstudio viewer of a running `ns-train bn-diner-cpu`, loaded in headless chromium: the 3D view
opens at the first training camera, and what it shows must match the ray-traced truth of the scene
from there -- the object where the object is -- far better than a blank white frame would."""

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

from bn_nerf.nerf.scene import render_view, write_scene

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WINDOW = (1200, 800)
# The viewer's control panel is the right-hand 320 px; its title bar is the top 51 px.
CONTROL_PANEL = 320
TITLE_BAR = 51
COMPARE_HEIGHT = 24


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


def canvas(screenshot: np.ndarray) -> np.ndarray:
    """The 3D view of a screenshot: right of it the control panel, above it the title bar."""
    return screenshot[TITLE_BAR:, : screenshot.shape[1] - CONTROL_PANEL]


def psnr(image: np.ndarray, truth: np.ndarray) -> float:
    return float(-10 * np.log10(np.mean((image - truth) ** 2)))


def truth_seen_by_the_viewer(scene: Path, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The scene ray-traced from the first training camera at the viewer's aspect (its field of view
    spans the height), composited on white; and where the object covers it."""
    pose = np.array(json.loads((scene / "transforms_train.json").read_text())["frames"][0]["transform_matrix"])
    rgba = render_view(pose, height, width)
    return rgba[..., :3] * rgba[..., 3:] + (1 - rgba[..., 3:]), rgba[..., 3] > 0.5


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (installed by .ci/run)")
def test_viewer_shows_the_scene_from_the_first_training_camera(tmp_path):
    scene = tmp_path / "scene"
    write_scene(scene, size=32, views={"train": 12, "val": 1, "test": 1})
    port = free_port()
    training = subprocess.Popen(
        [Path(sys.executable).parent / "ns-train", "bn-diner-cpu", "--data", scene, "--output-dir", tmp_path / "runs",
         "--viewer.websocket-port", str(port), "--max-num-iterations", "100000",
         # No training-camera frustums: the first one's image would sit in the view, in front of the render.
         "--viewer.max-num-display-images", "0",
         "--pipeline.datamanager.train-num-rays-per-batch", "512", "--steps-per-save", "40",
         # A 32-pixel scene needs neither the preset's table nor its fine marching.
         "--pipeline.model.table-resolution", "32", "--pipeline.model.occupancy-resolution", "32",
         "--pipeline.model.render-step-size", "0.04"],
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
        # Connect once training is under way: nerfstudio's viewer renders on connecting, then during
        # training at intervals it derives from how long the first render took.
        checkpoints = tmp_path / "runs"
        while not list(checkpoints.glob("*/*/*/nerfstudio_models/step-*80.ckpt")):
            assert training.poll() is None, "ns-train exited"
            assert time.monotonic() < deadline + 120, "no checkpoint of step 80 in time"
            time.sleep(1)
        page = DevToolsPage(tempfile.mkdtemp(dir=tmp_path))
        page.call("Page.navigate", url=f"http://127.0.0.1:{port}")
        history = []
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            time.sleep(3)
            screenshot = page.screenshot()
            view = canvas(screenshot)
            # Compare at the viewer's own coarse render resolution, not the browser's upscaling.
            height, width = COMPARE_HEIGHT, round(COMPARE_HEIGHT * view.shape[1] / view.shape[0])
            shown = np.asarray(Image.fromarray(view).resize((width, height), Image.BOX), dtype=float) / 255
            truth, object_mask = truth_seen_by_the_viewer(scene, height, width)
            history.append((psnr(shown, truth), psnr(np.ones_like(truth), truth),
                            float(np.abs(shown - 1)[object_mask].mean())))
            if history[-1][0] > history[-1][1] + 4 and history[-1][2] > 0.25:
                break
        Image.fromarray(screenshot).save(tmp_path / "viewer.png")
        shown_psnr, white_psnr, object_departure = history[-1]
        assert shown_psnr > white_psnr + 4, f"see {tmp_path / 'viewer.png'}: (view, white-frame PSNR, object vs white) {history}"
        # Where the object is, the view is the object's colours, not the white background.
        assert object_departure > 0.25, history
    finally:
        if page is not None:
            page.close()
        os.killpg(training.pid, signal.SIGTERM)
        training.wait(timeout=30)
