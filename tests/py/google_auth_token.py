"""Fetches one access token for a service-account key with Google's own client library,
google-auth, exactly as an application would:
``service_account.Credentials.from_service_account_info(info, scopes=...)`` then
``refresh(google.auth.transport.requests.Request())``.

Usage: google_auth_token.py KEY_FILE [--token-uri URI] [--scope SCOPE]...
  KEY_FILE     a service-account key file (JSON: type, project_id, private_key_id,
               private_key, client_email, token_uri, …)
  --token-uri  replaces the key file's token_uri (where the token request goes)
  --scope      a scope (repeatable); none: google-auth's own behaviour without scopes

Prints one stdout line, JSON: {"token": ..., "expiry": <ISO 8601 or null>}. Errors go to
stderr with a non-zero exit.
"""

import argparse
import json
import sys

import google.auth.transport.requests
from google.oauth2 import service_account


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("key_file")
    parser.add_argument("--token-uri")
    parser.add_argument("--scope", action="append", default=[])
    args = parser.parse_args()
    with open(args.key_file, encoding="utf-8") as f:
        info = json.load(f)
    if args.token_uri:
        info["token_uri"] = args.token_uri
    credentials = service_account.Credentials.from_service_account_info(
        info, scopes=args.scope or None
    )
    credentials.refresh(google.auth.transport.requests.Request())
    expiry = credentials.expiry.isoformat() if credentials.expiry else None
    print(json.dumps({"token": credentials.token, "expiry": expiry}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
