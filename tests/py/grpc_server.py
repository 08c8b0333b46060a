"""Loopback gRPC server (grpcio, over TLS) for tokenwarden's HTTP/2 tests. No protobuf: the
service is registered with ``grpc.method_handlers_generic_handler`` and raw-bytes handlers
(no request deserializer, no response serializer), so a message is the bytes on the wire.

Usage: grpc_server.py --cert CERT_PEM --key KEY_PEM
  --cert, --key  the server's TLS certificate (chain) and private key, PEM (required)

Binds 127.0.0.1:0 and prints one stdout line, JSON ``{"port": N}``. Then, for every call, one
more stdout line as the call arrives, JSON:
  {"method": "Unary"|"Stream"|"Fail",
   "authorization": the ``authorization`` metadata (repeats joined by ", ") or null,
   "metadata": {key: value} of all invocation metadata (repeats joined by ", "),
   "metadata_list": [[key, value], ...] the same in order, repeats apart,
   "authority": the call's :authority (grpcio's private call details; null if unavailable),
   "request": the request message (latin-1 decoded)}
Values of ``-bin`` keys are given base64-encoded (grpcio hands them over decoded). Logs go to
stderr. Serves until stdin closes (parent died) or SIGTERM/SIGINT.

Service ``tw.Test``:
  Unary   unary-unary: replies with the request bytes reversed
  Stream  unary-stream: the request is an ASCII integer N; replies b"msg-0" .. b"msg-{N-1}"
  Fail    unary-unary: aborts with PERMISSION_DENIED and "denied by test", or with the code and
          details the request names as "CODE:details" (b"NOT_FOUND:gone")
Every call also sets the trailing metadata ``tw-trailer: <method>`` (a test can see trailers
cross the proxy).
"""

import argparse
import base64
import json
import os
import signal
import sys
import threading
from concurrent import futures

import grpc

lock = threading.Lock()


def log(*args):
    print("grpc_server:", *args, file=sys.stderr, flush=True)


def emit(obj):
    """One JSON line on stdout, whole and flushed (calls run on several threads)."""
    with lock:
        print(json.dumps(obj), flush=True)


def authority(context):
    """The :authority of the call: grpcio has no public API for it, only its call details."""
    try:
        host = context._rpc_event.call_details.host
    except AttributeError:
        return None
    return host.decode("latin-1") if isinstance(host, bytes) else host


def record(method, request, context):
    """Prints what the server saw of the call and sets its trailing metadata."""
    pairs = []
    for item in context.invocation_metadata():
        value = item.value
        if isinstance(value, bytes):  # a -bin key
            value = base64.b64encode(value).decode("ascii")
        pairs.append([item.key, value])
    metadata = {}
    for key, value in pairs:
        metadata[key] = f"{metadata[key]}, {value}" if key in metadata else value
    emit(
        {
            "method": method,
            "authorization": metadata.get("authorization"),
            "metadata": metadata,
            "metadata_list": pairs,
            "authority": authority(context),
            "request": request.decode("latin-1"),
        }
    )
    context.set_trailing_metadata((("tw-trailer", method),))


def unary(request, context):
    record("Unary", request, context)
    return request[::-1]


def stream(request, context):
    record("Stream", request, context)
    try:
        n = int(request.decode("ascii"))
    except ValueError:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"not an integer: {request!r}")
    for i in range(n):
        yield f"msg-{i}".encode("ascii")


def fail(request, context):
    record("Fail", request, context)
    code, details = grpc.StatusCode.PERMISSION_DENIED, "denied by test"
    if request:
        name, _, details = request.decode("utf-8").partition(":")
        code = grpc.StatusCode[name]  # an unknown name: the call ends UNKNOWN (KeyError)
    context.abort(code, details)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    with open(args.cert, "rb") as f:
        cert = f.read()
    with open(args.key, "rb") as f:
        key = f.read()

    # None (de)serializers: grpcio passes the raw message bytes through.
    handler = grpc.method_handlers_generic_handler(
        "tw.Test",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
            "Fail": grpc.unary_unary_rpc_method_handler(fail),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    credentials = grpc.ssl_server_credentials([(key, cert)])
    # A bad certificate or key: RuntimeError here, after grpc logged why to stderr.
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: os._exit(0))
    log(f"serving tw.Test on 127.0.0.1:{port} (TLS)")
    emit({"port": port})
    # Until the parent closes stdin (or dies).
    while sys.stdin.buffer.read(4096):
        pass
    server.stop(0)
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
