#!/usr/bin/env python3
"""List a server's instance actions and show one, through python-novaclient
and through openstacksdk, against a fixed endpoint with a fixed token (no
Keystone: keystoneauth1's admin_token plugin gives both the token and the
endpoint). Prints one JSON line per call.

    nova.py ENDPOINT TOKEN PROJECT_ID SERVER_ID [--version 2.84]
            [--console LENGTH|all]

--console: instead, the server's console output, as `nova console-log
[--length N]` (novaclient sends the length as a string, or null) and
openstacksdk's get_server_console_output (which leaves it out when None)
get it: one line each, call "console", with "output".

ENDPOINT is vmshot's compute root (e.g. http://127.0.0.1:8774); the project
goes into the path (/v2.1/{project}/...) as Nova's catalog URLs have it.
"""
import argparse
import json
import sys

from keystoneauth1 import session as ks_session
from keystoneauth1.loading import get_plugin_loader


def out(**kw):
    print(json.dumps(kw, sort_keys=True, default=str), flush=True)


def session(endpoint, token):
    # admin_token: sends X-Auth-Token as given, and every request goes to
    # `endpoint` whatever the catalog would have said.
    auth = get_plugin_loader("admin_token").load_from_options(
        endpoint=endpoint, token=token)
    return ks_session.Session(auth=auth)


def novaclient_calls(args):
    from novaclient import client as nova_client

    # A fixed version: "2.latest" would need version discovery at the
    # endpoint's root, which this exercises separately (versions below).
    sess = session(f"{args.endpoint}/v2.1/{args.project}", args.token)
    nova = nova_client.Client(args.version, session=sess)
    if args.console is not None:
        # As novaclient's shell does for --length N: the string, unconverted.
        length = None if args.console == "all" else args.console
        output = nova.servers.get_console_output(args.server, length=length)
        out(sdk="novaclient", call="console", output=str(output))
        return
    versions = nova.versions.list()
    out(sdk="novaclient", call="versions",
        versions=[{"id": v.id, "version": v.version,
                   "min_version": v.min_version} for v in versions])
    actions = nova.instance_action.list(args.server)
    out(sdk="novaclient", call="list",
        actions=[a.to_dict() for a in actions])
    if actions:
        one = nova.instance_action.get(args.server, actions[0].request_id)
        out(sdk="novaclient", call="show", action=one.to_dict())


def openstacksdk_calls(args):
    import openstack

    conn = openstack.connection.Connection(
        session=session(args.endpoint, args.token),
        compute_endpoint_override=f"{args.endpoint}/v2.1/{args.project}",
        compute_api_version="2",
    )
    if args.console is not None:
        length = None if args.console == "all" else int(args.console)
        got = conn.compute.get_server_console_output(args.server, length=length)
        out(sdk="openstacksdk", call="console", output=got["output"])
        return
    actions = list(conn.compute.server_actions(args.server))
    out(sdk="openstacksdk", call="list",
        actions=[a.to_dict(computed=False) for a in actions])
    if actions:
        one = conn.compute.get_server_action(
            actions[0].request_id, args.server)
        out(sdk="openstacksdk", call="show", action=one.to_dict(computed=False))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("endpoint")
    p.add_argument("token")
    p.add_argument("project")
    p.add_argument("server")
    p.add_argument("--version", default="2.84")
    p.add_argument("--console", default=None)
    args = p.parse_args()
    args.endpoint = args.endpoint.rstrip("/")
    failed = 0
    for calls in (novaclient_calls, openstacksdk_calls):
        try:
            calls(args)
        except Exception as e:  # report and go on: each SDK on its own
            failed += 1
            out(sdk=calls.__name__.split("_")[0], error=type(e).__name__,
                message=str(e))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
