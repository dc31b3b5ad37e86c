"""Served inference: ``visionbench serve`` hosts a visionbench model behind KServe's own Python
model server (the Open Inference Protocol, KServe v2, over HTTP with binary tensors and over
gRPC); ``visionbench loadtest`` loads any KServe v2 server. The server side (``host``,
``server``) imports KServe, the client side (``client``, ``loadtest``) Triton's client library:
their generated protobuf modules declare the same names, so no process imports both."""

#: The no-op model ``serve`` hosts beside the real one (the load generator's ceiling).
NOOP = "noop"
#: The JPEG twin of a served model is named MODEL-jpeg.
JPEG_SUFFIX = "-jpeg"
