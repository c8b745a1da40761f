#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into fuzz/corpus/<target>/.

Each seed is a real input: requests as the SDKs send them (the captured
vectors of tests/sdk/vectors, and requests signed here by the documented
rules with the keys of the unit tests' vectors), RFB byte streams as QEMU
sends them, the fixtures' screens, the repository's systemd/*.toml. Requests
are written as an HTTP/1 head: `METHOD TARGET`, header lines, an empty line,
the body (see src/api/fuzzing.rs). Seeds named `signed-*` must verify: a unit
test checks that they do. Standard library only; rerun after a format
changes: `python3 fuzz/seeds.py`.
"""

import base64
import hashlib
import hmac
import json
import struct
import urllib.parse
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def http(method, target, headers, body=b""):
    head = f"{method} {target}\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers) + "\r\n"
    return head.encode() + (body if isinstance(body, bytes) else body.encode())


def sha256_hex(b):
    return hashlib.sha256(b).hexdigest()


def hmac256(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


# ---------------------------------------------------------------- alibaba
for name in ["classic", "tea"]:
    v = json.loads((ROOT / "tests/sdk/vectors" / f"{name}.json").read_text())
    write("alibaba", f"signed-{name}", http(v["method"], v["target"], v["headers"], v["body"]))

# -------------------------------------------------------------------- aws
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
AWS_DATE = "20150830T123600Z"


def aws_quote(s):
    return urllib.parse.quote(s, safe="-_.~")


def aws_sign(method, path, query, headers, body, service, region="us-east-1"):
    scope = f"{AWS_DATE[:8]}/{region}/{service}/aws4_request"
    pairs = sorted((aws_quote(k), aws_quote(v)) for k, v in query)
    cq = "&".join(f"{k}={v}" for k, v in pairs)
    signed = sorted(n.lower() for n, _ in headers)
    ch = "".join(f"{n.lower()}:{v.strip()}\n" for n, v in sorted(headers, key=lambda h: h[0].lower()))
    creq = "\n".join([method, path, cq, ch, ";".join(signed), sha256_hex(body.encode())])
    sts = "\n".join(["AWS4-HMAC-SHA256", AWS_DATE, scope, sha256_hex(creq.encode())])
    key = ("AWS4" + AWS_SECRET).encode()
    for part in [AWS_DATE[:8], region, service, "aws4_request"]:
        key = hmac256(key, part)
    return scope, ";".join(signed), hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()


base = [("host", "example.amazonaws.com"), ("x-amz-date", AWS_DATE)]
scope, signed, sig = aws_sign("GET", "/", [], base, "", "service")
auth = f"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/{scope}, SignedHeaders={signed}, Signature={sig}"
write("aws", "signed-suite-get-vanilla", http("GET", "/", base + [("Authorization", auth)]))

form = "Action=GetConsoleScreenshot&Version=2016-11-15&InstanceId=i-0123456789abcdef0&WakeUp=true"
hdrs = [("Content-Type", "application/x-www-form-urlencoded; charset=utf-8"),
        ("Host", "127.0.0.1:8080"), ("X-Amz-Date", AWS_DATE)]
scope, signed, sig = aws_sign("POST", "/", [], hdrs, form, "ec2")
auth = f"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/{scope}, SignedHeaders={signed}, Signature={sig}"
write("aws", "signed-ec2-screenshot-form",
      http("POST", "/", hdrs + [("User-Agent", "Boto3/1.35"), ("Authorization", auth)], form))

query = [("Action", "GetConsoleOutput"), ("Version", "2016-11-15"), ("InstanceId", "i-0123456789abcdef0"),
         ("Latest", "true"), ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
         ("X-Amz-Credential", f"AKIDEXAMPLE/{AWS_DATE[:8]}/us-east-1/ec2/aws4_request"),
         ("X-Amz-Date", AWS_DATE), ("X-Amz-Expires", "300"), ("X-Amz-SignedHeaders", "host")]
hdrs = [("host", "127.0.0.1:8080")]
# A presigned request signs UNSIGNED-PAYLOAD? EC2's query form signs the empty body's hash.
scope, signed, sig = aws_sign("GET", "/", query, hdrs, "", "ec2")
target = "/?" + "&".join(f"{aws_quote(k)}={aws_quote(v)}" for k, v in query + [("X-Amz-Signature", sig)])
write("aws", "signed-ec2-console-presigned", http("GET", target, hdrs))

# ----------------------------------------------------------------- huawei
HW_SK = "exampleSecretKey0000000000000000000000000"
HW_AK = "HPUAEXAMPLEAK0000001"
HW_DATE = "20261122T070014Z"
PROJECT = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"


def hw_quote(s):
    return urllib.parse.quote(s, safe="~")


def huawei(method, path, query, body, content_type):
    headers = [("content-type", content_type), ("host", "127.0.0.1:18931"), ("user-agent", "vmshot-probe"),
               ("x-project-id", PROJECT), ("x-sdk-date", HW_DATE)]
    uri = "/".join(hw_quote(s) for s in urllib.parse.unquote(path).split("/"))
    uri += "" if uri.endswith("/") else "/"
    pairs = sorted(urllib.parse.parse_qsl(query, keep_blank_values=True))
    cq = "&".join(f"{hw_quote(k)}={hw_quote(v)}" for k, v in pairs)
    ch = "".join(f"{n}:{v.strip()}\n" for n, v in headers)
    signed = ";".join(n for n, _ in headers)
    creq = "\n".join([method, uri, cq, ch, signed, sha256_hex(body.encode())])
    sts = "\n".join(["SDK-HMAC-SHA256", HW_DATE, sha256_hex(creq.encode())])
    sig = hmac.new(HW_SK.encode(), sts.encode(), hashlib.sha256).hexdigest()
    auth = f"SDK-HMAC-SHA256 Access={HW_AK}, SignedHeaders={signed}, Signature={sig}"
    target = path + (f"?{query}" if query else "")
    return http(method, target, headers + [("accept", "*/*"), ("authorization", auth)], body)


records = f"/v2/{PROJECT}/screen-records"
write("huawei", "signed-show", huawei("GET", f"{records}/8c2f8a3e-5b1d-4f3c-9e7a-1d2c3b4a5f60", "", "",
                                      "application/json"))
list_query = ("desktop_id=d-1&desktop_names=guest1%2Cguest%202&end_time=2026-11-22%2023%3A59%3A59&limit=5"
              "&offset=0&sort_field=start_time&sort_type=desc&start_time=2026-11-01%2000%3A00%3A00"
              "&status=UPLOAD_COMPLETED&type=FULL&username=alice")
write("huawei", "signed-list", huawei("GET", records, list_query, "", "application/json"))
write("huawei", "signed-batch-delete", huawei(
    "POST", f"{records}/batch-delete", "",
    '{"screen_records": [{"id": "8c2f8a3e-5b1d-4f3c-9e7a-1d2c3b4a5f60"}]}', "application/json;charset=UTF-8"))
write("huawei", "signed-start", huawei(
    "POST", records, "", '{"desktop_id": "web1", "type": "INTERVAL", "max_duration_seconds": 600}',
    "application/json"))
write("huawei", "token-video-range", http(
    "GET", f"{records}/8c2f8a3e-5b1d-4f3c-9e7a-1d2c3b4a5f60/video",
    [("host", "127.0.0.1"), ("x-auth-token", "example-token-change-me-0123456789"), ("range", "bytes=0-99")]))

# ------------------------------------------------------------------- nova
UUID = "6f1c2a8e-9d3b-4c5e-8a7f-1b2c3d4e5f60"
NOVA = [("Host", "127.0.0.1:8774"), ("X-Auth-Token", "example-token-change-me-0123456789"),
        ("Accept", "application/json")]
write("nova", "list-actions", http(
    "GET", f"/v2.1/1b0c7e5a4f8d4c2e9a610d3e5f7a9b11/servers/{UUID}/os-instance-actions"
    "?limit=2&changes-since=2026-11-01T00:00:00Z",
    NOVA + [("OpenStack-API-Version", "compute 2.58"), ("X-OpenStack-Nova-API-Version", "2.58")]))
write("nova", "show-action", http(
    "GET", f"/compute/v2.1/servers/{UUID}/os-instance-actions/req-0c6b4a4e-8d2f-4a1b-9c3d-5e6f7a8b9c0d",
    NOVA + [("OpenStack-API-Version", "compute latest")]))
write("nova", "console-output", http(
    "POST", f"/v2.1/servers/{UUID}/action", NOVA + [("Content-Type", "application/json")],
    '{"os-getConsoleOutput": {"length": 50}}'))
write("nova", "keystone-validation", http("GET", "/v2.1", NOVA, json.dumps({"token": {
    "expires_at": "2126-11-22T08:00:00.000000Z", "user": {"id": "5e7f9a1b00004000800000000000aaaa", "name": "u"},
    "project": {"id": "1b0c7e5a4f8d4c2e9a610d3e5f7a9b11", "name": "p"},
    "roles": [{"id": "r", "name": "member"}, {"id": "a", "name": "admin"}]}})))

# ---------------------------------------------------------------- sessions
COOKIE_KEY = bytes([7] * 32)


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def seal(context, user, grant, issued, expires):
    body = f"v1.{b64(user.encode())}.{b64(grant)}.{issued}.{expires}"
    tag = hmac.new(COOKIE_KEY, context + body.encode(), hashlib.sha256).digest()
    return f"{body}.{b64(tag)}"


def grant_digest(password_hash, roles, project="", instances=()):
    h = hashlib.sha256()

    def field(b):
        h.update(struct.pack(">Q", len(b)))
        h.update(b)
    field(password_hash.encode())
    for r in roles:
        field(r.encode())
    field(b"\0project")
    field(project.encode())
    field(b"\0instances")
    for i in instances:
        field(i.encode())
    return h.digest()


USER = "jack.jones@example.com"
HASH = ("$argon2id$v=19$m=19456,t=2,p=1$qea6lLLHvl5XI7D8G1Mchw$"
        "qfUlp4ZLAejyMYGWp5Xmg+QUS3PoU0N2YKUk114SUAk")
GRANT = grant_digest(HASH, ["Compute_Operations"])
# Valid at the targets' SESSION_TIME (1_700_000_100) and, for the live page,
# which checks at the real time, until 2100.
nimbula = seal(b"vmshot-oracle-session\0", USER, bytes(32), 1_700_000_000, 1_700_001_800)
ui = seal(b"vmshot-ui-session\0", USER, GRANT, 1_700_000_000, 4_102_444_800)

# ----------------------------------------------------------------- oracle
O = [("Host", "api-z999.compute.us0.oraclecloud.com"), ("Accept", "application/oracle-compute-v3+json")]
write("oracle", "authenticate", http(
    "POST", "/authenticate/", O + [("Content-Type", "application/oracle-compute-v3+json")],
    json.dumps({"user": "/Compute-vmshot/jack.jones@example.com", "password": "example-password-change-me"})))
write("oracle", "signed-create", http(
    "POST", "/console/screencapture/", O + [("Content-Type", "application/oracle-compute-v3+json"),
                                             ("Cookie", f"nimbula={nimbula}")],
    json.dumps({"instance": "/Compute-vmshot/jack.jones@example.com/web1/" + UUID,
                "account": "/Compute-vmshot/cloud_storage", "name": "/Compute-vmshot/jack/cap1"})))
write("oracle", "signed-update", http(
    "PUT", "/console/screencapture/Compute-vmshot/jack.jones@example.com/web1/0",
    O + [("Cookie", f"a=b; nimbula=\"{nimbula}\"")],
    json.dumps({"cancel": True, "instance": "/Compute-vmshot/jack.jones@example.com/web1"})))
write("oracle", "signed-list", http(
    "GET", "/console/screencapture/Compute-vmshot/jack.jones@example.com/", O + [("Cookie", f"nimbula={nimbula}")]))
write("oracle", "signed-media", http(
    "GET", "/console/screencapture/media/Compute-vmshot/jack.jones@example.com/web1/0",
    O + [("Cookie", f"nimbula={nimbula}"), ("Range", "bytes=-500")], "x" * 1000))
write("oracle", "signed-console", http(
    "GET", f"/instanceconsole/Compute-vmshot/jack.jones@example.com/web1/{UUID}",
    O + [("Cookie", f"nimbula={nimbula}")]))

# ------------------------------------------------------------ marketplace
write("marketplace", "status", http(
    "GET", "/appstore/publisher/v1/machineimages/42",
    [("Host", "127.0.0.1"), ("Authorization", "Bearer example-token-change-me-0123456789")]))
write("marketplace", "head", http(
    "HEAD", "/appstore/publisher/v1/machineimages/9223372036854775807",
    [("Authorization", "Bearer  other-token-0000000000000000 ")]))

# ----------------------------------------------------------------- native
N = [("Host", "vmshot.example"), ("Cookie", f"__Host-vmshot-ui={ui}"), ("Sec-Fetch-Site", "same-origin")]
write("native", "signed-domains", http("GET", "/v1/domains", N))
write("native", "signed-screenshot", http("GET", "/v1/domains/web%201/screenshot?width=128&fresh=true", N))
write("native", "signed-start-recording", http(
    "POST", "/v1/domains/web1/recordings?max_duration_seconds=60",
    N + [("X-Vmshot-Csrf", "0" * 64), ("Content-Type", "application/json")]))
write("native", "signed-video", http("GET", "/v1/recordings/5b8c0d3e/video", N + [("Range", "bytes=100-")]))
write("native", "login-form", http(
    "POST", "/ui/login", [("Host", "vmshot.example"), ("Content-Type", "application/x-www-form-urlencoded")],
    "user=jack.jones%40example.com&password=example-password-change-me+x"))

# -------------------------------------------------------------------- rfb
def server_init(w, h, name=b"QEMU (web1)"):
    return struct.pack(">HH", w, h) + bytes([32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0]) + \
        struct.pack(">I", len(name)) + name


def rect(x, y, w, h, enc, payload=b""):
    return struct.pack(">HHHHi", x, y, w, h, enc) + payload


def update(*rects):
    return struct.pack(">BBH", 0, 0, len(rects)) + b"".join(rects)


def raw(w, h, v):
    return bytes([v, v + 1, v + 2, 0]) * (w * h)


hello38 = b"RFB 003.008\n" + bytes([1, 1]) + struct.pack(">I", 0)
stream = (hello38 + server_init(16, 8)
          + update(rect(0, 0, 16, 8, 0, raw(16, 8, 10)))
          + update(rect(4, 2, 4, 2, 0, raw(4, 2, 200)), rect(0, 0, 4, 2, 1, struct.pack(">HH", 4, 2)))
          + bytes([2])
          + struct.pack(">BBHH", 1, 0, 0, 2) + bytes(12)
          + struct.pack(">BBBBI", 3, 0, 0, 0, 5) + b"hello"
          + update(rect(0, 0, 8, 4, -223), rect(0, 0, 8, 4, 0, raw(8, 4, 50)))
          + update())
write("rfb", "qemu-3.8", bytes([7]) + stream)
write("rfb", "qemu-3.8-byte-reads", bytes([0]) + stream)
write("rfb", "server-3.7", bytes([3]) + b"RFB 003.007\n" + bytes([2, 2, 1]) + server_init(4, 4, b"")
      + update(rect(0, 0, 4, 4, 0, raw(4, 4, 1))))
write("rfb", "server-3.3", bytes([5]) + b"RFB 003.003\n" + struct.pack(">I", 1) + server_init(2, 2)
      + update(rect(0, 0, 2, 2, 0, raw(2, 2, 9))))
write("rfb", "refused-3.8", bytes([255]) + b"RFB 003.008\n" + bytes([0]) + struct.pack(">I", 6) + b"denied")
write("rfb", "auth-only", bytes([1]) + b"RFB 003.008\n" + bytes([1, 2]))

# ------------------------------------------------------------- screenshot
for png in ["login.png", "blank.png"]:
    write("screenshot", png, (ROOT / "fixtures/screens" / png).read_bytes())


def png_file(w, h, color_type, depth, rows, interlace=0, extra=b""):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra
            + chunk(b"IDAT", zlib.compress(b"".join(b"\0" + r for r in rows))) + chunk(b"IEND", b""))


