"""Start the real app in a subprocess on 127.0.0.1 for end-to-end and API tests."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AppServer:
    def __init__(self, workdir: Path, model: str = "effnet-lite0", extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "app.log"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
               "TWINSIGHT_INDEX_DIR": str(workdir / "indexes"), **(env or {})}  # `env` overrides the defaults
        args = [sys.executable, str(ROOT / "app.py"), "--model", model, "--host", "127.0.0.1", "--port", str(self.port)]
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(args + (extra_args or []), cwd=workdir, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 240) -> "AppServer":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"app exited with {self.process.returncode}:\n{self.log_path.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"app not ready after {timeout}s:\n{self.log_path.read_text()[-4000:]}")

    def __enter__(self) -> "AppServer":
        try:
            return self.wait_ready()
        except BaseException:
            self.stop()  # a start that failed must not leave the process behind
            raise

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()
