# -*- coding: utf-8 -*-
"""Helpers around wstest. Python 2.7: run it with the wstest virtualenv's
interpreter (/opt/autobahn/bin/python), since it imports wstest itself.

  wstest_helper.py cases SPEC.json
      Print the case ids SPEC.json selects ("cases" minus "exclude-cases"),
      one per line, resolved exactly the way wstest resolves them. Exits 1
      when the selection is empty or names a case that does not exist: wstest
      would hang forever (empty) or crash mid-run (unknown id) instead.

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
    if len(argv) >= 1 and argv[0] == "wstest":
        return cmd_wstest(argv[1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]) or 0)
