"""The running app on 127.0.0.1 under a burst larger than its queue, and hostile HTTP requests.

The app runs with TWINSIGHT_CONCURRENCY=1, TWINSIGHT_QUEUE_SIZE=2 and TWINSIGHT_MAX_UPLOAD=1mb, so a burst of
BURST concurrent gradio_client requests overflows the queue on purpose.
"""
from __future__ import annotations

import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app_server import ROOT, AppServer

BURST = 16
QUEUE_SIZE, CONCURRENCY = 2, 1
RSS_GROWTH_LIMIT_MB = 300  # the burst's uploads are ~0.1 MB each: growth beyond this would mean unbounded buffering


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with AppServer(tmp_path_factory.mktemp("app"), env={
        "TWINSIGHT_QUEUE_SIZE": str(QUEUE_SIZE), "TWINSIGHT_CONCURRENCY": str(CONCURRENCY), "TWINSIGHT_MAX_UPLOAD": "1mb",
    }) as app:
        yield app


@pytest.fixture(scope="module")
def pictures(tmp_path_factory, photos):
    folder = tmp_path_factory.mktemp("pictures")
    paths = {}
    for name in ("chelsea", "coffee"):
        paths[name] = folder / f"{name}.jpg"
        Image.fromarray(photos[name]).resize((256, 192)).save(paths[name], quality=90)
    return paths


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_burst_beyond_the_queue_gets_busy_answers_and_no_wrong_ones(server, pictures):
    from gradio_client import Client, handle_file

    def compare(client, a, b):
        similarity, *_ = client.predict(image_a=handle_file(str(pictures[a])), image_b=handle_file(str(pictures[b])),
                                        mode="general", api_name="/compare")
        return similarity

    client = Client(server.url, verbose=False)
    expected = {("chelsea", "chelsea"): 1.0, ("chelsea", "coffee"): compare(client, "chelsea", "coffee")}
    assert expected[("chelsea", "coffee")] < 0.95
    clients = [Client(server.url, verbose=False) for _ in range(BURST)]  # one per simulated user
    baseline = rss_mb(server.process.pid)
    peak = [baseline]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mb(server.process.pid))
            time.sleep(0.05)

    def user(k):
        pair = ("chelsea", "chelsea") if k % 2 else ("chelsea", "coffee")
        try:
            return pair, "ok", compare(clients[k], *pair)
        except Exception as exc:  # noqa: BLE001 - classified below
            return pair, type(exc).__name__, str(exc)

    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.monotonic()
    with ThreadPoolExecutor(BURST) as pool:
        results = list(pool.map(user, range(BURST)))
    took = time.monotonic() - started
    stop.set()
    sampler.join()

    answered = [(pair, value) for pair, kind, value in results if kind == "ok"]
    busy = [value for _, kind, value in results if kind != "ok"]
    assert all("queue is full" in message.lower() for message in busy), busy  # the only failure is "busy"
    assert busy, "a burst of 16 against a queue of 2 should overflow it"
    assert answered, "the app should still answer some of the burst"
    for pair, similarity in answered:  # zero wrong answers
        assert similarity == pytest.approx(expected[pair], abs=1e-3), (pair, similarity)
    assert peak[0] - baseline < RSS_GROWTH_LIMIT_MB, (baseline, peak[0])
    # It recovers: a normal request right after the burst is answered correctly.
    assert compare(client, "chelsea", "chelsea") == pytest.approx(1.0, abs=1e-3)
    assert server.process.poll() is None
    print(f"\nburst of {BURST}: {len(answered)} answered correctly, {len(busy)} told the queue is full, {took:.1f}s; "
          f"RSS {baseline:.0f} MB -> peak {peak[0]:.0f} MB -> {rss_mb(server.process.pid):.0f} MB after")


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


SECRETS = {
    "/etc/passwd": b"root:",
    str(ROOT / "app.py"): b"def build_app",
    str(ROOT / "requirements.txt"): b"gradio==",
}


@pytest.mark.parametrize("target", [
    "{abs}", "..{rel}", "../../../../../../..{rel}", "%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e{rel}",
    "/tmp/../{relnoslash}", "file://{abs}",
], ids=["absolute", "dotdot", "deep-dotdot", "encoded-dotdot", "tmp-dotdot", "file-scheme"])
def test_file_route_serves_no_arbitrary_path(server, target):
    for secret, marker in SECRETS.items():
        path = target.format(abs=secret, rel=secret, relnoslash=secret.lstrip("/"))
        for route in (f"/gradio_api/file={path}", f"/file={path}", f"/gradio_api/file/{path}"):
            status, body = _get(server.url + route)
            assert marker not in body, (route, status)
            assert status in (400, 403, 404, 405), (route, status)


