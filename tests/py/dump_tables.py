"""Reads every Custody table with pyiceberg (an independent Iceberg implementation) and prints
them as one JSON object: {"table": [row, ...], ...}. Used by the end-to-end tests."""

import json
import sys

from pyiceberg.catalog.sql import SqlCatalog

TABLES = ["events", "quarantine", "chain_heads", "view_event_counts", "view_hitl_latency"]


def main() -> None:
    warehouse = sys.argv[1]
    catalog = SqlCatalog(
        "custody",
        uri=f"sqlite:///{warehouse}/catalog.db",
        warehouse=f"file://{warehouse}/data",
    )
    out = {}
    for name in TABLES:
        table = catalog.load_table(("custody", name))
        out[name] = table.scan().to_arrow().to_pylist()
    json.dump(out, sys.stdout, default=str)


if __name__ == "__main__":
    main()
