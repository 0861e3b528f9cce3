"""Measure the live backends' own overhead on loopback: the safe fetcher, and parallel page reading.

    python benchmarks/live_fetch.py          # writes benchmarks/results/live_fetch.{json,md}

Everything runs against the local wire-format servers of the test suite (tests/live_servers.py) on
127.0.0.1, so no network and no key are needed:

* the safe fetcher (resolve + SSRF check + pinned connection + deadline watchdog) against a plain
  ``http.client`` GET of the same small JSON answer;
* SerpAPI Google → 5 page summaries (local trafilatura reader, extractive summaries) when every page
  takes 200 ms to answer and 2 of the first 5 fail, with ``page_workers`` 1 (sequential) and 5;
* SerpAPI Lens with 5 thumbnails that take 100 ms each, ``thumbnail_workers`` 1 and 5.
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from live_servers import LocalServer, Reply, html_page, png_bytes, serpapi_google, serpapi_lens

from mmsearch_env.search import ImageSearchRequest, TextSearchRequest, make_search
from mmsearch_env.web.http import FetchPolicy, fetch

RESULTS = Path(__file__).parent / "results"


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def main() -> None:
    os.environ.setdefault("SERPAPI_API_KEY", "benchmark-key")
    from PIL import Image

    server = LocalServer({"/small.json": Reply(body={"ok": True, "items": list(range(50))})})
    pages = ["fail0", "fail1"] + [str(i) for i in range(8)]
    with server:
        for i in range(8):
            server.routes[f"/page/{i}"] = Reply(
                body=html_page(f"Page {i}", [f"Landmark {i} was completed in {1900 + i}.", "It is by a river."]),
                delay=0.2,
            )
            server.routes[f"/thumb/{i}.png"] = Reply(body=png_bytes(), content_type="image/png", delay=0.1)
        server.routes["/page/fail0"] = server.routes["/page/fail1"] = Reply(503, "busy", delay=0.2)
        organic = [{"title": f"R{p}", "link": server.url(f"/page/{p}"), "snippet": "s"} for p in pages]
        matches = [
            {"title": f"M{i}", "link": f"https://e.org/{i}", "thumbnail": server.url(f"/thumb/{i}.png")}
            for i in range(5)
        ]

        def serp(request):
            if request.query["engine"] == "google":
                return Reply(body=serpapi_google(organic))
            return Reply(body=serpapi_lens(matches))

        server.routes["/search.json"] = serp
        policy = FetchPolicy(allowed_hosts=(server.host_port,))

        def plain() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            conn.request("GET", "/small.json")
            json.loads(conn.getresponse().read())
            conn.close()

        rows: dict[str, dict[str, float]] = {}
        for name, fn in tqdm(
            [
                ("plain http.client GET", plain),
                ("safe fetch GET", lambda: fetch(server.url("/small.json"), policy=policy).json(what="x")),
            ],
            desc="fetch",
        ):
            times = timed(fn, 300)
            rows[name] = {"median_ms": statistics.median(times) * 1000, "p95_ms": sorted(times)[284] * 1000}

        base = {"base_url": server.url(""), "fetch": {"allowed_hosts": [server.host_port]}}
        for workers in tqdm((1, 5), desc="pipelines"):
            backend = make_search("serpapi", {**base, "page_workers": workers, "thumbnail_workers": workers})
            text = timed(lambda b=backend: b.text_search(TextSearchRequest("landmark completed")), 3)
            image = ImageSearchRequest(image=Image.new("RGB", (8, 8)), image_url="https://e.org/q.png")
            lens = timed(lambda b=backend, r=image: b.image_search(r), 3)
            rows[f"text search, 5 summaries, page_workers={workers}"] = {"median_ms": statistics.median(text) * 1000}
            rows[f"lens, 5 thumbnails, thumbnail_workers={workers}"] = {"median_ms": statistics.median(lens) * 1000}

    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "live_fetch.json").write_text(json.dumps({"machine": machine, "results": rows}, indent=2) + "\n")
    lines = [f"# Live backends on loopback ({machine})", "", "| what | median ms | p95 ms |", "|---|---|---|"]
    for name, row in rows.items():
        p95 = f"{row['p95_ms']:.2f}" if "p95_ms" in row else "–"
        lines.append(f"| {name} | {row['median_ms']:.2f} | {p95} |")
    (RESULTS / "live_fetch.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
