"""An insider's toolkit for the tamper tests: rewrites Custody's Iceberg tables with pyiceberg
(an independent Iceberg implementation), as someone who can write every file of the warehouse
and the catalog, but does not hold the signing key, could.

    tamper_lake.py WH edit TABLE --where COL=VAL ... --set COL=VAL ...   # rows rewritten
    tamper_lake.py WH delete TABLE --where COL=VAL ...                    # rows removed
    tamper_lake.py WH dup TABLE --where COL=VAL ... [--set COL=VAL ...]   # a row forged
    tamper_lake.py WH rollback [TABLE ...]           # catalog pointers to previous metadata
    tamper_lake.py WH drop TABLE                     # table removed from the catalog
    tamper_lake.py WH forge-history TENANT SEQ       # rewrite one event and everything after

Values are parsed as JSON when they can be (numbers), else taken as strings. Each command
prints how many rows it touched and fails if none was.
"""

import argparse
import hashlib
import json
import sqlite3
import sys
import uuid

import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import AlwaysTrue, And, EqualTo

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from verify_bundle import leaf_hash, node, sha256  # noqa: E402


def value(text):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def conditions(pairs):
    out = []
    for pair in pairs or []:
        key, _, val = pair.partition("=")
        out.append((key, value(val)))
    return out


def matches(row, conds):
    return all(row.get(k) == v for k, v in conds)


def catalog(warehouse):
    return SqlCatalog(
        "custody",
        uri=f"sqlite:///{warehouse}/catalog.db",
        warehouse=f"file://{warehouse}/data",
    )


def rewrite(table, keep_row):
    """Replaces the table's rows by `keep_row(row)` for each row (None drops it)."""
    arrow = table.scan().to_arrow()
    rows = arrow.to_pylist()
    out = []
    for row in rows:
        new = keep_row(row)
        if new is not None:
            out.append(new)
    table.overwrite(pa.Table.from_pylist(out, schema=arrow.schema), overwrite_filter=AlwaysTrue())


def compact_range(leaves):
    """Custody's compact range encoding (`size:hex,hex,…`) over `leaves`."""
    stack = []
    for leaf in leaves:
        height, h = 0, leaf
        while stack and stack[-1][0] == height:
            _, left = stack.pop()
            h = node(left, h)
            height += 1
        stack.append((height, h))
    return f"{len(leaves)}:" + ",".join(h.hex() for _, h in stack)


def as_text(row):
    """An events row as the canonical encoding reads it: ids and times as text."""
    out = dict(row)
    for name, binary, text in (
        ("event_id", "event_uuid", "event_id_text"),
        ("parent_event_id", "parent_uuid", "parent_id_text"),
    ):
        b, t = out.pop(binary), out.pop(text)
        out[name] = str(uuid.UUID(bytes=b)) if b is not None else t
    out["event_time"] = row["event_time"].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return out


def forge_history(cat, tenant, seq):
    """Rewrites event `seq` of `tenant`, re-hashes the chain from there, rewrites the tenant's
    chain heads and removes the checkpoints that covered the original."""
    events = cat.load_table(("custody", "events"))
    arrow = events.scan().to_arrow()
    rows = arrow.to_pylist()
    mine = sorted((r for r in rows if r["tenant_id"] == tenant), key=lambda r: r["seq"])
    target = mine[seq]
    payload = json.loads(target["payload"])
    key = next(k for k, v in sorted(payload.items()) if isinstance(v, str))
    payload[key] = "forged: " + payload[key]
    target["payload"] = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    prev = mine[seq - 1]["hash"] if seq > 0 else bytes(32)
    leaves = [leaf_hash(as_text(r)) for r in mine[:seq]]
    for r in mine[seq:]:
        leaf = leaf_hash(as_text(r))
        h = sha256(b"\x02" + prev + leaf)
        r["hash"] = h
        leaves.append(leaf)
        prev = h
    events.overwrite(pa.Table.from_pylist(rows, schema=arrow.schema), overwrite_filter=AlwaysTrue())
    heads = cat.load_table(("custody", "chain_heads"))
    harrow = heads.scan().to_arrow()
    hrows = harrow.to_pylist()
    for r in hrows:
        if r["tenant_id"] == tenant:
            size = r["seq"] + 1
            r["head_hash"] = mine[r["seq"]]["hash"].hex()
            r["merkle_range"] = compact_range(leaves[:size])
    heads.overwrite(pa.Table.from_pylist(hrows, schema=harrow.schema), overwrite_filter=AlwaysTrue())
    cps = cat.load_table(("custody", "checkpoints"))
    rewrite(cps, lambda r: None if r["tenant_id"] == tenant and r["tree_size"] > seq else r)
    return len(mine) - seq


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("warehouse")
    parser.add_argument("command")
    parser.add_argument("args", nargs="*")
    parser.add_argument("--where", action="append")
    parser.add_argument("--set", action="append")
    a = parser.parse_args()
    cat = catalog(a.warehouse)
    touched = 0
    if a.command in ("edit", "delete", "dup"):
        table = cat.load_table(("custody", a.args[0]))
        conds, sets = conditions(a.where), conditions(a.set)

        def apply(row):
            nonlocal touched
            if not matches(row, conds):
                return row
            touched += 1
            if a.command == "delete":
                return None
            for k, v in sets:
                row[k] = v
            return row

        if a.command == "dup":
            arrow = table.scan().to_arrow()
            rows = [r for r in arrow.to_pylist() if matches(r, conds)][:1]
            for r in rows:
                for k, v in sets:
                    r[k] = v
            touched = len(rows)
            if rows:
                table.append(pa.Table.from_pylist(rows, schema=arrow.schema))
        else:
            rewrite(table, apply)
    elif a.command == "rollback":
        db = sqlite3.connect(f"{a.warehouse}/catalog.db")
        names = a.args or [r[0] for r in db.execute("select table_name from iceberg_tables")]
        for name in names:
            touched += db.execute(
                "update iceberg_tables set metadata_location=previous_metadata_location "
                "where table_name=? and previous_metadata_location is not null",
                (name,),
            ).rowcount
        db.commit()
    elif a.command == "drop":
        db = sqlite3.connect(f"{a.warehouse}/catalog.db")
        touched = db.execute("delete from iceberg_tables where table_name=?", (a.args[0],)).rowcount
        db.commit()
    elif a.command == "forge-history":
        touched = forge_history(cat, a.args[0], int(a.args[1]))
    else:
        raise SystemExit(f"unknown command {a.command}")
    print(json.dumps({"touched": touched}))
    return 0 if touched else 2


if __name__ == "__main__":
    sys.exit(main())
