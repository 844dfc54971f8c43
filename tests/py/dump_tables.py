"""Reads Custody tables with pyiceberg (an independent Iceberg implementation) and prints them
as one JSON object: {"table": [row, ...], ...}. Used by the end-to-end tests.

    dump_tables.py WAREHOUSE                      # every table, every column
    dump_tables.py WAREHOUSE events:tenant_id,seq quarantine   # chosen tables and columns
"""

import json
import sys

from pyiceberg.catalog.sql import SqlCatalog

TABLES = [
    "events",
    "quarantine",
    "chain_heads",
    "checkpoints",
    "view_event_counts",
    "view_hitl_latency",
    "vault",
    "epochs",
]


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
    )
    out = {}
    for name, cols in wanted:
        table = catalog.load_table(("custody", name))
        scan = table.scan(selected_fields=cols) if cols else table.scan()
        out[name] = scan.to_arrow().to_pylist()
    json.dump(out, sys.stdout, default=str)


if __name__ == "__main__":
    main()
