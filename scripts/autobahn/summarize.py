#!/usr/bin/env python3
"""Summarize an Autobahn|Testsuite report and check it against expected results.

Reads the index.json that wstest writes into its outdir, prints per-behavior
counts and every case that is not OK/INFORMATIONAL, and compares the run with
an expected file: a JSON map of case id -> behavior, e.g. {"1.1.1": "OK"}.

Exit status is non-zero when:
  * a case's behavior or behaviorClose is not OK or INFORMATIONAL;
  * a selected case (--selected) is missing from the report (wstest silently
    drops the remaining cases when the peer dies);
  * (unless --no-compare) the expected file is missing, a case's behavior
    differs from it, an expected case is missing from the report, the report
    has a case the expected file lacks, or the case counts differ.

With --selected, only the expected entries for the selected cases are
compared, so a run of a subset (CASES=...) can still be checked.

--write-expected (re)writes the expected file from this run; it is refused
unless every case is OK/INFORMATIONAL and no selected case is missing. With
--selected, entries for cases outside the selection are kept as they were.

Standard library only.
"""
import argparse
import json
import os
import sys

GOOD = ("OK", "INFORMATIONAL")
BEHAVIORS = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")


def case_key(case_id):
    """'1.10.2' -> (1, 10, 2), so cases sort like wstest sorts them."""
    return tuple(int(p) if p.isdigit() else p for p in case_id.split("."))


