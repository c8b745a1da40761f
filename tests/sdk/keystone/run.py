#!/usr/bin/env python3
"""A real Keystone for the Nova dialect's tests, on SQLite.

    run.py serve DIR PORT     set up DIR (once) and serve on 127.0.0.1:PORT
    run.py provision URL      two projects with a member each; prints JSON
    run.py revoke URL SERVICE_TOKEN TOKEN

`serve` runs Keystone's own WSGI application (keystone.server.wsgi) under
the standard library's WSGI server, threaded: no uwsgi to build. `provision`
speaks Keystone's v3 REST API as any client would and prints one JSON line:
{"service_token", "admin_project", "projects": {"a": {"project", "user",
"token"}, "b": {...}}}. The service token is the bootstrap admin's, scoped to
the admin project: Keystone lets it validate other tokens.
"""
import json
import os
import socketserver
import subprocess
import sys
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

ADMIN_PASSWORD = "vmshot-keystone-admin"


def setup(root):
    conf = os.path.join(root, "keystone.conf")
    if os.path.exists(os.path.join(root, "ready")):
        return conf
    os.makedirs(root, exist_ok=True)
    with open(conf, "w") as f:
        f.write(f"""[DEFAULT]
[database]
connection = sqlite:///{root}/keystone.db
[token]
provider = fernet
expiration = 3600
[fernet_tokens]
key_repository = {root}/fernet-keys
[credential]
key_repository = {root}/credential-keys
""")
    bindir = os.path.dirname(sys.executable)
    manage = [os.path.join(bindir, "keystone-manage"), "--config-file", conf]
    steps = [
        ["db_sync"],
        ["fernet_setup", "--keystone-user", "root", "--keystone-group", "root"],
        ["credential_setup", "--keystone-user", "root", "--keystone-group", "root"],
        ["bootstrap", "--bootstrap-password", ADMIN_PASSWORD,
         "--bootstrap-public-url", "http://127.0.0.1/v3/"],
    ]
    with open(os.path.join(root, "setup.log"), "w") as log:
        for step in steps:
            subprocess.run(manage + step, check=True, stdout=log, stderr=log)
    open(os.path.join(root, "ready"), "w").close()
    return conf


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class Threaded(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


def serve(root, port):
    conf = setup(os.path.abspath(root))
    os.environ["OS_KEYSTONE_CONFIG_FILES"] = conf
    # oslo.config parses the command line: ours is not Keystone's.
    sys.argv = sys.argv[:1]
    from keystone.server.wsgi import initialize_public_application

    app = initialize_public_application()
    server = make_server("127.0.0.1", int(port), app, Threaded, Quiet)
    print("keystone listening", flush=True)
    server.serve_forever()


def call(url, method, path, body=None, token=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("X-Auth-Token", token)
    with urllib.request.urlopen(req, timeout=30) as resp:
        text = resp.read()
        return resp.headers, (json.loads(text) if text else None)


def token_for(url, user, password, project_id=None, project_name=None):
    scope = {"project": {"id": project_id}} if project_id else {
        "project": {"name": project_name, "domain": {"id": "default"}}}
    body = {"auth": {"identity": {"methods": ["password"], "password": {
        "user": {"name": user, "domain": {"id": "default"},
                 "password": password}}}, "scope": scope}}
    headers, answer = call(url, "POST", "/v3/auth/tokens", body)
    return headers["X-Subject-Token"], answer["token"]


def provision(url):
    url = url.rstrip("/")
    admin, info = token_for(url, "admin", ADMIN_PASSWORD, project_name="admin")
    _, roles = call(url, "GET", "/v3/roles?name=member", token=admin)
    member = roles["roles"][0]["id"]
    out = {"service_token": admin, "admin_project": info["project"]["id"],
           "projects": {}}
    suffix = os.urandom(4).hex()
    for tenant in ("a", "b"):
        name = f"vmshot-{tenant}-{suffix}"
        _, p = call(url, "POST", "/v3/projects", {"project": {
            "name": name, "domain_id": "default"}}, token=admin)
        project = p["project"]["id"]
        password = f"pw-{name}"
        _, u = call(url, "POST", "/v3/users", {"user": {
            "name": name, "password": password, "domain_id": "default",
            "default_project_id": project}}, token=admin)
        user = u["user"]["id"]
        call(url, "PUT", f"/v3/projects/{project}/users/{user}/roles/{member}",
             token=admin)
        token, _ = token_for(url, name, password, project_id=project)
        out["projects"][tenant] = {"project": project, "user": user,
                                   "token": token}
    print(json.dumps(out), flush=True)


def revoke(url, service_token, token):
    req = urllib.request.Request(url.rstrip("/") + "/v3/auth/tokens",
                                 method="DELETE")
    req.add_header("X-Auth-Token", service_token)
    req.add_header("X-Subject-Token", token)
    urllib.request.urlopen(req, timeout=30).read()
    print("{}", flush=True)


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "provision":
        provision(sys.argv[2])
    elif len(sys.argv) == 5 and sys.argv[1] == "revoke":
        revoke(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
