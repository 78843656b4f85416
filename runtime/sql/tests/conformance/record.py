#!/usr/bin/env python3
"""Runs every query of this suite on Apache Flink and records its result beside it.

    ../../../../../shared/anchors/flink/setup.sh /tmp/flinkvenv   # once: PyFlink 2.3 from PyPI
    /tmp/flinkvenv/bin/python record.py            # writes flink/<query>.txt
    /tmp/flinkvenv/bin/python record.py --check    # compares with what is recorded
    /tmp/flinkvenv/bin/python record.py 31_tumble  # only the named queries

Each query runs after ddl.sql in a fresh TableEnvironment, in streaming mode at parallelism 1
with the session time zone UTC. Its changelog is applied (+I/+U add a row, -U/-D take one
away), so a file holds the final multiset, sorted, one row per line, values as `text` below
renders them; the first lines name Flink's column types (nullability dropped, every
character string as STRING). A query Flink refuses is recorded as `error:` and its message.
The Rust side (tests/conformance.rs) renders flink-rs's results the same way.
"""
import collections
import datetime
import decimal
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def text(v):
    """One value as the suite writes it; tests/conformance.rs `text` must agree."""
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "%.9e" % v
    if isinstance(v, decimal.Decimal):
        return format(v, "f")
    if isinstance(v, datetime.datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S.") + "%03d" % (v.microsecond // 1000)
    if isinstance(v, (datetime.date, datetime.time)):
        return v.isoformat()
    return str(v)


def flink_type(t):
    """Flink's type text without nullability or time attributes; strings as STRING."""
    t = t.replace(" NOT NULL", "").replace(" *ROWTIME*", "").replace(" *PROCTIME*", "")
    if t.startswith("VARCHAR(") or t.startswith("CHAR("):
        return "STRING"
    return t


def statements(path):
    body = open(path).read().replace("{data}", os.path.join(HERE, "data"))
    lines = [l for l in body.splitlines() if not l.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def run(name):
    from pyflink.table import EnvironmentSettings, TableEnvironment

    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    conf = env.get_config()
    conf.set("parallelism.default", "1")
    conf.set("table.local-time-zone", "UTC")
    for st in statements(os.path.join(HERE, "ddl.sql")):
        env.execute_sql(st)
    *setup, query = statements(os.path.join(HERE, "queries", name + ".sql"))
    try:
        for st in setup:
            env.execute_sql(st)
        table = env.sql_query(query)
        types = [
            flink_type(str(t.toString()))
            for t in table._j_table.getResolvedSchema().getColumnDataTypes()
        ]
        rows = collections.Counter()
        with table.execute().collect() as results:
            for row in results:
                line = " | ".join(text(v) for v in row)
                kind = str(row.get_row_kind())
                if kind in ("RowKind.INSERT", "RowKind.UPDATE_AFTER", "+I", "+U"):
                    rows[line] += 1
                else:
                    rows[line] -= 1
                    if rows[line] == 0:
                        del rows[line]
    except Exception as e:  # Flink refused the query or failed running it
        lines = [l.strip() for l in str(e).splitlines() if "Exception: " in l]
        return "error: %s\n" % (lines[0] if lines else type(e).__name__)
    out = "types: %s\n" % ", ".join(types)
    for line in sorted(rows.elements()):
        out += line + "\n"
    return out


def main():
    check = "--check" in sys.argv
    names = [a for a in sys.argv[1:] if not a.startswith("--")]
    if not names:
        names = sorted(f[:-4] for f in os.listdir(os.path.join(HERE, "queries")) if f.endswith(".sql"))
    os.makedirs(os.path.join(HERE, "flink"), exist_ok=True)
    differ = 0
    for name in names:
        got = run(name)
        path = os.path.join(HERE, "flink", name + ".txt")
        if check:
            same = os.path.exists(path) and open(path).read() == got
            differ += not same
            print(("same     " if same else "DIFFERS  ") + name)
        else:
            with open(path, "w") as f:
                f.write(got)
            print("%-40s %s" % (name, got.splitlines()[0][:100]))
    if differ:
        sys.exit("%d recorded results differ from Flink's" % differ)


if __name__ == "__main__":
    main()
