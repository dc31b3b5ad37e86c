"""A KServe v2 client for the load generator: Triton's client library (``tritonclient``, NVIDIA's
own implementation of the Open Inference Protocol that perf_analyzer's Python tools use), its
asyncio clients over HTTP (binary tensor extension) and gRPC, one connection per simulated user."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from visionbench.errors import VisionbenchError

PROTOCOLS = ("http", "grpc")


@dataclass(frozen=True)
class Endpoint:
    protocol: str
    address: str  # host:port, as tritonclient takes it

    @property
    def url(self) -> str:
        return f"{self.protocol}://{self.address}"


def endpoint(url: str) -> Endpoint:
    """``http://host:port`` or ``grpc://host:port``; one line for anything else."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in PROTOCOLS:
        raise VisionbenchError(f"{url!r}: give http://HOST:PORT or grpc://HOST:PORT")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None or parts.path not in ("", "/"):
        raise VisionbenchError(f"{url!r}: give http://HOST:PORT or grpc://HOST:PORT")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return Endpoint(parts.scheme, f"{host}:{port}")


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]


def _tensors(items: list[Any]) -> list[Tensor]:
    return [Tensor(t["name"], t["datatype"], tuple(int(d) for d in t["shape"])) for t in items]


class Client:
    """One connection to a KServe v2 server, for one model."""

    def __init__(self, at: Endpoint, model: str, timeout_s: float) -> None:
        self.at, self.model, self.timeout_s = at, model, timeout_s
        try:
            if at.protocol == "http":
                import tritonclient.http.aio as lib
            else:
                import tritonclient.grpc.aio as lib
        except ImportError as e:
            raise VisionbenchError(f"loadtest needs Triton's client library ({e}): pip install "
                                   "'visionbench[serve]'") from e
        self._c = (lib.InferenceServerClient(at.address, conn_limit=1, conn_timeout=timeout_s)
                   if at.protocol == "http" else lib.InferenceServerClient(at.address))
        self._lib = lib
        self._requests: list[list[Any]] = []
        self._outputs: list[Any] = []
        self._next = 0

    async def server(self) -> dict[str, Any]:
        """What the server says of itself: name, version, protocol extensions."""
        md = await (self._c.get_server_metadata() if self.at.protocol == "http"
                    else self._c.get_server_metadata(as_json=True))
        return {k: md[k] for k in ("name", "version", "extensions") if k in md}

    async def metadata(self) -> tuple[list[Tensor], list[Tensor]]:
        """The model's inputs and outputs, as the server describes them."""
        md = await (self._c.get_model_metadata(self.model) if self.at.protocol == "http"
                    else self._c.get_model_metadata(self.model, as_json=True))
        return _tensors(md.get("inputs", [])), _tensors(md.get("outputs", []))

    def prepare(self, inputs: list[Tensor], outputs: list[Tensor], requests: list[np.ndarray],
                first: int = 0) -> None:
        """The requests the calls send in turn, from ``first``: each one tensor for the model's
        one input, in binary, outputs asked in binary (HTTP); built once, as perf_analyzer
        builds its requests before timing."""
        lib, http = self._lib, self.at.protocol == "http"
        (t,) = inputs
        made = []
        for x in requests:
            i = lib.InferInput(t.name, list(x.shape), t.datatype)
            if http:
                i.set_data_from_numpy(x, binary_data=True)
            else:
                i.set_data_from_numpy(x)
            made.append([i])
        self._outputs = [lib.InferRequestedOutput(o.name, binary_data=True) if http
                         else lib.InferRequestedOutput(o.name) for o in outputs]
        self._requests, self._next = made, first % len(made)

    async def infer(self) -> None:
        """One request (the next of the prepared ones); raises on any error (the caller sorts
        errors by kind)."""
        inputs, outputs = self._requests[self._next], self._outputs
        self._next = (self._next + 1) % len(self._requests)
        if self.at.protocol == "http":
            await self._c.infer(self.model, inputs, outputs=outputs, timeout=self.timeout_s)
        else:
            await self._c.infer(self.model, inputs, outputs=outputs,
                                client_timeout=self.timeout_s)

    async def close(self) -> None:
        await self._c.close()


def error_kind(e: BaseException) -> str:
    """An error as a kind to count: the HTTP status class or gRPC status, a refused connection,
    a timeout, else the exception's type."""
    if isinstance(e, asyncio.TimeoutError | TimeoutError):
        return "timeout"
    if isinstance(e, ConnectionRefusedError):
        return "refused"
    status = getattr(e, "status", None)
    text = str(status() if callable(status) else status or "")
    if text.isdigit():
        return f"http {text[0]}xx"
    if text.startswith("StatusCode."):
        code = text.removeprefix("StatusCode.")
        return "timeout" if code == "DEADLINE_EXCEEDED" else f"grpc {code}"
    message = str(e).lower()
    if "refused" in message or "cannot connect" in message:
        return "refused"
    if "disconnect" in message or "reset" in message or "closed" in message:
        return "disconnected"
    return type(e).__name__


def error_message(e: BaseException, chars: int = 200) -> str:
    """An error's message on one line, at most ``chars`` long: a longer one keeps its start and
    its end (a server quoting the request's bytes back puts its reason after them)."""
    text = " ".join(str(e).split()) or type(e).__name__
    if len(text) <= chars:
        return text
    head = chars * 2 // 5
    return f"{text[:head]} … {text[-(chars - head - 3):]}"


#: Triton's statistics extension's per-request times, as ``LoadPoint.server_ms`` names them.
STAT_TIMES = ("success", "queue", "compute_input", "compute_infer", "compute_output")


async def statistics(address: str, model: str, timeout_s: float) -> dict[str, tuple[int, int]] | None:
    """The model's totals (count, ns) from Triton's statistics extension over HTTP at
    ``address``, or None where the server does not offer it."""
    try:
        import tritonclient.http.aio as lib

        c = lib.InferenceServerClient(address, conn_limit=1, conn_timeout=timeout_s)
    except ImportError:
        return None
    try:
        return totals(await c.get_inference_statistics(model), model)
    except Exception:  # not offered (404), or not in its shape: the client's view alone
        return None
    finally:
        await c.close()


def totals(stats: dict[str, Any], model: str) -> dict[str, tuple[int, int]]:
    """(count, ns) per time of ``model`` in a statistics extension's answer."""
    found = next(m for m in stats["model_stats"] if m["name"] == model)["inference_stats"]
    return {k: (int(found[k].get("count", 0)), int(found[k].get("ns", 0)))
            for k in STAT_TIMES if k in found}


def per_request_ms(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]
                   ) -> tuple[int, dict[str, float]]:
    """Requests the server finished between two readings, and each time's mean per request."""
    n = after.get("success", (0, 0))[0] - before.get("success", (0, 0))[0]
    if n <= 0:
        return 0, {}
    return n, {k: round((after[k][1] - before.get(k, (0, 0))[1]) / 1e6 /
                        max(after[k][0] - before.get(k, (0, 0))[0], 1), 4) for k in after}
