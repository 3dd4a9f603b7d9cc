"""The app's request queue (app.queued): what it costs per event beyond the callback."""
from __future__ import annotations

import gradio as gr
import pytest

import app


@pytest.fixture
def queue(monkeypatch):
    blocks = gr.Blocks()
    monkeypatch.setenv("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1")  # Gradio's default; what app.queued sets is undone after
    return app.queued(blocks)._queue


def test_analytics_summary_is_rebuilt_every_100th_event_not_every_event(queue, monkeypatch):
    """Gradio summarises its past events (a pandas DataFrame of up to 10,000) after each event; the app's queue
    does it every ANALYTICS_EVERY events, so a request does not pay for all the requests before it."""
    frames = []
    make_frame = queue._get_df
    monkeypatch.setattr(queue, "_get_df", lambda records: frames.append(len(records)) or make_frame(records))
    records = [{"time": 0.0, "status": "success", "process_time": 0.1, "function": "search", "session_hash": "s"}]
    for _ in range(250):
        queue.events_recorded += 1  # what Queue.push counts for each event
        summary = queue.compute_analytics_summary(records)
    assert len(frames) == 2  # at the 100th and the 200th event
    assert summary["functions"]["search"]["success_rate"] == 1.0  # the summary is still there, just not rebuilt each time
