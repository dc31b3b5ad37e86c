"""``visionbench serve``: a hosted model behind KServe's own Python model server, over HTTP
(KServe v2 REST with the binary tensor extension) and gRPC (KServe v2 gRPC), beside a no-op
model of the same input and output (the load generator's own ceiling is measured on it).

KServe's request handling is used as it ships: its data plane, its FastAPI application with the
v2 endpoints, its gRPC servicer and interceptors. Only the listening sockets are visionbench's:
KServe's own servers listen on every interface, and visionbench binds 127.0.0.1 unless told
another host, takes port 0 (the port chosen is reported) and stops both on SIGINT or SIGTERM.
KServe's Python server has no request batching of its own: each request runs alone, at the
batch size it carries, on one of the engine's requests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from visionbench.data import decode
from visionbench.data.preprocess import get_preprocess, laid_out, resized
from visionbench.errors import VisionbenchError
from visionbench.fsutil import write_ready
from visionbench.launch.process import PARENT_ENV
from visionbench.serving import JPEG_SUFFIX, NOOP
from visionbench.serving.host import Hosted
from visionbench.sysinfo import available_cpus

#: The model's v2 datatype: visionbench's models take and give float32.
DATATYPE = "FP32"


@contextlib.contextmanager
def _own_argv() -> Iterator[None]:
    """KServe's model server module parses ``sys.argv`` when imported: let it see none of ours."""
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        yield
    finally:
        sys.argv = argv


class Statistics:
    """A model's request counts and times inside the model server, in the shape of Triton's
    statistics extension (``GET /v2/models/NAME/stats``): ``success`` and ``fail`` the whole of
    ``predict`` (the tensor as numpy to the response built), ``compute_input`` the input checked
    and laid out, ``queue`` the wait for a free engine request, ``compute_infer`` the engine's
    call, ``compute_output`` the response built. KServe's own decoding of the request and encoding
    of the response happen outside them: the client's latency minus ``success`` is the HTTP or
    gRPC stack, (de)serialisation and the network."""

    def __init__(self) -> None:
        self.totals = {k: [0, 0] for k in ("success", "fail", "queue", "compute_input",
                                           "compute_infer", "compute_output")}
        self.last_ms = 0

    def add(self, what: str, ns: int) -> None:
        total = self.totals[what]
        total[0] += 1
        total[1] += ns
        if what == "success":
            self.last_ms = int(time.time() * 1000)

    def as_triton(self, name: str) -> dict[str, Any]:
        n = self.totals["success"][0]
        return {"model_stats": [{
            "name": name, "version": "1", "last_inference": self.last_ms,
            "inference_count": n, "execution_count": n,
            "inference_stats": {k: {"count": c, "ns": ns} for k, (c, ns) in self.totals.items()},
            "batch_stats": []}]}


@dataclass(frozen=True)
class _Input:
    """What a served model takes, and how a request's tensor becomes the engine's input."""

    name: str
    datatype: str
    shape: list[int]
    #: Run on the decode threads (a JPEG decoded and preprocessed); None: the tensor as sent.
    decode: Callable[[np.ndarray], np.ndarray] | None = None


class _Slots:
    """An engine's requests (slots), each run on a thread of its own: shared by every served
    model that calls the same session, so that no engine request runs two calls at once."""

    def __init__(self, name: str, run: Callable[[int, np.ndarray], np.ndarray], count: int):
        self.run, self.count = run, count
        self.pool = ThreadPoolExecutor(max_workers=count, thread_name_prefix=name)
        self._free: asyncio.Queue[int] | None = None

    def free(self) -> asyncio.Queue[int]:
        if self._free is None:  # made in the server's event loop
            self._free = asyncio.Queue()
            for slot in range(self.count):
                self._free.put_nowait(slot)
        return self._free


