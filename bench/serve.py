"""`tunewise serve` under load: torch eager, onnxruntime fp32 and int8, and a hand-written endpoint.

In one run on loopback, for an image classifier (pkg:efficientnet_lite0 on textile) and a text
classifier (pkg:minilm on Rotten Tomatoes reviews), each fitted briefly here:

- (a) `tunewise serve --backend torch`: the fitted torch model, dynamic batching;
- (b) `tunewise serve --backend onnx --precision fp32`: the ONNX export on onnxruntime;
- (c) `... --precision int8`: the int8 export, when its quality gate kept it;
- (d) the baseline a user would write: FastAPI + torch, one request, one forward, no batching
  (`baseline_app` below).

Each server runs in its own process; one client process sends single-input requests from
1, 8 and 32 threads and prints requests/s and p50/p95 latency, then the ratios the issue targets:
(b)/(d) throughput at concurrency 32 (target >= 2) and (c)/(b) (target >= 1.5, with at most 0.5
points lost, read from the export's onnx.json), and the sizes of the fp32 and int8 files.

    python bench/serve.py                      # both models; results also in --json
    python bench/serve.py --client wrk         # the load from wrk, not 32 Python threads on the same cores
    python bench/serve.py --models image --requests 64
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from fastapi import FastAPI, File, UploadFile  # at module level: the endpoint's annotations are resolved here

CONCURRENCY = (1, 8, 32)


def fit_models(which: list[str], folder: Path) -> dict[str, Path]:
    """A briefly fitted run per model kind, exported to ONNX (fp32 and, if its gate keeps it, int8)."""
    from tunewise import DataConfig, TrainConfig, fit
    from tunewise.ship.onnx_export import export_onnx

    runs = {}
    if "image" in which:
        record = fit("pkg:efficientnet_lite0", DataConfig(data="textile", image_size=128, max_train_per_class=50),
                     "linear_probe", train=TrainConfig(epochs=3, num_workers=0), out=folder / "image")
        runs["image"] = Path(record.run_dir)
    if "text" in which:
        record = fit("pkg:minilm", DataConfig(data="rotten_tomatoes", max_train_per_class=100, val_fraction=0.05,
                                                 max_length=64),
                     "linear_probe", task="text_classification",
                     train=TrainConfig(epochs=10, num_workers=0), out=folder / "text")
        runs["text"] = Path(record.run_dir)
    for run in runs.values():
        export_onnx(run, int8=True)
    return runs


def baseline_app(run: str):
    """What a user writes first: load the model, one forward per request (images only)."""
    import io

    import torch
    from PIL import Image

    from tunewise.export import load_model

    model, info = load_model(run)
    transform = info["preprocess"].eval_transform()
    app = FastAPI()

    @app.post("/predict")
    def predict(files: list[UploadFile] = File()) -> dict:  # noqa: B008 (FastAPI's idiom)
        image = Image.open(io.BytesIO(files[0].file.read())).convert("RGB")
        with torch.no_grad():
            p = model(transform(image).unsqueeze(0)).softmax(1)[0]
        best = int(p.argmax())
        return {"predictions": [{"label": info["classes"][best], "probability": float(p[best])}]}

    return app


def start(command: list[str]) -> tuple[subprocess.Popen, str]:
    """A server process and its URL, read from the line it prints when listening."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        found = re.search(r"(http://[\d.]+:\d+)/", line)
        if found:
            url = found.group(1)
            for _ in range(300):  # listening: wait for the app to answer
                try:
                    httpx.get(url + "/health", timeout=1)
                    return process, url
                except httpx.HTTPError:
                    time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"server did not start: {' '.join(command)}")


def load(url: str, request: dict, concurrency: int, count: int) -> dict:
    """`count` requests from `concurrency` threads: requests/s, p50 and p95 latency in ms."""
    def one(_: int) -> float:
        with httpx.Client(timeout=120) as client:
            started = time.perf_counter()
            response = client.post(url + "/predict", **request)
            if response.status_code != 200:
                raise RuntimeError(f"{url}: {response.status_code} {response.text[:300]}")
            return time.perf_counter() - started

    for _ in range(3):  # warm-up
        one(0)
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = sorted(pool.map(one, range(count)))
    seconds = time.perf_counter() - started
    return {"concurrency": concurrency, "requests": count, "rps": count / seconds,
            "p50_ms": 1000 * statistics.median(latencies), "p95_ms": 1000 * latencies[int(0.95 * (count - 1))]}


WRK_SCRIPT = """
wrk.method = "POST"
local file = io.open(os.getenv("BENCH_BODY"), "rb")
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = os.getenv("BENCH_TYPE")
"""


