#!/usr/bin/env python3
"""A Compute Classic screen capture client, standard library only, doing what
Oracle's curl examples do: authenticate for a nimbula cookie, create a capture,
poll it to a terminal state, fetch media_uri, cancel, delete, list.

Prints one JSON line per HTTP call (method, path, status, and what matters of
the answer), so integration tests can read its output line by line.

  oracle.py --endpoint https://127.0.0.1:8443 --user /Compute-acme/jack \
            --password-file pw.txt --instance /Compute-acme/jack/vm1 --insecure all
"""

import argparse
import hashlib
import http.cookiejar
import json
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

MEDIA_TYPE = "application/oracle-compute-v3+json"
TERMINAL = ("complete", "error")


def emit(**fields):
    print(json.dumps(fields, sort_keys=True), flush=True)


class Client:
    def __init__(self, endpoint, insecure=False, timeout=30.0):
        self.endpoint = endpoint.rstrip("/")
        self.timeout = timeout
        self.jar = http.cookiejar.CookieJar()
        handlers = [urllib.request.HTTPCookieProcessor(self.jar)]
        if insecure:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            handlers.append(urllib.request.HTTPSHandler(context=context))
        self.opener = urllib.request.build_opener(*handlers)

    def call(self, method, path_or_url, body=None, accept=MEDIA_TYPE):
        """(status, headers, bytes); HTTP errors are answers, not exceptions."""
        url = path_or_url if "://" in path_or_url else self.endpoint + path_or_url
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Accept", accept)
        if data is not None:
            request.add_header("Content-Type", MEDIA_TYPE)
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def json_call(self, action, method, path, body=None):
        status, headers, raw = self.call(method, path, body)
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        line = {
            "action": action,
            "method": method,
            "path": urllib.parse.urlsplit(path).path if "://" in path else path,
            "status": status,
            "call_id": headers.get("X-Oracle-Compute-Call-Id"),
        }
        if isinstance(parsed, dict) and "message" in parsed and status >= 400:
            line["message"] = parsed["message"]
        elif isinstance(parsed, dict) and "state" in parsed:
            line["name"] = parsed.get("name")
            line["state"] = parsed.get("state")
            line["cancellation"] = (parsed.get("cancellation") or {}).get("state")
        elif isinstance(parsed, dict) and "result" in parsed:
            line["count"] = len(parsed["result"])
            line["names"] = [r.get("name") for r in parsed["result"]]
        emit(**line)
        return status, parsed

    def authenticate(self, user, password):
        status, _ = self.json_call(
            "authenticate", "POST", "/authenticate/", {"user": user, "password": password}
        )
        cookies = [c.name for c in self.jar]
        emit(action="cookie", present="nimbula" in cookies)
        return status

    def refresh(self):
        return self.json_call("refresh", "GET", "/refresh/")[0]

    def create(self, instance, account=None):
        body = {"instance": instance, "cancel": False}
        if account:
            body["account"] = account
        return self.json_call("create", "POST", "/console/screencapture/", body)

    def get(self, name):
        return self.json_call("get", "GET", "/console/screencapture" + name)

    def poll(self, name, timeout=120.0, every=1.0):
        deadline = time.monotonic() + timeout
        while True:
            status, capture = self.get(name)
            if status != 200 or capture.get("state") in TERMINAL:
                return status, capture
            if time.monotonic() > deadline:
                emit(action="poll", name=name, timed_out=True)
                return status, capture
            time.sleep(every)

    def cancel(self, name):
        return self.json_call("cancel", "PUT", "/console/screencapture" + name, {"cancel": True})

    def delete(self, name):
        return self.json_call("delete", "DELETE", "/console/screencapture" + name)

    def list(self, container):
        container = container if container.endswith("/") else container + "/"
        return self.json_call("list", "GET", "/console/screencapture" + container)

    def fetch_media(self, media_uri, out):
        status, headers, raw = self.call("GET", media_uri, accept="image/jpeg")
        line = {
            "action": "media",
            "path": urllib.parse.urlsplit(media_uri).path,
            "status": status,
            "content_type": headers.get("Content-Type"),
            "content_length": headers.get("Content-Length"),
            "etag": headers.get("ETag"),
            "x_vmshot_sha256": headers.get("X-Vmshot-Sha256"),
        }
        if status == 200:
            with open(out, "wb") as f:
                f.write(raw)
            line["file"] = out
            line["bytes"] = len(raw)
            line["sha256"] = hashlib.sha256(raw).hexdigest()
            line["sha256_matches"] = line["sha256"] == line["x_vmshot_sha256"]
        emit(**line)
        return status


def container_of(user):
    return user.rstrip("/") + "/"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoint", required=True, help="e.g. https://127.0.0.1:8443")
    p.add_argument("--user", required=True, help="two-part name /Compute-{domain}/{user}")
    p.add_argument("--password-file", required=True, help="file whose first line is the password")
    p.add_argument("--insecure", action="store_true", help="do not verify the TLS certificate")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to poll a capture")
    p.add_argument("--out", default="capture.jpg", help="where to save the JPEG")
    p.add_argument("--instance", help="instance object name, for create/all")
    p.add_argument("--account", help="account two-part name (default: the server's)")
    p.add_argument("--name", help="capture object name, for get/cancel/delete")
    p.add_argument(
        "command",
        choices=["authenticate", "create", "get", "cancel", "delete", "list", "all"],
        help="all: authenticate, create, poll, fetch media, list, cancel a second one, delete",
    )
    args = p.parse_args(argv)
    with open(args.password_file) as f:
        password = f.readline().rstrip("\n")

    client = Client(args.endpoint, insecure=args.insecure)
    if client.authenticate(args.user, password) != 204:
        return 1
    if args.command == "authenticate":
        return 0
    if args.command in ("get", "cancel", "delete") and not args.name:
        p.error("--name is required for " + args.command)
    if args.command in ("create", "all") and not args.instance:
        p.error("--instance is required for " + args.command)
    if args.command == "get":
        return 0 if client.get(args.name)[0] == 200 else 1
    if args.command == "cancel":
        return 0 if client.cancel(args.name)[0] == 200 else 1
    if args.command == "delete":
        return 0 if client.delete(args.name)[0] in (200, 204) else 1
    if args.command == "list":
        return 0 if client.list(container_of(args.user))[0] == 200 else 1

    status, capture = client.create(args.instance, args.account)
    if status != 201:
        return 1
    if args.command == "create":
        return 0
    status, capture = client.poll(capture["name"], timeout=args.timeout)
    ok = status == 200 and capture.get("state") == "complete"
    if ok and capture.get("media_uri"):
        ok = client.fetch_media(capture["media_uri"], args.out) == 200
    client.list(container_of(args.user))
    # A second request, cancelled at once (it may be refused by the
    # one-per-minute rule: that answer is printed too).
    status, second = client.create(args.instance, args.account)
    if status == 201:
        client.cancel(second["name"])
        client.poll(second["name"], timeout=args.timeout)
        client.delete(second["name"])
    client.delete(capture["name"])
    client.list(container_of(args.user))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