def _from_jpeg(hosted: Hosted) -> tuple[Callable[[np.ndarray], np.ndarray], dict[str, Any]] | None:
    """A request of JPEG files decoded and preprocessed as the pipeline does it (the fastest
    decoder installed, the model's own preprocessing), or None for a model that does not take
    square RGB images; with what it uses, in words."""
    from kserve.errors import InvalidInput
    from PIL import Image

    model = hosted.model
    if model.channels != 3 or model.height != model.width:
        return None
    dec, prep = decode.best(), get_preprocess(model.preprocessing)

    def run(blobs: np.ndarray) -> np.ndarray:
        images = []
        for i, blob in enumerate(blobs.reshape(-1)):
            try:
                rgb = dec.decode(bytes(blob))
            except Exception as e:  # whatever the decoder raises: the client sent a bad image
                raise InvalidInput(f"image {i} of the request is not a JPEG {dec.name} can "
                                   f"decode: {' '.join(str(e).split())[:200]}") from e
            if rgb is None or rgb.ndim != 3 or rgb.shape[2] != 3:
                raise InvalidInput(f"image {i} of the request is not an RGB JPEG")
            images.append(resized(Image.fromarray(rgb), prep, model.height))
        return laid_out(np.stack(images), model.layout)

    return run, {"decoder": f"{dec.name} {dec.version}", "preprocessing": prep.name}


def _models(hosted: Hosted, decode_threads: int) -> tuple[list[Any], dict[str, Any]]:
    """The hosted model, its JPEG twin (``MODEL-jpeg``: encoded images in, decoded on the
    server) and the no-op model, as KServe models; with the facts of the JPEG twin."""
    from kserve import InferOutput, InferResponse, Model
    from kserve.errors import InvalidInput

    session, model = hosted.session, hosted.model
    shape = list(model.input_shape(hosted.batch))
    out_name = (model.outputs or ("output",))[0]
    sample = session.run_on(0, session.feed(np.zeros(shape, np.float32)))[0]
    out_shape = list(sample.shape)
    decoders = ThreadPoolExecutor(max_workers=decode_threads, thread_name_prefix="decode")

    class Served(Model):
        """One request at a time per engine request (slot); the call runs on a worker thread
        (the engines release the GIL while they compute), so requests arriving at once run at
        once, up to the engine's number of requests, whichever of the session's models they
        name. A JPEG request is decoded first, on the decode threads: an engine request never
        waits on a decode (as a preprocessing model ahead of the classifier in an ensemble)."""

        def __init__(self, name: str, takes: _Input, slots: _Slots):
            super().__init__(name)
            self._takes, self._slots = takes, slots
            self.stats = Statistics()
            self.ready = True

        def get_input_types(self) -> list[dict]:
            t = self._takes
            return [{"name": t.name, "datatype": t.datatype, "shape": t.shape}]

        def get_output_types(self) -> list[dict]:
            return [{"name": out_name, "datatype": DATATYPE, "shape": out_shape}]

        async def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
            t0 = time.perf_counter_ns()
            try:
                out = await self._predict(payload)
            except BaseException:
                self.stats.add("fail", time.perf_counter_ns() - t0)
                raise
            self.stats.add("success", time.perf_counter_ns() - t0)
            return out

        async def _predict(self, payload: Any) -> Any:
            t0 = time.perf_counter_ns()
            takes, loop = self._takes, asyncio.get_running_loop()
            if len(payload.inputs) != 1:
                raise InvalidInput(f"{self.name} takes one input, {len(payload.inputs)} given")
            given = payload.inputs[0]
            if given.datatype != takes.datatype or list(given.shape) != takes.shape:
                raise InvalidInput(f"{self.name} takes {takes.datatype} {takes.shape}, got "
                                   f"{given.datatype} {list(given.shape)}")
            if takes.decode is None:
                x = np.ascontiguousarray(given.as_numpy(), dtype=np.float32).reshape(shape)
            else:
                x = await loop.run_in_executor(decoders, takes.decode, given.as_numpy())
            free = self._slots.free()
            t1 = time.perf_counter_ns()
            slot = await free.get()
            t2 = time.perf_counter_ns()
            try:
                y = await loop.run_in_executor(self._slots.pool, self._slots.run, slot, x)
            finally:
                free.put_nowait(slot)
            t3 = time.perf_counter_ns()
            out = InferOutput(out_name, list(y.shape), DATATYPE)
            out.set_data_from_numpy(np.ascontiguousarray(y, dtype=np.float32), binary_data=True)
            response = InferResponse(payload.id or "", self.name, [out],
                                     use_binary_outputs=payload.use_binary_outputs)
            self.stats.add("compute_input", t1 - t0)
            self.stats.add("queue", t2 - t1)
            self.stats.add("compute_infer", t3 - t2)
            self.stats.add("compute_output", time.perf_counter_ns() - t3)
            return response

    def infer(slot: int, x: np.ndarray) -> np.ndarray:
        return session.run_on(slot, session.feed(x))[0]

    tensor = _Input(model.input_name, DATATYPE, shape)
    zeros = np.zeros(out_shape, np.float32)
    engine = _Slots(model.name, infer, session.requests)
    served = [Served(model.name, tensor, engine),
              Served(NOOP, tensor, _Slots(NOOP, lambda slot, x: zeros, 1))]
    jpeg = _from_jpeg(hosted)
    if jpeg is None:
        return served, {}
    run, facts = jpeg
    name = f"{model.name}{JPEG_SUFFIX}"
    served.append(Served(name, _Input("image", "BYTES", [hosted.batch], run), engine))
    return served, {"jpeg_model": name, **facts, "decode_threads": decode_threads}