def load_wrk(url: str, request: dict, concurrency: int, seconds: int, folder: Path) -> dict:
    """wrk (a compiled, event-driven load generator: one thread, `concurrency` connections) posting
    the same body for `seconds`: requests/s, p50 and p90 latency in ms (wrk reports no p95). It
    costs the two cores far less than 32 Python client threads, so the servers are what it measures."""
    built = httpx.Request("POST", url + "/predict", **request)
    body, kind = built.read(), built.headers["content-type"]
    (folder / "body").write_bytes(body)
    (folder / "post.lua").write_text(WRK_SCRIPT)
    env = {**os.environ, "BENCH_BODY": str(folder / "body"), "BENCH_TYPE": kind}
    subprocess.run(["wrk", "-t1", "-c1", "-d2s", "-s", str(folder / "post.lua"), url + "/predict"],
                   env=env, check=True, capture_output=True)  # warm-up
    out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--latency", "--timeout", "60s",
                          "-s", str(folder / "post.lua"), url + "/predict"],
                         env=env, check=True, capture_output=True, text=True).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"{url}: some requests failed:\n{out}")

    def ms(percent: str) -> float:
        value, unit = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s)$", out, re.M).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return {"concurrency": concurrency, "seconds": seconds, "rps": rps, "p50_ms": ms("50"), "p95_ms": ms("90"),
            "client": "wrk (p95_ms holds p90)"}


def request_body(kind: str) -> dict:
    """One input per request, the same every time."""
    if kind == "text":
        return {"json": {"texts": ["A quiet, sharply written film that trusts its audience."]}}
    from conformal_clip_data import textile_simulated_root

    image = next(Path(textile_simulated_root()).rglob("*.jpg"))
    return {"files": {"files": (image.name, image.read_bytes(), "image/jpeg")}}


def servers(kind: str, run: Path) -> dict[str, list[str]]:
    tunewise = [sys.executable, "-m", "tunewise", "-q", "serve", str(run), "--port", "0"]
    chosen = {"torch": [*tunewise, "--backend", "torch"],
              "onnx fp32": [*tunewise, "--backend", "onnx", "--precision", "fp32"]}
    export = json.loads((run / "onnx" / "onnx.json").read_text())
    if export.get("int8", {}).get("kept"):
        chosen["onnx int8"] = [*tunewise, "--backend", "onnx", "--precision", "int8"]
    if kind == "image":
        chosen["hand-written"] = [sys.executable, __file__, "--baseline-server", str(run)]
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="image,text", help="image, text or both")
    parser.add_argument("--requests", type=int, default=96, help="requests per concurrency level")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--client", choices=("threads", "wrk"), default="threads",
                        help="threads: Python client threads in this process (what earlier figures used); wrk: "
                             "Debian's wrk, far lighter on the shared cores (apt-get install wrk)")
    parser.add_argument("--seconds", type=int, default=15, help="wrk: seconds per concurrency level")
    parser.add_argument("--baseline-server", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        import uvicorn

        from tunewise.ship.serve import _listen

        listening = _listen("127.0.0.1", 0)
        print(f"baseline at http://127.0.0.1:{listening.getsockname()[1]}/", flush=True)
        config = uvicorn.Config(baseline_app(args.baseline_server), log_level="warning", access_log=False)
        uvicorn.Server(config).run(sockets=[listening])
        return

    print(f"load average before: {os.getloadavg()}")
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs = fit_models(args.models.split(","), Path(tmp))
        for kind, run in runs.items():
            export = json.loads((run / "onnx" / "onnx.json").read_text())
            results[kind] = {"export": export.get("int8"), "parity": export.get("parity"), "rows": {}}
            for name, command in servers(kind, run).items():
                process, url = start(command)
                try:
                    results[kind]["rows"][name] = [
                        load_wrk(url, request_body(kind), c, args.seconds, Path(tmp)) if args.client == "wrk"
                        else load(url, request_body(kind), c, args.requests) for c in CONCURRENCY]
                finally:
                    process.terminate()
                    process.wait()
    print(f"load average after: {os.getloadavg()}")
    show(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def show(results: dict) -> None:
    for kind, result in results.items():
        p95 = "p90" if any("wrk" in r.get("client", "") for rows in result["rows"].values() for r in rows) else "p95"
        print(f"\n{kind}: requests/s, p50 / {p95} ms, one input per request")
        print(f"{'server':<14}" + "".join(f"{'c=' + str(c):>26}" for c in CONCURRENCY))
        for name, rows in result["rows"].items():
            print(f"{name:<14}" + "".join(f"{r['rps']:>8.1f} {r['p50_ms']:>7.1f} / {r['p95_ms']:<7.1f}" for r in rows))
        rows = result["rows"]
        at32 = {name: r[-1]["rps"] for name, r in rows.items()}
        if "hand-written" in at32:
            print(f"onnx fp32 / hand-written at c=32: {at32['onnx fp32'] / at32['hand-written']:.2f}x (target >= 2)")
        if "onnx int8" in at32:
            print(f"onnx int8 / onnx fp32 at c=32: {at32['onnx int8'] / at32['onnx fp32']:.2f}x (target >= 1.5)")
        print(f"int8 gate: {json.dumps(result['export'])}")


if __name__ == "__main__":
    main()
