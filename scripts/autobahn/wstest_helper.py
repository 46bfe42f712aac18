# -*- coding: utf-8 -*-
"""Helpers around wstest. Python 2.7: run it with the wstest virtualenv's
interpreter (/opt/autobahn/bin/python), since it imports wstest itself.

  wstest_helper.py cases SPEC.json
      Print the case ids SPEC.json selects ("cases" minus "exclude-cases"),
      one per line, resolved exactly the way wstest resolves them. Exits 1
      when the selection is empty or names a case that does not exist: wstest
      would hang forever (empty) or crash mid-run (unknown id) instead.

  wstest_helper.py update-reports URL AGENT
      Ask a running fuzzingserver at URL (ws://host:port) to write its
      reports for AGENT, like a client driver's final /updateReports call.
      run.sh uses it when the client under test died before doing so, to
      still get a (partial) report. Plain sockets, no dependencies.

  wstest_helper.py wstest [WSTEST ARGS...]
      Run wstest with every listening socket bound to $WSTEST_BIND (default
      127.0.0.1). wstest has no option for this: its fuzzingserver (and the
      embedded web server, -u/--webport) listen on all interfaces, whatever
      host the spec's "url" names. We wrap the reactor's listenTCP/listenSSL
      so that an unspecified interface ('') becomes $WSTEST_BIND.
"""
from __future__ import print_function

import json
import os
import sys


def cmd_cases(spec_path):
    from autobahntestsuite.case import (Cases, CaseSetname, CaseBasename,
                                        CaseCategories, CaseSubCategories)
    from autobahntestsuite.caseset import CaseSet

    with open(spec_path) as f:
        spec = json.load(f)
    case_set = CaseSet(CaseSetname, CaseBasename, Cases, CaseCategories,
                       CaseSubCategories)
    try:
        selected = case_set.parseSpecCases(spec)
    except ValueError as e:  # e.g. a malformed literal id like "1.x"
        print("wstest_helper: bad case pattern: %s" % e, file=sys.stderr)
        return 1
    unknown = [c for c in selected if c not in case_set.CasesIndices]
    if unknown:
        print("wstest_helper: unknown case id(s): %s" % ", ".join(unknown),
              file=sys.stderr)
        return 1
    if not selected:
        print("wstest_helper: the case selection matches no case "
              "(wstest would hang)", file=sys.stderr)
        return 1
    for c in selected:
        print(c)
    return 0


def cmd_update_reports(url, agent):
    import base64
    import socket
    try:
        from urllib.parse import quote, urlparse
    except ImportError:  # Python 2
        from urllib import quote
        from urlparse import urlparse

    u = urlparse(url)
    host, port = u.hostname, u.port or 80
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    request = ("GET /updateReports?agent=%s HTTP/1.1\r\n"
               "Host: %s:%d\r\n"
               "Upgrade: websocket\r\n"
               "Connection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n"
               % (quote(agent, safe=""), host, port, key))
    # Writing the reports can take a while: generous timeout.
    sock = socket.create_connection((host, port), timeout=120)
    try:
        sock.sendall(request.encode("ascii"))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n")[0]:
            print("wstest_helper: updateReports refused: %r"
                  % head.split(b"\r\n")[0], file=sys.stderr)
            return 1
        # wstest writes the reports, then sends a close frame: wait for it.
        while not rest:
            chunk = sock.recv(4096)
            if not chunk:
                break
            rest += chunk
        try:
            sock.sendall(b"\x88\x80" + os.urandom(4))  # masked, empty close
        except socket.error:
            pass
    finally:
        sock.close()
    return 0


def cmd_wstest(args):
    bind = os.environ.get("WSTEST_BIND", "127.0.0.1")

    # Importing wstest first installs its preferred reactor (it must be the
    # first Twisted import), then we patch that reactor's listen methods.
    from autobahntestsuite import wstest
    from twisted.internet import reactor

    orig_tcp = reactor.listenTCP
    orig_ssl = reactor.listenSSL

    def listen_tcp(port, factory, backlog=50, interface=''):
        return orig_tcp(port, factory, backlog, interface or bind)

    def listen_ssl(port, factory, context_factory, backlog=50, interface=''):
        return orig_ssl(port, factory, context_factory, backlog,
                        interface or bind)

    reactor.listenTCP = listen_tcp
    reactor.listenSSL = listen_ssl

    sys.argv = ["wstest"] + list(args)
    return wstest.run()


def main(argv):
    if len(argv) >= 2 and argv[0] == "cases":
        return cmd_cases(argv[1])
    if len(argv) == 3 and argv[0] == "update-reports":
        return cmd_update_reports(argv[1], argv[2])
    if len(argv) >= 1 and argv[0] == "wstest":
        return cmd_wstest(argv[1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]) or 0)
