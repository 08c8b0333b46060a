"""A raw HTTP/2 client for tokenwarden's smuggling tests: sends header blocks byte-exact, with
the `h2` package's validation and normalization of outbound headers switched off (upper-case
names, CR, LF, NUL, connection-specific fields and misplaced pseudo-headers all go out as
given), and reports how the peer answered.

Usage: h2_raw.py < CASE_JSON

Reads one JSON case from stdin:
  {"host": "127.0.0.1", "port": N,      where to connect (plain TCP)
   "connect": "host:port",               optional: first an HTTP/1.1 CONNECT to host:port,
                                         expecting 200, then the rest inside the tunnel
   "tls": false,                         false: h2c with prior knowledge; true: TLS, ALPN h2
   "ca": "file", "server_name": "name",  with tls: the roots to trust (PEM) and SNI/hostname
   "headers": [[name, value], ...],      the request's header block, sent as given (latin-1)
   "data": ["...", ...],                 DATA frames, one per string (latin-1); default none
   "end_stream": true,                   END_STREAM on the last frame; default true
   "rst_burst": N,                       optional: first open N streams, each a valid GET head
                                         immediately followed by RST_STREAM(CANCEL) (rapid
                                         reset), then send the request above
   "timeout": 10}                        seconds for it all; default 10

Prints one stdout line, JSON, one of:
  {"outcome": "response", "status": int, "headers": [[k, v], ...], "body": str,
   "trailers": [[k, v], ...]}            our stream ended normally (1xx heads are skipped)
  {"outcome": "reset", "error_code": int}          RST_STREAM on our stream
  {"outcome": "goaway", "error_code": int, "last_stream_id": int, "debug": str}
                                         GOAWAY with an error, or a graceful one after which
                                         the connection closed before our stream ended
  {"outcome": "closed"}                  the connection closed without any of those
  {"outcome": "timeout"}                 nothing conclusive within "timeout"
  {"outcome": "connect_failed", "status": int|null, "head": str}   CONNECT not answered 200
  {"outcome": "tls_error", "error": str} the TLS handshake failed
  {"outcome": "no_h2", "alpn": str|null} TLS did not negotiate h2 with ALPN
  {"outcome": "protocol_error", "error": str}      h2 refused what the peer sent
with "streams_opened": N added when rst_burst was given (the burst's streams actually sent).
Strings in the output are latin-1 decoded bytes. Exits 0 for all of these; non-zero (with a
traceback on stderr) only for a bad case or when the first TCP connection fails.
"""

import json
import socket
import ssl
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from h2.errors import ErrorCodes


def b(s):
    return s.encode("latin-1")


def s(b_):
    return b_.decode("latin-1") if isinstance(b_, bytes) else b_


def pairs(headers):
    return [[s(k), s(v)] for k, v in headers]


class Outcome(Exception):
    """Carries the JSON result out of the I/O loop."""

    def __init__(self, **result):
        super().__init__(result)
        self.result = result


