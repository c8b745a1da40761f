#!/usr/bin/env python3
"""vmshot's benchmark baseline: the screenshot agent an operator would write
with Debian's python3-libvirt and python3-pil, instead of running vmshot.

It is the baseline because it is the honest alternative, not a strawman:
libvirt's own screenshot call (virDomainScreenshot, read through a stream),
Pillow to JPEG (libjpeg-turbo underneath, as in vmshot), SHA-256 and base64
from the standard library, one libvirt connection kept open per thread, and
the standard library's threaded HTTP server. It does nothing vmshot does
besides: no signature check, no throttle, no limits. `cargo bench --bench
screenshots` and the scripts in benches/ measure vmshot against it.

Usage:
  py_agent.py bench DOMAIN [N]   time N screenshots (30) after 3 warm-ups in
                                 this process; prints one line of JSON
  py_agent.py serve PORT         answer GetInstanceScreenshot over HTTP on
                                 127.0.0.1:PORT (GET or POST, parameters in
                                 the query or a form body, InstanceId = the
                                 domain's name); JSON replies; HTTP/1.0, one
                                 request per connection; no signature check

Environment: LIBVIRT_URI (qemu:///system), JPEG_QUALITY (80).
"""
import base64
import hashlib
import io
import json
import os
import statistics
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import libvirt
from PIL import Image

LIBVIRT_URI = os.environ.get("LIBVIRT_URI", "qemu:///system")
JPEG_QUALITY = int(os.environ.get("JPEG_QUALITY", "80"))
CHUNK = 1024 * 1024  # bytes asked of the stream per read

_per_thread = threading.local()


def libvirt_connection():
    """This thread's connection, opened on first use: threads share nothing,
    so concurrent requests do not queue on one RPC channel."""
    conn = getattr(_per_thread, "conn", None)
    if conn is None:
        conn = libvirt.open(LIBVIRT_URI)
        _per_thread.conn = conn
    return conn


def screenshot(name):
    """Screen 0 of the domain `name`, as libvirt hands it over (PNG or PPM)."""
    conn = libvirt_connection()
    domain = conn.lookupByName(name)
    stream = conn.newStream(0)
    try:
        domain.screenshot(stream, 0, 0)
        parts = []
        while True:
            data = stream.recv(CHUNK)
            if not data:
                break
            parts.append(data)
        stream.finish()
    except BaseException:
        try:
            stream.abort()
        except libvirt.libvirtError:
            pass
        raise
    return b"".join(parts)


def to_jpeg(payload):
    """(width, height), the JPEG bytes and their SHA-256 (hex)."""
    with Image.open(io.BytesIO(payload)) as picture:
        rgb = picture.convert("RGB")
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    jpeg = buffer.getvalue()
    return rgb.size, jpeg, hashlib.sha256(jpeg).hexdigest()


def ms_between(start, end):
    return (end - start) * 1000.0


def bench(name, runs):
    for _ in range(3):  # the connection, the caches
        to_jpeg(screenshot(name))
    grabs, encodes, totals = [], [], []
    size = (0, 0)
    for _ in range(runs):
        start = time.perf_counter()
        payload = screenshot(name)
        grabbed = time.perf_counter()
        size, jpeg, _digest = to_jpeg(payload)
        base64.b64encode(jpeg)
        done = time.perf_counter()
        grabs.append(ms_between(start, grabbed))
        encodes.append(ms_between(grabbed, done))
        totals.append(ms_between(start, done))
    p50 = lambda values: round(statistics.median(values), 2)
    line = {
        "anchor": "libvirt-python+Pillow",
        "domain": name,
        "width": size[0],
        "height": size[1],
        "runs": runs,
        "p50_total_ms": p50(totals),
        "p50_grab_ms": p50(grabs),
        "p50_encode_hash_b64_ms": p50(encodes),
    }
    print(json.dumps(line))


def first_values(encoded):
    """A query string or form body as {name: first value}; blanks dropped."""
    return {key: values[0] for key, values in parse_qs(encoded).items()}


class ScreenshotHandler(BaseHTTPRequestHandler):
    # http.server's default, stated: one request per connection.
    protocol_version = "HTTP/1.0"

    def log_message(self, format, *args):
        pass  # no access log: a log line per request is not what is measured

    def parameters(self):
        params = first_values(urlsplit(self.path).query)
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            params.update(first_values(self.rfile.read(length).decode()))
        return params

    def answer(self):
        params = self.parameters()
        # The classic SDK sends Action as a parameter, the Tea SDKs as a header.
        action = params.get("Action") or self.headers.get("x-acs-action")
        request_id = str(uuid.uuid4()).upper()
        instance = params.get("InstanceId")
        if action != "GetInstanceScreenshot" or instance is None:
            self.send_json(400, {"RequestId": request_id, "Code": "MissingParameter"})
            return
        try:
            payload = screenshot(instance)
        except libvirt.libvirtError as err:
            self.send_json(404, {"RequestId": request_id, "Code": "InvalidParameter",
                                 "Message": str(err)})
            return
        _size, jpeg, _digest = to_jpeg(payload)
        self.send_json(200, {"RequestId": request_id, "InstanceId": instance,
                             "Screenshot": base64.b64encode(jpeg).decode("ascii")})

    do_GET = answer
    do_POST = answer

    def send_json(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def serve(port):
    ThreadingHTTPServer(("127.0.0.1", port), ScreenshotHandler).serve_forever()


def main(argv):
    if len(argv) in (3, 4) and argv[1] == "bench":
        bench(argv[2], int(argv[3]) if len(argv) == 4 else 30)
    elif len(argv) == 3 and argv[1] == "serve":
        serve(int(argv[2]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
