"""Load on the stylise endpoint: N requests from C concurrent clients, each uploading a photo and a painting.

    python -m brushwork.server.loadtest --clients 8 --requests 64 --size 512 --weights-dir DIR

Without ``--url`` it starts ``brushwork serve`` on a free port over a temporary data folder and stops it at the
end. Reports requests/s and the median and 95th-percentile latency (upload, queue and stylisation together),
next to the server's own stylisation time, and the server's peak resident memory (on Linux: of the server it
started, or of ``--server-pid``).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import skimage.data
from PIL import Image

from ..benchmark import describe_machine


def _jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def peak_rss_mb(pid: int) -> float | None:
    """The most resident memory process ``pid`` has held so far (Linux's VmHWM), in MB; None where unknown."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    kilobytes = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), None)
    return kilobytes / 1024 if kilobytes is not None else None


@contextmanager
def local_server(weights_dirs: list[str], clients: int):
    """``brushwork serve`` in a subprocess, its queue deep enough that no client is turned away: its URL and
    process id."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="brushwork-load-") as data:
        command = [sys.executable, "-m", "brushwork", "serve", "--port", str(port), "--data", data,
                   "--queue-size", str(clients)] + [arg for d in weights_dirs for arg in ("--weights-dir", d)]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(url + "/api/health").raise_for_status()
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise SystemExit("the server did not start")
                    time.sleep(0.2)
            yield url, process.pid
        finally:
            process.terminate()
            process.wait(30)


async def run_load(url: str, clients: int, requests: int, form: dict, files: dict) -> dict:
    latencies, seconds, failures = [], [], {}
    remaining = iter(range(requests))

    async def client(http: httpx.AsyncClient):
        for _ in remaining:  # the clients share one counter: each takes the next request
            start = time.perf_counter()
            response = await http.post(url + "/api/stylize", data=form, files=files)
            if response.status_code == 201:
                latencies.append(time.perf_counter() - start)
                seconds.append(response.json()["seconds"])
            else:
                failures[response.status_code] = failures.get(response.status_code, 0) + 1

    async with httpx.AsyncClient(timeout=600) as http:
        warm = await http.post(url + "/api/stylize", data=form, files=files)  # loads the model; not counted
        warm.raise_for_status()
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - start
    median, p95 = np.percentile(latencies, [50, 95]) if latencies else (float("nan"), float("nan"))
    return {"requests": requests, "clients": clients, "ok": len(latencies), "failed": failures,
            "wall_s": wall, "requests_per_s": len(latencies) / wall, "latency_median_s": float(median),
            "latency_p95_s": float(p95), "stylise_median_s": float(np.median(seconds)) if seconds else None}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m brushwork.server.loadtest", description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="A running server [default: start one].")
    parser.add_argument("--server-pid", type=int, help="The process of the --url server, for its peak memory.")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--size", type=int, default=512, help="Shorter side of the output.")
    parser.add_argument("--model", default="microast")
    parser.add_argument("--format", choices=["png", "jpg"], default="png")
    parser.add_argument("--weights-dir", action="append", default=[], help="For the started server; repeatable.")
    parser.add_argument("--json", type=Path, help="Also write the numbers here.")
    args = parser.parse_args(argv)

    # A 512x512 photo painted in the style of a 451x300 photo, both uploaded with every request.
    files = {"content": ("astronaut.jpg", _jpeg(skimage.data.astronaut()), "image/jpeg"),
             "style": ("chelsea.jpg", _jpeg(skimage.data.chelsea()), "image/jpeg")}
    form = {"size": str(args.size), "model": args.model, "format": args.format}
    if args.url:
        report = asyncio.run(run_load(args.url, args.clients, args.requests, form, files))
        report["server_peak_rss_mb"] = peak_rss_mb(args.server_pid) if args.server_pid else None
    else:
        with local_server(args.weights_dir, args.clients) as (url, pid):
            report = asyncio.run(run_load(url, args.clients, args.requests, form, files))
            report["server_peak_rss_mb"] = peak_rss_mb(pid)
    report.update(machine=describe_machine(), size=args.size, model=args.model, format=args.format)
    rss = report["server_peak_rss_mb"]
    print(f"{report['machine']}\n{args.model}, {args.size} px, {args.format}: {report['ok']} of {args.requests} "
          f"requests ok from {args.clients} clients (failed: {report['failed'] or 'none'}) "
          f"in {report['wall_s']:.1f} s; "
          f"{report['requests_per_s']:.2f} requests/s; latency median {report['latency_median_s']:.2f} s, "
          f"p95 {report['latency_p95_s']:.2f} s; stylisation alone median {report['stylise_median_s']:.2f} s; "
          f"server peak memory {f'{rss:.0f} MB' if rss else 'unknown'}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