def load_json(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        sys.exit("summarize: cannot read %s %s: %s" % (what, path, e))


def case_detail(report_dir, entry):
    """Short 'result' text from the per-case JSON report, if present."""
    name = entry.get("reportfile")
    if not name:
        return ""
    data = load_json(os.path.join(report_dir, name), "case report")
    if not isinstance(data, dict):
        return ""
    text = data.get("result") or ""
    close = data.get("resultClose") or ""
    if close and entry.get("behaviorClose") not in GOOD:
        text = (text + " | close: " + close) if text else "close: " + close
    text = " ".join(text.split())
    return text[:200] + ("..." if len(text) > 200 else "")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report", help="wstest outdir or its index.json")
    ap.add_argument("--expected", help="expected results file (case id -> behavior)")
    ap.add_argument("--selected",
                    help="file with the case ids the run selected, one per line")
    ap.add_argument("--agent", help="agent name in index.json (default: the only one)")
    ap.add_argument("--label", default="", help="name printed in the summary")
    ap.add_argument("--no-compare", action="store_true",
                    help="skip the comparison with the expected file")
    ap.add_argument("--write-expected", action="store_true",
                    help="write the expected file from this run")
    args = ap.parse_args()

    index_path = args.report
    if os.path.isdir(index_path):
        index_path = os.path.join(index_path, "index.json")
    report_dir = os.path.dirname(os.path.abspath(index_path))
    label = args.label or report_dir
    index = load_json(index_path, "report")
    if index is None:
        print("FAIL [%s]: no report at %s (wstest did not finish, or the peer "
              "never reached updateReports)" % (label, index_path))
        return 1

    agents = sorted(index)
    agent = args.agent
    if agent is None:
        if len(agents) != 1:
            sys.exit("summarize: index.json has agents %s; pass --agent" % agents)
        agent = agents[0]
    if agent not in index:
        print("FAIL [%s]: agent %r not in report (agents: %s)" % (label, agent, agents))
        return 1
    results = index[agent]
    cases = sorted(results, key=case_key)

    errors = []

    # ---- summary --------------------------------------------------------
    total_ms = sum(int(results[c].get("duration") or 0) for c in cases)
    print("== Autobahn %s: agent %s, %d cases, %.1f s in cases"
          % (label, agent, len(cases), total_ms / 1000.0))
    for field in ("behavior", "behaviorClose"):
        counts = {}
        for c in cases:
            b = results[c].get(field, "?")
            counts[b] = counts.get(b, 0) + 1
        names = list(BEHAVIORS) + sorted(set(counts) - set(BEHAVIORS))
        print("  %-14s %s" % (field + ":",
                              "  ".join("%s=%d" % (n, counts.get(n, 0)) for n in names)))

    info = [c for c in cases if results[c].get("behavior") == "INFORMATIONAL"]
    if info:
        print("  INFORMATIONAL: %s" % " ".join(info))

    bad = [c for c in cases
           if results[c].get("behavior") not in GOOD
           or results[c].get("behaviorClose") not in GOOD]
    if bad:
        print("  %d case(s) not OK/INFORMATIONAL:" % len(bad))
        for c in bad:
            r = results[c]
            print("    %-9s behavior=%-13s close=%-13s code=%s  %s"
                  % (c, r.get("behavior"), r.get("behaviorClose"),
                     r.get("remoteCloseCode"), case_detail(report_dir, r)))
        errors.append("%d case(s) not OK/INFORMATIONAL" % len(bad))

    # ---- selected cases all present? ------------------------------------
    selected = None
    if args.selected:
        with open(args.selected, encoding="utf-8") as f:
            selected = [line.strip() for line in f if line.strip()]
        missing = [c for c in selected if c not in results]
        extra = [c for c in cases if c not in set(selected)]
        if missing:
            print("  %d selected case(s) missing from the report (did the peer "
                  "die or hang?): %s" % (len(missing), " ".join(missing[:40])
                                         + (" ..." if len(missing) > 40 else "")))
            errors.append("%d of %d selected case(s) missing"
                          % (len(missing), len(selected)))
        if extra:
            print("  %d case(s) in the report were not selected: %s"
                  % (len(extra), " ".join(extra[:40])))
            errors.append("%d unselected case(s) in the report" % len(extra))

    # ---- write or compare expected -------------------------------------
    if args.write_expected:
        if not args.expected:
            sys.exit("summarize: --write-expected needs --expected FILE")
        if errors:
            print("FAIL [%s]: refusing to write %s: %s"
                  % (label, args.expected, "; ".join(errors)))
            return 1
        new = {c: results[c]["behavior"] for c in cases}
        if selected is not None:
            old = load_json(args.expected, "expected file") or {}
            kept = {c: b for c, b in old.items() if c not in set(selected)}
            new.update(kept)
        with open(args.expected, "w", encoding="utf-8") as f:
            json.dump({c: new[c] for c in sorted(new, key=case_key)}, f, indent=2)
            f.write("\n")
        print("  wrote %s (%d cases)" % (args.expected, len(new)))
    elif not args.no_compare:
        expected = load_json(args.expected, "expected file") if args.expected else None
        if expected is None:
            errors.append("no expected file %s (create it with --write-expected, "
                          "or skip the comparison)" % args.expected)
        else:
            if selected is not None:
                sel = set(selected)
                expected = {c: b for c, b in expected.items() if c in sel}
            exp_missing = [c for c in sorted(expected, key=case_key) if c not in results]
            unexpected = [c for c in cases if c not in expected]
            differ = [c for c in cases
                      if c in expected and results[c].get("behavior") != expected[c]]
            if len(cases) != len(expected):
                errors.append("case count %d, expected %d" % (len(cases), len(expected)))
            if exp_missing:
                print("  %d expected case(s) missing from the report: %s"
                      % (len(exp_missing), " ".join(exp_missing[:40])
                         + (" ..." if len(exp_missing) > 40 else "")))
                errors.append("%d expected case(s) missing" % len(exp_missing))
            if unexpected:
                print("  %d case(s) not in the expected file: %s"
                      % (len(unexpected), " ".join(unexpected[:40])
                         + (" ..." if len(unexpected) > 40 else "")))
                errors.append("%d case(s) not in the expected file" % len(unexpected))
            if differ:
                print("  %d case(s) differ from expected:" % len(differ))
                for c in differ:
                    print("    %-9s got %-13s expected %s"
                          % (c, results[c].get("behavior"), expected[c]))
                errors.append("%d case(s) differ from expected" % len(differ))
            if not (exp_missing or unexpected or differ):
                print("  matches %s (%d cases)" % (args.expected, len(expected)))

    if errors:
        print("FAIL [%s]: %s" % (label, "; ".join(errors)))
        return 1
    print("PASS [%s]" % label)
    return 0


if __name__ == "__main__":
    sys.exit(main())