def recv_some(sock, deadline):
    """Up to 64 KiB from `sock`, b"" at EOF; Outcome(timeout) past `deadline`."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise Outcome(outcome="timeout")
    sock.settimeout(left)
    try:
        return sock.recv(65536)
    except socket.timeout:
        raise Outcome(outcome="timeout")
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
        return b""


def tunnel(sock, authority, deadline):
    """An HTTP/1.1 CONNECT to `authority` on `sock`; returns unless the answer is not 200."""
    sock.sendall(b(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n"))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = recv_some(sock, deadline)
        if not chunk:
            raise Outcome(outcome="connect_failed", status=None, head=s(head))
        head += chunk
    status_line = head.split(b"\r\n", 1)[0].split(b" ")
    status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else None
    if status != 200:
        raise Outcome(outcome="connect_failed", status=status, head=s(head))
    # A 200 has no body; the peer says nothing more until we start TLS or h2.


def open_connection(case, deadline):
    sock = socket.create_connection(
        (case["host"], case["port"]), timeout=max(deadline - time.monotonic(), 0.1)
    )
    if case.get("connect"):
        tunnel(sock, case["connect"], deadline)
    if not case.get("tls"):
        return sock
    context = ssl.create_default_context(cafile=case["ca"])
    context.set_alpn_protocols(["h2"])
    sock.settimeout(max(deadline - time.monotonic(), 0.1))
    try:
        tls = context.wrap_socket(sock, server_hostname=case["server_name"])
    except socket.timeout:
        raise Outcome(outcome="timeout")
    except (ssl.SSLError, OSError) as e:
        raise Outcome(outcome="tls_error", error=str(e))
    if tls.selected_alpn_protocol() != "h2":
        raise Outcome(outcome="no_h2", alpn=tls.selected_alpn_protocol())
    return tls


def send(sock, conn):
    """Writes what h2 has queued; a peer that already went away is found by the next read."""
    data = conn.data_to_send()
    if data:
        try:
            sock.sendall(data)
        except OSError:
            pass


def burst(conn, case, n):
    """Opens `n` streams with a valid GET head, each reset (CANCEL) at once; returns how many."""
    given = {k: v for k, v in case["headers"]}
    scheme = given.get(":scheme", "https" if case.get("tls") else "http")
    authority = given.get(":authority", f"{case['host']}:{case['port']}")
    head = [(b":method", b"GET"), (b":scheme", b(scheme)), (b":authority", b(authority)),
            (b":path", b"/")]
    opened = 0
    for _ in range(n):
        stream_id = conn.get_next_available_stream_id()
        try:
            conn.send_headers(stream_id, head, end_stream=True)
        except h2.exceptions.TooManyStreamsError:
            break
        conn.reset_stream(stream_id, ErrorCodes.CANCEL)
        opened += 1
    return opened


def run(case, deadline, extra):
    sock = open_connection(case, deadline)
    config = h2.config.H2Configuration(
        client_side=True,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=False,
        header_encoding=None,
    )
    conn = h2.connection.H2Connection(config=config)
    conn.initiate_connection()
    send(sock, conn)

    if case.get("rst_burst"):
        extra["streams_opened"] = burst(conn, case, int(case["rst_burst"]))
        send(sock, conn)

    # Our request: the header block and DATA frames exactly as the case gives them.
    stream_id = conn.get_next_available_stream_id()
    headers = [(b(k), b(v)) for k, v in case["headers"]]
    data = [b(d) for d in case.get("data", [])]
    end_stream = case.get("end_stream", True)
    conn.send_headers(stream_id, headers, end_stream=end_stream and not data)
    for i, chunk in enumerate(data):
        conn.send_data(stream_id, chunk, end_stream=end_stream and i == len(data) - 1)
    send(sock, conn)

    status, response_headers, body, trailers = None, [], b"", []
    goaway = None
    while True:
        chunk = recv_some(sock, deadline)
        if not chunk:
            if goaway:
                raise Outcome(**goaway)
            raise Outcome(outcome="closed")
        try:
            events = conn.receive_data(chunk)
        except h2.exceptions.ProtocolError as e:
            raise Outcome(outcome="protocol_error", error=repr(e))
        for event in events:
            if isinstance(event, h2.events.ConnectionTerminated):
                goaway = {
                    "outcome": "goaway",
                    "error_code": int(event.error_code),
                    "last_stream_id": event.last_stream_id,
                    "debug": s(event.additional_data or b""),
                }
                if event.error_code != ErrorCodes.NO_ERROR:
                    raise Outcome(**goaway)
                # Graceful: our stream may still be answered.
            if getattr(event, "stream_id", None) != stream_id:
                continue  # connection-level, or a stream of the burst
            if isinstance(event, h2.events.ResponseReceived):
                response_headers = pairs(event.headers)
                status = int(dict(response_headers).get(":status", "0"))
            elif isinstance(event, h2.events.DataReceived):
                body += event.data
                # Keep the peer's window open.
                conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
            elif isinstance(event, h2.events.TrailersReceived):
                trailers = pairs(event.headers)
            elif isinstance(event, h2.events.StreamReset):
                raise Outcome(outcome="reset", error_code=int(event.error_code))
            elif isinstance(event, h2.events.StreamEnded):
                raise Outcome(
                    outcome="response",
                    status=status,
                    headers=response_headers,
                    body=s(body),
                    trailers=trailers,
                )
        send(sock, conn)


def main():
    case = json.load(sys.stdin)
    deadline = time.monotonic() + float(case.get("timeout", 10))
    extra = {}
    try:
        run(case, deadline, extra)
        result = {"outcome": "closed"}  # not reached: run ends with an Outcome
    except Outcome as o:
        result = o.result
    result.update(extra)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
