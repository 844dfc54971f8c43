"""Reads Custody tables with pyiceberg (an independent Iceberg implementation) and prints them
as one JSON object: {"table": [row, ...], ...}. Used by the end-to-end tests.

    dump_tables.py WAREHOUSE                      # every table, every column
    dump_tables.py WAREHOUSE events:tenant_id,seq quarantine   # chosen tables and columns
"""

import datetime
import json
import os
import sys
import uuid

from pyiceberg.catalog.sql import SqlCatalog

TABLES = [
    "events",
    "quarantine",
    "chain_heads",
    "checkpoints",
    "view_changes",
    "vault",
    "expired",
    "config_log",
    "epochs",
]


# Ids are stored in two columns (the UUID's 16 bytes, or the text when the id is not a
# canonical UUID); asking for the id reads both and gives the text.
IDS = {
    "event_id": ("event_uuid", "event_id_text"),
    "parent_event_id": ("parent_uuid", "parent_id_text"),
}


def plain(value):
    """Binary columns (hashes) as lowercase hex, timestamps in Custody's text form."""
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, datetime.datetime):
        utc = value.astimezone(datetime.timezone.utc)
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return str(value)


def with_ids(rows):
    for row in rows:
        for name, (binary, text) in IDS.items():
            if binary in row or text in row:
                b, t = row.pop(binary, None), row.pop(text, None)
                row[name] = str(uuid.UUID(bytes=b)) if b is not None else t
    return rows


def columns(name, cols):
    """The stored columns behind `cols` (ids expanded)."""
    if cols is None or name != "events":
        return cols
    out = []
    for c in cols:
        out.extend(IDS.get(c, (c,)))
    return tuple(out)


def storage_props(warehouse: str) -> dict:
    """FileIO properties for a warehouse whose tables are in object storage (its
    storage.json), credentials from the AWS environment."""
    path = os.path.join(warehouse, "storage.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        spec = json.load(f)
    props = {"s3.region": spec.get("region") or "us-east-1"}
    if spec.get("endpoint"):
        props["s3.endpoint"] = spec["endpoint"]
    if spec.get("path_style"):
        props["s3.force-virtual-addressing"] = "false"
    for var, prop in [
        ("AWS_ACCESS_KEY_ID", "s3.access-key-id"),
        ("AWS_SECRET_ACCESS_KEY", "s3.secret-access-key"),
    ]:
        if var in os.environ:
            props[prop] = os.environ[var]
    return props


def main() -> None:
    warehouse = sys.argv[1]
    wanted = [(t, None) for t in TABLES]
    if len(sys.argv) > 2:
        wanted = []
        for spec in sys.argv[2:]:
            name, _, cols = spec.partition(":")
            wanted.append((name, tuple(cols.split(",")) if cols else None))
    catalog = SqlCatalog(
        "custody",
        uri=f"sqlite:///{warehouse}/catalog.db",
        warehouse=f"file://{warehouse}/data",
        **storage_props(warehouse),
    )
    out = {}
    for name, cols in wanted:
        table = catalog.load_table(("custody", name))
        cols = columns(name, cols)
        scan = table.scan(selected_fields=cols) if cols else table.scan()
        rows = scan.to_arrow().to_pylist()
        out[name] = with_ids(rows) if name == "events" else rows
    json.dump(out, sys.stdout, default=plain)


if __name__ == "__main__":
    main()