write("screenshot", "gray-alpha.png", png_file(3, 2, 4, 8, [bytes(range(6)), bytes(range(6, 12))]))
write("screenshot", "palette-1bit.png", png_file(
    8, 2, 3, 1, [b"\xaa", b"\x55"],
    extra=struct.pack(">I", 6) + b"PLTE" + bytes([0, 0, 0, 255, 255, 255])
    + struct.pack(">I", zlib.crc32(b"PLTE" + bytes([0, 0, 0, 255, 255, 255])))))
write("screenshot", "rgb16.png", png_file(2, 1, 2, 16, [bytes(range(12))]))
write("screenshot", "p6.ppm", b"P6\n4 2\n255\n" + bytes(range(24)))
write("screenshot", "p5-comment.ppm", b"P5 # QEMU\n3 2 15\n" + bytes([0, 5, 10, 15, 1, 2]))
write("screenshot", "p6-16bit.ppm", b"P6 1 1 65535\n" + bytes([0xff, 0xff, 0, 0, 0x80, 0]))

# ---------------------------------------------------------- config, files
write("config", "vmshot.toml", (ROOT / "systemd/vmshot.toml").read_bytes())
write("config", "rules.toml", (ROOT / "src/diagnose/rules.toml").read_bytes())
write("config", "dialects.toml", """
[server]
listen = ["127.0.0.1:8080"]
[alibaba]
credentials_file = "/etc/vmshot/alibaba.toml"
wakeup_settle_ms = 500
[aws]
credentials_file = "/etc/vmshot/aws.toml"
region = "us-east-1"
[nova]
tokens_file = "/etc/vmshot/nova-tokens.toml"
path = "/compute"
[ui]
access = "loopback"
""")
for f in sorted((ROOT / "systemd").glob("*.toml")):
    if f.name != "vmshot.toml":
        write("credentials", f.name, f.read_bytes())

# ---------------------------------------------------------------- console
write("console", "boot-log", bytes([20]) + (
    b"\x1b[0m\x1b[2J\x1b[01;01HSeaBIOS (version 1.16.2)\r\n\x1b]0;title\x07Booting from Hard Disk...\r\n"
    b"[    0.000000] Linux version 6.1.0\r\n\x1b[1;31mKernel panic - not syncing: VFS: Unable to mount root fs"
    b" on unknown-block(0,0)\x1b[0m\r\n\x1bc(initramfs) \x1b]8;;x\x1b\\link\x1b]8;;\x1b\\\r\n"))
write("console", "grub", bytes([3]) + "GNU GRUB  version 2.06\n\n error: file `/boot/grub/x86_64-efi/normal.mod' "
      "not found.\nEntering rescue mode...\ngrub rescue> \u00e9\n".encode())
