"""One call of grpc_server.py's ``tw.Test`` service with grpcio over TLS, as an application
would make it (no protobuf: raw-bytes messages), for tokenwarden's HTTP/2 tests.

Usage: grpc_client.py --target HOST:PORT --ca CA_PEM --call unary|stream|fail
                      [--payload STR] [--authority A] [--server-name NAME]
                      [--metadata KEY=VALUE]... [--deadline SECONDS]
  --target       the server's host:port (through a proxy: the CONNECT authority)
  --ca           the root certificates to trust, PEM (through tokenwarden: its interception CA,
                 since the proxy terminates TLS)
  --call         unary (tw.Test/Unary), stream (tw.Test/Stream: --payload is a count), fail
                 (tw.Test/Fail: --payload empty or "CODE:details")
  --payload      the request message (utf-8); default empty
  --authority    the :authority to send instead of the target (grpc.default_authority)
  --server-name  the name to check the server certificate against, and the SNI, instead of
                 the target host (grpc.ssl_target_name_override); without --authority it is
                 the :authority too (no port)
  --metadata     request metadata, repeatable (an ``authorization`` of the client's own, say)
  --deadline     seconds before the call gives up (DEADLINE_EXCEEDED); default 20

The proxy comes from the environment, as for any grpcio application: gRPC C-core reads
``grpc_proxy``, then ``https_proxy``, then ``http_proxy`` (an ``http://host:port`` URL; it
opens an HTTP/1.1 CONNECT tunnel to the target, then TLS and HTTP/2 inside it), and skips it
for hosts in ``no_grpc_proxy`` / ``no_proxy``. Seen with grpcio 1.85: ``CONNECT host:port
HTTP/1.1`` (the target as given, ``Host`` the same), then a ClientHello offering ALPN ``h2``
only, SNI the target's host name (none for an IP address), and the server must select h2.

Prints exactly one stdout line, JSON:
  {"ok": true, "replies": [utf-8 strings], "code": "OK", "trailing_metadata": {k: v}}
  {"ok": false, "code": "<grpc.StatusCode name>", "details": str, "replies": [what arrived
   before the error], "trailing_metadata": {k: v}}
Exits 0 in both cases; non-zero only when the script itself fails (bad arguments, say).
"""

import argparse
import base64
import json
import sys

import grpc


def metadata_dict(metadata):
    """{key: value} of metadata (repeats joined by ", ", -bin values base64)."""
    out = {}
    for key, value in metadata or ():
        if isinstance(value, bytes):
            value = base64.b64encode(value).decode("ascii")
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--call", required=True, choices=["unary", "stream", "fail"])
    parser.add_argument("--payload", default="")
    parser.add_argument("--authority")
    parser.add_argument("--server-name")
    parser.add_argument("--metadata", action="append", default=[])
    parser.add_argument("--deadline", type=float, default=20)
    args = parser.parse_args()

    with open(args.ca, "rb") as f:
        credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
    options = []
    if args.authority:
        options.append(("grpc.default_authority", args.authority))
    if args.server_name:
        options.append(("grpc.ssl_target_name_override", args.server_name))
    metadata = [tuple(m.split("=", 1)) for m in args.metadata]
    request = args.payload.encode("utf-8")

    replies = []
    with grpc.secure_channel(args.target, credentials, options=options) as channel:
        # No serializers: messages are the raw bytes.
        try:
            if args.call == "stream":
                call = channel.unary_stream("/tw.Test/Stream")(
                    request, timeout=args.deadline, metadata=metadata
                )
                for reply in call:
                    replies.append(reply.decode("utf-8"))
            else:
                method = "/tw.Test/Unary" if args.call == "unary" else "/tw.Test/Fail"
                reply, call = channel.unary_unary(method).with_call(
                    request, timeout=args.deadline, metadata=metadata
                )
                replies.append(reply.decode("utf-8"))
            result = {
                "ok": True,
                "replies": replies,
                "code": call.code().name,
                "trailing_metadata": metadata_dict(call.trailing_metadata()),
            }
        except grpc.RpcError as e:
            # The error is also the call: code, details, trailing metadata.
            result = {
                "ok": False,
                "code": e.code().name,
                "details": e.details(),
                "replies": replies,
                "trailing_metadata": metadata_dict(e.trailing_metadata()),
            }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