def test_file_route_does_not_fetch_internal_urls(server):
    """The file route proxies public URLs only: the app's own loopback address is refused (no SSRF)."""
    status, body = _get(f"{server.url}/gradio_api/file={server.url}/config")
    assert status >= 400 and b"components" not in body


def test_index_directory_is_not_served(server):
    """The gallery's index (meta.json, vectors, stored images) lives outside Gradio's allowed paths."""
    index_files = sorted((Path(server.log_path).parent / "indexes").rglob("meta.json"))
    assert index_files, "the app should have built its gallery index in TWINSIGHT_INDEX_DIR"
    for file in index_files:
        status, body = _get(f"{server.url}/gradio_api/file={file}")
        assert status == 403 and b"twinsight-index" not in body


def test_result_images_are_served_from_the_apps_output_directory(server, pictures):
    """Thumbnails and crops are served where the app wrote them (its private static directory), not hashed and
    copied into Gradio's cache on every answer, and what is served is the file itself."""
    from gradio_client import Client, handle_file

    client = Client(server.url, verbose=False, download_files=False)
    results, _, _ = client.predict(handle_file(str(pictures["coffee"])), "", 2, [], api_name="/search")
    *_, crops = client.predict(image_a=handle_file(str(pictures["coffee"])), image_b=handle_file(str(pictures["chelsea"])),
                               mode="general", api_name="/compare")
    files = [item["image"] for item in results + crops]
    assert len(files) == 4
    for file in files:
        path = Path(file["path"])
        assert path.parent.name.startswith("twinsight-outputs-") and path.suffix == ".jpg", path
        status, body = _get(server.url + urllib.parse.urlparse(file["url"]).path)
        assert status == 200 and body == path.read_bytes() and body[:2] == b"\xff\xd8"


def test_uploads_over_the_cap_are_refused(server, tmp_path):
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (900, 900, 3), dtype=np.uint8)).save(big)
    assert big.stat().st_size > 1_000_000
    boundary = "twinsightboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + big.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{server.url}/gradio_api/upload", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, text = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read()
    assert status == 413, (status, text[:200])
    small = tmp_path / "small.png"
    Image.new("RGB", (10, 10)).save(small)
    body = body.replace(big.read_bytes(), small.read_bytes())
    request = urllib.request.Request(f"{server.url}/gradio_api/upload", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


def test_bad_uploads_through_the_running_app_get_clear_messages(server, pictures, tmp_path):
    """The corpus's refusals reach an API caller as the callback's message (no traceback, no generic error),
    and the app keeps answering."""
    from gradio_client import Client, handle_file

    from bad_inputs import make_corpus

    client = Client(server.url, verbose=False)
    refused = [case for case in make_corpus(tmp_path / "corpus") if not case.ok and case.path.exists()]
    assert len(refused) >= 10
    for case in refused:
        with pytest.raises(Exception) as raised:
            client.predict(image_a=handle_file(str(case.path)), image_b=handle_file(str(pictures["chelsea"])),
                           mode="general", api_name="/compare")
        message = str(raised.value)
        assert re.search(case.message, message) and "Traceback" not in message, (case.name, message)
    similarity, *_ = client.predict(image_a=handle_file(str(pictures["coffee"])), image_b=handle_file(str(pictures["coffee"])),
                                    mode="general", api_name="/compare")
    assert similarity == pytest.approx(1.0, abs=1e-3)


def test_api_input_naming_a_server_file_is_refused(server):
    """A forged FileData pointing at a server path (not an upload) never reaches a callback."""
    import json

    for path in ("/etc/passwd", str(ROOT / "app.py")):
        forged = {"path": path, "meta": {"_type": "gradio.FileData"}, "orig_name": "x.png"}
        body = json.dumps({"data": [forged, forged, "general", 0.5]}).encode()
        request = urllib.request.Request(f"{server.url}/gradio_api/call/compare", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            event_id = json.loads(response.read())["event_id"]
        status, stream = _get(f"{server.url}/gradio_api/call/compare/{event_id}")
        assert b"event: error" in stream and b"root:" not in stream and b"def build_app" not in stream, stream[:300]
        assert b"event: complete" not in stream
