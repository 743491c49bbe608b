"""Annotate under load: N people refining boxes at once against one studio, over Gradio's API.

    python benchmarks/load.py [--levels 1,2,4,8] [--rounds 5] [--settle 60] [--json]

Starts the studio on a copy of the bundled samples (loopback only), then for each level runs N concurrent
``gradio_client`` sessions; each opens a sample (the four samples in turn) and refines ``--rounds`` new boxes
of its own, one at a time, waiting for each reply. Prints per level the p50 / p95 / max latency of a refine
round trip (request to reply, the preview image included), its ratio to one session and to the bare compute
of the same boxes (the same refiner, warm, in this process), the sample-open latency, and errors. Then closes
every session and reports the server's memory (idle after start, idle after a warm-up box, after the load,
``--settle`` seconds after the last session closed) and the size of Gradio's cache folder.

Targets (issue "Annotate under real use"): one session <= 2x the bare compute; 8 sessions p95 <= 0.8 s;
0 errors in >= 1,000 box events; memory within 50 MB of idle after close; the cache bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser import free_port, wait_for_http  # noqa: E402

SAMPLES = ("astronaut", "chelsea", "coffee", "grace_hopper")
SIZES = {"astronaut": (512, 512), "chelsea": (300, 451), "coffee": (400, 600), "grace_hopper": (600, 512)}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def rss_mb(pid: int) -> float:
    """Resident memory of the server and its worker processes, MB."""
    import psutil

    process = psutil.Process(pid)
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            continue
    return total / 2**20


def rss_split_mb(pid: int) -> dict[str, float]:
    """Resident memory of the server process alone and of its workers together, MB."""
    import psutil

    process = psutil.Process(pid)
    workers = 0
    for child in process.children(recursive=True):
        try:
            workers += child.memory_info().rss
        except psutil.Error:
            continue
    return {"server": round(process.memory_info().rss / 2**20, 1), "workers": round(workers / 2**20, 1)}


def folder_size(path: Path) -> tuple[int, float]:
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
    return len(files), sum(p.stat().st_size for p in files) / 2**20


def unique_box(rng: random.Random, sample: str) -> dict:
    """A box of 60-160 px somewhere in the sample, never drawn before (positions are random)."""
    height, width = SIZES[sample]
    w, h = rng.randint(60, 160), rng.randint(60, 160)
    x0, y0 = rng.randint(0, width - w - 1), rng.randint(0, height - h - 1)
    return {"xmin": x0, "ymin": y0, "xmax": x0 + w, "ymax": y0 + h, "label": "dog"}


# events of the studio before this benchmark existed, found by the components they read and write
LEGACY_EVENTS = {"annotate_open": ({"annotate-sample"}, {"annotator"}), "annotate_boxes": ({"annotator"}, {"annotator"}),
                 "annotate_save": (set(), {"save-status"})}  # fmt: skip


class BrowserProtocol:
    """Gradio's queue protocol as the browser speaks it: join the queue, read the session's event stream,
    then fetch the preview image the reply names (one HTTP connection per session, no polling)."""

    def __init__(self, url: str):
        import uuid

        import httpx

        self.url = url.rstrip("/")
        self.http = httpx.Client(timeout=120)
        self.session_hash = uuid.uuid4().hex
        config = self.http.get(f"{self.url}/config").json()
        self.elem = {c["id"]: c.get("props", {}).get("elem_id") for c in config["components"]}
        self.fns = {d["api_name"]: (d["id"], d["inputs"], d["outputs"]) for d in config["dependencies"]
                    if d.get("api_name")}  # fmt: skip
        self._closed = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, daemon=True)  # an open page keeps this stream
        self._heartbeat.start()
        for name, (needs_in, needs_out) in LEGACY_EVENTS.items():  # the studio before the load work named none
            if name not in self.fns:
                for d in config["dependencies"]:
                    ins, outs = {self.elem.get(i) for i in d["inputs"]}, {self.elem.get(o) for o in d["outputs"]}
                    if needs_in <= ins and needs_out <= outs:
                        self.fns[name] = (d["id"], d["inputs"], d["outputs"])
                        break

    def call(self, api_name: str, values: dict[str, object]) -> dict[str, object]:
        """Call an event by API name; ``values`` maps input elem ids to values (states are the server's).
        Returns the outputs by elem id."""
        import json as _json

        fn_index, inputs, outputs = self.fns[api_name.strip("/")]
        data = [values.get(self.elem.get(cid) or "", None) for cid in inputs]
        joined = self.http.post(f"{self.url}/gradio_api/queue/join", json={"data": data, "fn_index": fn_index,
                                "session_hash": self.session_hash, "event_data": None, "trigger_id": None})  # fmt: skip
        joined.raise_for_status()
        event_id = joined.json()["event_id"]
        with self.http.stream("GET", f"{self.url}/gradio_api/queue/data",
                              params={"session_hash": self.session_hash}) as stream:  # fmt: skip
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                message = _json.loads(line[5:])
                if message.get("event_id") != event_id or message.get("msg") != "process_completed":
                    continue
                output = message.get("output") or {}
                if not message.get("success", False):
                    raise RuntimeError(output.get("error") or "the event failed")
                data = self._fetch_files(output.get("data") or [])
                return {self.elem.get(cid) or str(cid): value for cid, value in zip(outputs, data, strict=False)}
        raise RuntimeError("the event stream ended without a result")

    def _fetch_files(self, data: list) -> list:
        data = [v.get("value") if isinstance(v, dict) and v.get("__type__") == "update" else v for v in data]
        for value in data:
            image = value.get("image") if isinstance(value, dict) else None
            if isinstance(image, dict) and image.get("url"):
                self.http.get(image["url"]).raise_for_status()  # the browser shows the preview: fetch it
        return data

    def _beat(self) -> None:
        """Hold the heartbeat stream an open page holds; closing it is how the server learns the tab closed."""
        import httpx

        self._beat_client = httpx.Client(timeout=None)
        try:
            with self._beat_client.stream("GET", f"{self.url}/gradio_api/heartbeat/{self.session_hash}") as stream:
                for _ in stream.iter_bytes():
                    if self._closed.is_set():
                        return
        except (httpx.HTTPError, RuntimeError, OSError):
            return

    def close(self) -> None:
        self._closed.set()
        self.http.close()
        beat = getattr(self, "_beat_client", None)
        if beat is not None:
            beat.close()  # drops the heartbeat connection: the server sees the page go
        self._heartbeat.join(timeout=5)


class GradioClientProtocol:
    """``gradio_client.Client`` (it polls its message queue every 50 ms, which adds to every round trip)."""

    def __init__(self, url: str):
        from gradio_client import Client

        self.client = Client(url, verbose=False, download_files=tempfile.mkdtemp(prefix="segstudio-load-"))

    def call(self, api_name: str, values: dict[str, object]) -> dict[str, object]:
        if api_name == "/annotate_open":
            result = self.client.predict(sample_id=values["annotate-sample"], browser=None, alpha=0.5, api_name=api_name)
        elif api_name == "/annotate_boxes":
            result = self.client.predict(browser=None, alpha=0.5, value=values["annotator"], cls=values["annotate-class"],
                                         meth=values["annotate-method"], auto=True, api_name=api_name)  # fmt: skip
        else:
            result = self.client.predict(browser=None, alpha=0.5, api_name=api_name)
        return {"annotator": result[0]}

    def close(self) -> None:
        self.client.close()


def as_browser_sends(box: dict) -> dict:
    """A box as the annotator's front end sends it back (colours as ``rgb(r, g, b)`` strings)."""
    color = box.get("color")
    if isinstance(color, (list, tuple)) and len(color) == 3:
        return {**box, "color": f"rgb({color[0]}, {color[1]}, {color[2]})"}
    return box


class User:
    """One session: opens a sample, then refines new boxes one at a time."""

    def __init__(self, url: str, index: int, seed: int, protocol: str = "browser"):
        self.client = (BrowserProtocol if protocol == "browser" else GradioClientProtocol)(url)
        self.sample = SAMPLES[index % len(SAMPLES)]
        self.rng = random.Random(seed)
        self.boxes: list[dict] = []
        self.image = None
        self.open_s: list[float] = []
        self.refine_s: list[float] = []
        self.errors: list[str] = []
        self.drawn: list[dict] = []

    def run(self, rounds: int) -> None:
        try:
            start = time.perf_counter()
            result = self.client.call("/annotate_open", {"annotate-sample": self.sample, "annotate-opacity": 0.5})
            self.open_s.append(time.perf_counter() - start)
            value = result.get("annotator") or {}
            self.boxes, self.image = list(value.get("boxes") or []), value.get("image")
        except Exception as exc:  # noqa: BLE001 - every failure is counted, whatever it is
            self.errors.append(f"open: {type(exc).__name__}: {exc}")
            return
        for _ in range(rounds):
            box = unique_box(self.rng, self.sample)
            boxes = [*(as_browser_sends(b) for b in self.boxes), box]
            start = time.perf_counter()
            try:
                result = self.client.call("/annotate_boxes", {  # the image goes back as the browser sends it
                    "annotate-opacity": 0.5, "annotator": {"image": self.image, "boxes": boxes}, "annotate-class": "dog",
                    "annotate-method": "auto", "annotate-auto": True})  # fmt: skip
                self.refine_s.append(time.perf_counter() - start)
                value = result.get("annotator") or {}
                self.boxes = list(value.get("boxes") or boxes)
                self.image = value.get("image") or self.image
                self.drawn.append(box)
                if len(self.boxes) != len(boxes):
                    self.errors.append(f"refine: expected {len(boxes)} boxes back, got {len(self.boxes)}")
            except Exception as exc:  # noqa: BLE001
                self.errors.append(f"refine: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass


def bare_compute(users: list[User], data: Path) -> list[float]:
    """Seconds per box of the same boxes refined in this process by a warm refiner (the cut alone)."""
    from core.refine.refiner import BoxRefiner, RefineSettings
    from core.store import DatasetStore
    from core.types import Box

    store = DatasetStore(data, cache_dir=Path(tempfile.mkdtemp()))
    refiner = BoxRefiner()
    images = {s: store.image(s) for s in SAMPLES}
    for image in images.values():
        refiner.refine(image, Box(10, 10, 60, 60, 12), RefineSettings("auto"))  # warm: image prepared
    seconds = []
    for user in users:
        for raw in user.drawn:
            box = Box(raw["xmin"], raw["ymin"], raw["xmax"], raw["ymax"], 12)
            start = time.perf_counter()
            refiner.refine(images[user.sample], box, RefineSettings("auto"))
            seconds.append(time.perf_counter() - start)
    return seconds


def protocol_floor(url: str, protocol: str, calls: int = 10) -> float:
    """Median seconds of an event that does nothing (save with no sample open) through the same client: the
    cost of the round trip itself."""
    user = User(url, 0, 0, protocol)
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        try:
            user.client.call("/annotate_save", {"annotate-opacity": 0.5})
        except RuntimeError:
            pass  # "pick a sample first" as an error reply is a round trip all the same
        seconds.append(time.perf_counter() - start)
    user.close()
    return statistics.median(seconds)


def run_level(url: str, sessions: int, rounds: int, seed: int, protocol: str) -> list[User]:
    users = [User(url, i, seed * 100 + i, protocol) for i in range(sessions)]
    threads = [threading.Thread(target=u.run, args=(rounds,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return users


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,2,4,8", help="concurrent sessions per level")
    parser.add_argument("--rounds", type=int, default=5, help="boxes each session refines per level")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each level (more box events)")
    parser.add_argument("--settle", type=float, default=60.0, help="seconds to wait after the last session closes")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    parser.add_argument("--studio", default=str(ROOT), metavar="DIR",
                        help="the SegStudio checkout to start (default: this one; another commit gives a 'before')")
    parser.add_argument("--client", choices=["browser", "gradio_client"], default="browser",
                        help="speak Gradio's queue protocol as a browser does (default), or use gradio_client")  # fmt: skip
    args = parser.parse_args()
    levels = [int(n) for n in args.levels.split(",")]

    work = Path(tempfile.mkdtemp(prefix="segstudio-load-"))
    data, workspace = work / "samples", work / "ws"
    shutil.copytree(ROOT / "assets" / "samples", data)
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    log = open(work / "server.log", "w")  # noqa: SIM115
    server = subprocess.Popen([sys.executable, "launch.py", "--data", str(data), "--workspace", str(workspace),
                               "--port", str(port)], cwd=args.studio, env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    report: dict = {"levels": []}
    try:
        wait_for_http(url, timeout=120, process=server)
        time.sleep(2)
        report["memory_idle_start_mb"] = round(rss_mb(server.pid), 1)
        warm = run_level(url, 1, 1, seed=999, protocol=args.client)
        for user in warm:
            user.close()
        time.sleep(2)
        report["memory_idle_warm_mb"] = round(rss_mb(server.pid), 1)
        report["memory_idle_warm_split_mb"] = rss_split_mb(server.pid)
        report["client"] = args.client
        report["empty_round_trip_s"] = round(protocol_floor(url, args.client), 4)
        print(f"client: {args.client}; an event that does nothing takes {report['empty_round_trip_s']} s "
              "round trip (the floor under every figure below)", flush=True)
        all_users: list[User] = []
        single_p50 = None
        for sessions in levels:
            users = []
            for repeat in range(args.repeat):
                users += run_level(url, sessions, args.rounds, seed=sessions * 10 + repeat, protocol=args.client)
            all_users += users
            refine = [s for u in users for s in u.refine_s]
            opened = [s for u in users for s in u.open_s]
            errors = [e for u in users for e in u.errors]
            bare = bare_compute(users, data)
            row = {
                "sessions": sessions, "box_events": len(refine) + len(errors),
                "p50_s": round(statistics.median(refine), 3) if refine else None,
                "p95_s": round(percentile(refine, 95), 3) if refine else None,
                "max_s": round(max(refine), 3) if refine else None,
                "open_p50_s": round(statistics.median(opened), 3) if opened else None,
                "bare_p50_s": round(statistics.median(bare), 3) if bare else None, "errors": len(errors),
                "error_examples": errors[:3],
            }  # fmt: skip
            if row["p50_s"] is not None:
                single_p50 = single_p50 or row["p50_s"]
                row["vs_one_session"] = round(row["p50_s"] / single_p50, 2)
                row["vs_bare"] = round(row["p50_s"] / row["bare_p50_s"], 2) if row["bare_p50_s"] else None
            row["memory_mb"] = round(rss_mb(server.pid), 1)
            report["levels"].append(row)
            print(f"{sessions} session(s): {row['box_events']} box events, refine p50 {row['p50_s']} s, p95 "
                  f"{row['p95_s']} s, max {row['max_s']} s; {row.get('vs_one_session')}x one session, "
                  f"{row.get('vs_bare')}x the bare cut ({row['bare_p50_s']} s); open p50 {row['open_p50_s']} s; "
                  f"errors {row['errors']}; server {row['memory_mb']} MB", flush=True)  # fmt: skip
            for user in users:
                user.close()
        report["memory_after_load_mb"] = round(rss_mb(server.pid), 1)
        time.sleep(args.settle)
        report["memory_after_close_mb"] = round(rss_mb(server.pid), 1)
        report["memory_after_close_split_mb"] = rss_split_mb(server.pid)
        report["settle_s"] = args.settle
        files, megabytes = folder_size(workspace / ".gradio")
        report["gradio_cache_files"], report["gradio_cache_mb"] = files, round(megabytes, 2)
        report["box_events"] = sum(r["box_events"] for r in report["levels"])
        report["errors"] = sum(r["errors"] for r in report["levels"])
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    print(f"memory: idle {report['memory_idle_start_mb']} MB at start, {report['memory_idle_warm_mb']} MB after a "
          f"warm-up box, {report['memory_after_load_mb']} MB after the load, {report['memory_after_close_mb']} MB "
          f"{args.settle:.0f} s after every session closed (growth over warm idle: "
          f"{report['memory_after_close_mb'] - report['memory_idle_warm_mb']:+.1f} MB; server process "
          f"{report['memory_idle_warm_split_mb']['server']} -> {report['memory_after_close_split_mb']['server']} MB, "
          f"refine workers {report['memory_idle_warm_split_mb']['workers']} -> "
          f"{report['memory_after_close_split_mb']['workers']} MB)")  # fmt: skip
    print(f"Gradio cache: {report['gradio_cache_files']} files, {report['gradio_cache_mb']} MB; "
          f"{report['box_events']} box events, {report['errors']} errors")  # fmt: skip
    if args.json:
        print(json.dumps(report))
    return 0 if report["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