class _OneLine(logging.Formatter):
    """A failed request as one line on the server's stderr (KServe logs each with its whole
    traceback: thousands of lines a second from a failing engine under load)."""

    def format(self, record: logging.LogRecord) -> str:
        text = " ".join(record.getMessage().split())
        if record.exc_info and record.exc_info[1] is not None:
            e = record.exc_info[1]
            text = f"{text} {type(e).__name__}: {' '.join(str(e).split())}".strip()
        return f"visionbench serve: {text[:500]}"


def _one_line_logs() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine())
    for name in ("kserve", "kserve.trace", "uvicorn", "uvicorn.error"):
        log = logging.getLogger(name)
        log.handlers, log.propagate = [handler], False
        log.setLevel(logging.WARNING)


def _listen(host: str, port: int) -> socket.socket:
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, reuse_port=False)
    except OSError as e:
        raise VisionbenchError(f"cannot listen on {host} port {port}: {e.strerror or e}") from e
    # Linux passes it on to each connection accepted: without it a response written in two
    # parts (headers, then body) waits for the client's delayed ACK, 40 ms a request here.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


async def _orphaned(parent: int, serving: asyncio.Task) -> bool:
    """True once the process ``parent`` is no longer this one's parent (it died: Linux gives
    the orphan to init or a subreaper); False when the server ends first."""
    while not serving.done():
        if os.getppid() != parent:
            return True
        await asyncio.sleep(1.0)
    return False


