"""A replay of Triton Inference Server over HTTP (KServe v2 with Triton's binary tensor and
statistics extensions), answering from ``fixtures/v2-triton``: what loadtest meets from a Triton
it cannot run here. It checks each inference request as Triton would (the JSON header's length
in ``Inference-Header-Content-Length``, each input's ``binary_data_size`` against its shape and
the bytes sent), answers with a binary output of the model's shape, and counts the requests in
its statistics, each with fixed times."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from aiohttp import web

FIXTURES = Path(__file__).parent / "fixtures" / "v2-triton"
#: The times, in ns, each answered request adds to the statistics.
TIMES_NS = {"success": 3_000_000, "queue": 500_000, "compute_input": 200_000,
            "compute_infer": 2_000_000, "compute_output": 100_000}


def _fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def app(fail_every: int = 0) -> web.Application:
    """The replay; ``fail_every``: every so many inference requests are answered with Triton's
    400 and its error object."""
    server, model, stats = (_fixture(n) for n in ("server_metadata.json", "model_metadata.json",
                                                  "model_stats.json"))
    name, out = model["name"], model["outputs"][0]
    seen = {"requests": 0}

    async def metadata(request: web.Request) -> web.Response:
        return web.json_response(server)

    async def model_metadata(request: web.Request) -> web.Response:
        if request.match_info["model"] != name:
            return _error(400, f"Request for unknown model: '{request.match_info['model']}'")
        return web.json_response(model)

    async def ready(request: web.Request) -> web.Response:
        return web.Response()

    async def statistics(request: web.Request) -> web.Response:
        return web.json_response(stats)

    async def infer(request: web.Request) -> web.Response:
        body = await request.read()
        size = int(request.headers.get("Inference-Header-Content-Length", len(body)))
        header = json.loads(body[:size])
        seen["requests"] += 1
        if fail_every and seen["requests"] % fail_every == 0:
            return _error(400, "onnx runtime error 2: not enough space: you tried allocating 1 GB")
        offset = size
        for given, wanted in zip(header["inputs"], model["inputs"], strict=True):
            shape = given["shape"]
            nbytes = int(np.prod(shape)) * 4
            if (given["name"], given["datatype"]) != (wanted["name"], wanted["datatype"]) or \
                    given["parameters"]["binary_data_size"] != nbytes:
                return _error(400, f"unexpected input {given}")
            offset += nbytes
        if offset != len(body):
            return _error(400, f"{len(body) - offset} bytes past the inputs")
        batch = header["inputs"][0]["shape"][0]
        values = np.zeros((batch, *out["shape"][1:]), np.float32).tobytes()
        answer = json.dumps({"model_name": name, "model_version": "1", "outputs": [
            {"name": out["name"], "datatype": out["datatype"], "shape": [batch, *out["shape"][1:]],
             "parameters": {"binary_data_size": len(values)}}]}).encode()
        found = stats["model_stats"][0]
        found["inference_count"] += batch
        found["execution_count"] += 1
        for key, ns in TIMES_NS.items():
            found["inference_stats"][key]["count"] += 1
            found["inference_stats"][key]["ns"] += ns
        return web.Response(body=answer + values, content_type="application/octet-stream",
                            headers={"Inference-Header-Content-Length": str(len(answer))})

    a = web.Application(client_max_size=2**30)
    a.router.add_get("/v2", metadata)
    a.router.add_get("/v2/health/ready", ready)
    a.router.add_get("/v2/models/{model}", model_metadata)
    a.router.add_get("/v2/models/{model}/stats", statistics)
    a.router.add_post("/v2/models/{model}/infer", infer)
    return a


@contextmanager
def replay(fail_every: int = 0) -> Iterator[str]:
    """The replay on a free loopback port, in a thread of its own; its URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app(fail_every))
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(runner.cleanup())
        loop.close()
