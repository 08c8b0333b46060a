"""Two real OAuth SDKs refreshing an access token and calling an API with it, as an
application would, for the placeholder-credential tests (issue 28, `stub_token_endpoint`):
each sends its own refresh-token grant to the token URL it is given, then one GET to the API
with the access token it got (``Authorization: Bearer <token>``).

Usage:
  oauth_sdk.py google --token-uri URL --client-id ID --client-secret S --refresh-token R
                      --api URL
  oauth_sdk.py authlib --token-endpoint URL --client-id ID --client-secret S
                       --refresh-token R --api URL [--auth-method METHOD]

``google``: google-auth's user credentials,
``google.oauth2.credentials.Credentials(token=None, refresh_token=R, token_uri=URL,
client_id=ID, client_secret=S)``, ``creds.refresh(google.auth.transport.requests.Request())``,
then ``google.auth.transport.requests.AuthorizedSession(creds).get(api)`` (both transports
google-auth's own ``Request``, only with the 10 s bound below in place of its 120 s default).
Its refresh is a POST, ``Content-Type: application/x-www-form-urlencoded``, form
``grant_type=refresh_token``, ``client_id``, ``client_secret``, ``refresh_token`` (the secret
in the body, no Basic header), with ``x-goog-api-client``; an answer 500, 503, 504, 408 or
429 (or error ``server_error``, ``temporarily_unavailable``, ``internal_failure``) is retried,
3 attempts with backoff. A response without ``refresh_token`` keeps the old one. An
``http://`` token URI is accepted. It refreshes again before the call when the token expires
within 3 min 45 s, and on a 401 from the API refreshes and retries (twice). Prints
``{"token", "expiry": <ISO 8601, naive UTC> or null, "refresh_token", "status", "body",
"headers"}``.

``authlib``: Authlib's requests client,
``OAuth2Session(client_id=ID, client_secret=S, token={"access_token": "stale",
"refresh_token": R, "token_type": "Bearer", "expires_at": 1}, token_endpoint=URL)``, then
``session.get(api)``: the token is expired, so the GET refreshes it first by itself (Authlib
refreshes automatically when the session has both a refresh token and ``token_endpoint``;
``update_token`` is optional and not set). Its refresh is a POST, ``Content-Type:
application/x-www-form-urlencoded;charset=UTF-8``, ``Accept: application/json``, form
``grant_type=refresh_token&refresh_token=R``, the client authenticated by ``--auth-method``:
``client_secret_basic`` (Authlib's default with a secret: ``Authorization: Basic
base64(ID:S)``, ID and S as given, not URL-encoded, latin-1; nothing of the client in the
form) or ``client_secret_post`` (``client_id`` and ``client_secret`` in the form). A response
without ``refresh_token`` keeps the old one. A token expiring within 60 s (``leeway``) counts
as expired; a 401 from the API is returned as is. Prints ``{"token", "refresh_token",
"token_type", "expires_in", "expires_at", "status", "body", "headers"}`` (the token it holds
after the call; ``"token": "stale"`` means it never refreshed).

``headers`` is the API response's headers, ``{name: value}`` (repeated fields joined by
``, ``); ``body`` its text. When the refresh or the call fails (an OAuth error answer, a
refused connection, a timeout, a TLS failure), the one line is ``{"error": "<exception
class>: <message>"}`` instead. Either way the exit status is 0; non-zero means a usage error
or a crash (traceback on stderr). Each request (the refresh included) is bounded by 10 s.

The proxy comes from the environment, as for any application using ``requests``:
``HTTP_PROXY`` / ``http_proxy`` for ``http://`` URLs (requests sends the request line in
absolute form to the proxy), ``HTTPS_PROXY`` / ``https_proxy`` for ``https://`` URLs (a
CONNECT tunnel, then TLS to the target inside it), ``ALL_PROXY``, ``NO_PROXY``;
``REQUESTS_CA_BUNDLE`` (or ``CURL_CA_BUNDLE``) names the CA file that verifies ``https://``
servers (through tokenwarden's interception, its CA). The token URL and the API URL may each
be ``http://`` or ``https://``.
"""

import argparse
import json
import sys

import requests

# Bound on each HTTP request, the token refresh included (seconds).
TIMEOUT = 10


def failure(error):
    return {"error": f"{type(error).__name__}: {error}"}


def response_fields(response):
    return {
        "status": response.status_code,
        "body": response.text,
        "headers": dict(response.headers),
    }


def google(args):
    import google.auth.exceptions
    import google.auth.transport.requests
    import google.oauth2.credentials

    class Request(google.auth.transport.requests.Request):
        """google-auth's requests transport, with TIMEOUT in place of its 120 s default."""

        def __call__(self, *a, timeout=TIMEOUT, **kw):
            return super().__call__(*a, timeout=timeout, **kw)

    creds = google.oauth2.credentials.Credentials(
        token=None,
        refresh_token=args.refresh_token,
        token_uri=args.token_uri,
        client_id=args.client_id,
        client_secret=args.client_secret,
    )
    try:
        creds.refresh(Request())
        # auth_request: its refreshes (before expiry, after a 401) bounded the same way.
        session = google.auth.transport.requests.AuthorizedSession(
            creds, auth_request=Request()
        )
        response = session.get(args.api, timeout=TIMEOUT)
    except (google.auth.exceptions.GoogleAuthError, requests.RequestException) as e:
        return failure(e)
    out = {
        "token": creds.token,
        "expiry": creds.expiry.isoformat() if creds.expiry else None,
        "refresh_token": creds.refresh_token,
    }
    out.update(response_fields(response))
    return out


def authlib(args):
    from authlib.common.errors import AuthlibBaseError
    from authlib.integrations.requests_client import OAuth2Session

    session = OAuth2Session(
        client_id=args.client_id,
        client_secret=args.client_secret,
        token_endpoint_auth_method=args.auth_method,
        token={
            "access_token": "stale",
            "refresh_token": args.refresh_token,
            "token_type": "Bearer",
            "expires_at": 1,
        },
        # The automatic refresh needs it (OAuth2Client.ensure_active_token refreshes only
        # when the session has a token_endpoint); no explicit refresh_token() call.
        token_endpoint=args.token_endpoint,
        # Applies to the automatic refresh too (it passes no timeout of its own).
        default_timeout=TIMEOUT,
    )
    try:
        response = session.get(args.api, timeout=TIMEOUT)
    except (AuthlibBaseError, requests.RequestException) as e:
        return failure(e)
    token = session.token or {}
    out = {
        "token": token.get("access_token"),
        "refresh_token": token.get("refresh_token"),
        "token_type": token.get("token_type"),
        "expires_in": token.get("expires_in"),
        "expires_at": token.get("expires_at"),
    }
    out.update(response_fields(response))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="sdk", required=True)

    g = commands.add_parser("google", help="google-auth user credentials")
    g.add_argument("--token-uri", required=True)
    g.set_defaults(run=google)

    a = commands.add_parser("authlib", help="Authlib's OAuth2Session (requests)")
    a.add_argument("--token-endpoint", required=True)
    a.add_argument(
        "--auth-method",
        default=None,
        choices=["client_secret_basic", "client_secret_post"],
        help="client authentication at the token endpoint (Authlib's default: basic)",
    )
    a.set_defaults(run=authlib)

    for p in (g, a):
        p.add_argument("--client-id", required=True)
        p.add_argument("--client-secret", required=True)
        p.add_argument("--refresh-token", required=True)
        p.add_argument("--api", required=True)

    args = parser.parse_args()
    print(json.dumps(args.run(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