def serve(hosted: Hosted, host: str = "127.0.0.1", http_port: int = 0, grpc_port: int = 0,
          ready_file: Path | None = None, announce: Callable[[dict[str, Any]], None] = print,
          grpc_threads: int = 4) -> str:
    """Serve ``hosted`` until SIGINT, SIGTERM or SIGHUP (or its parent's end, where
    ``PARENT_ENV`` names it); ``announce`` gets the URLs, ports and
    configuration once both servers listen (also written to ``ready_file``). Returns the name of
    the signal that stopped it."""
    try:
        with _own_argv():
            import kserve  # noqa: F401 - its absence is one line
    except ImportError as e:
        raise VisionbenchError(f"serve needs KServe ({e}): pip install 'visionbench[serve]'") from e
    _one_line_logs()
    # KServe 0.21's responses use FastAPI's ORJSONResponse, deprecated by FastAPI since.
    warnings.filterwarnings("ignore", message=".*ORJSONResponse is deprecated")
    with _own_argv():
        import uvicorn
        from grpc import aio
        from kserve.model_repository import ModelRepository
        from kserve.protocol.dataplane import DataPlane
        from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
        from kserve.protocol.grpc.interceptors import (
            ExceptionToStatusInterceptor,
            LoggingInterceptor,
        )
        from kserve.protocol.grpc.servicer import InferenceServicer
        from kserve.protocol.model_repository_extension import ModelRepositoryExtension
        from kserve.protocol.rest.server import RESTServer

    registry = ModelRepository()
    models, jpeg = _models(hosted, available_cpus())
    served = {m.name: m for m in models}
    for m in served.values():
        registry.update(m)
    plane, extension = DataPlane(registry), ModelRepositoryExtension(registry)
    rest = RESTServer("kserve.model_server:app", plane, extension, 0)
    with _own_argv():
        rest.create_application()  # KServe's v2 endpoints on its FastAPI application
        from fastapi.responses import JSONResponse
        from kserve.model_server import app

    async def statistics(model_name: str) -> JSONResponse:
        """Triton's statistics extension, which KServe's server lacks."""
        if model_name not in served:
            return JSONResponse({"error": f"no model {model_name}"}, status_code=404)
        return JSONResponse(served[model_name].stats.as_triton(model_name))

    app.add_api_route("/v2/models/{model_name}/stats", statistics, methods=["GET"])
    http_sock = _listen(host, http_port)

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:  # ours stop both servers
            yield

    web = Server(uvicorn.Config("kserve.model_server:app", log_config=None, access_log=False,
                                timeout_graceful_shutdown=5))
    stopped_by: list[str] = []

    async def main() -> None:
        rpc = aio.server(ThreadPoolExecutor(max_workers=grpc_threads),
                         interceptors=(LoggingInterceptor(), ExceptionToStatusInterceptor()),
                         options=[("grpc.max_send_message_length", 2**31 - 1),
                                  ("grpc.max_receive_message_length", 2**31 - 1)])
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(plane, extension), rpc)
        try:
            bound = rpc.add_insecure_port(f"[{host}]:{grpc_port}" if ":" in host
                                          else f"{host}:{grpc_port}")
        except RuntimeError:  # grpcio raises where it cannot bind, or returns 0
            bound = 0
        if not bound:
            raise VisionbenchError(f"cannot listen on {host} port {grpc_port} (gRPC): in use, "
                                   "or not an address of this machine")
        await rpc.start()
        loop = asyncio.get_running_loop()

        def stop(why: str) -> None:
            stopped_by.append(why)
            web.should_exit = True

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, stop, sig.name)
        serving = asyncio.create_task(web.serve(sockets=[http_sock]))
        if parent := os.environ.get(PARENT_ENV, "").strip():
            watch = asyncio.create_task(_orphaned(int(parent), serving))
            watch.add_done_callback(lambda t: t.result() and stop("the end of its parent"))
        while not web.started and not serving.done():
            await asyncio.sleep(0.02)
        if web.started:
            port = http_sock.getsockname()[1]
            shown = f"[{host}]" if ":" in host else host
            facts = {"http": f"http://{shown}:{port}", "grpc": f"grpc://{shown}:{bound}",
                     "http_port": port, "grpc_port": bound, "model": hosted.model.name,
                     "noop_model": NOOP, **jpeg, "server": "kserve", **hosted.configuration}
            if ready_file is not None:
                write_ready(ready_file, facts)
            announce(facts)
        await serving
        await rpc.stop(grace=2)

    try:
        asyncio.run(main())
    finally:
        http_sock.close()
        hosted.session.close()
    return stopped_by[0] if stopped_by else "the server's end"
