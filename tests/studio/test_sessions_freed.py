"""A closed tab frees what the server held for it: the editing sessions, their preview files, and Gradio's
own copy of the session's state."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from benchmarks.load import BrowserProtocol
from studio import app as studio_app
from studio.app import StudioConfig, build_app, launch_kwargs
from studio.components import PREVIEW_DIR, _safe_name
from tests.browser import free_port


@pytest.mark.slow
def test_closed_sessions_are_freed(samples_copy, tmp_path, monkeypatch):
    monkeypatch.setattr(studio_app, "CLOSED_SESSION_GRACE_S", 0.5)
    config = StudioConfig.for_data(samples_copy, tmp_path / "ws", port=free_port())
    demo = build_app(config)
    kwargs = launch_kwargs(config)
    demo.launch(**kwargs, prevent_thread_lock=True, quiet=True)
    try:
        url = f"http://127.0.0.1:{config.port}/"
        pages = [BrowserProtocol(url) for _ in range(3)]
        for page in pages:
            reply = page.call("/annotate_open", {"annotate-sample": "chelsea", "annotate-opacity": 0.5})
            assert reply["annotator"]["boxes"]
        holder = demo.server_app.state_holder.session_data
        hashes = {page.session_hash for page in pages}
        assert hashes <= set(holder) and set(demo.annotate.sessions.sessions()) >= hashes
        cache = Path(demo.annotate.annotator.GRADIO_CACHE)
        previews = [p for h in hashes for p in (cache / PREVIEW_DIR / _safe_name(f"{h}|chelsea")).glob("*.jpg")]
        for page in pages:
            page.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (hashes & set(holder) or hashes & set(demo.annotate.sessions.sessions())):
            time.sleep(0.2)
        assert not hashes & set(holder), "Gradio still holds the closed sessions"
        assert not hashes & set(demo.annotate.sessions.sessions())
        assert previews and not any(p.exists() for p in previews)
    finally:
        demo.close()
