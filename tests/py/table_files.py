"""Live data files per table of a Custody warehouse, read with pyiceberg: JSON
{"table": {"files": n, "partitions": n, "manifests": n}} (an independent reader of the
layout Custody writes)."""
import json
import sys

from pyiceberg.catalog.sql import SqlCatalog

warehouse = sys.argv[1]
catalog = SqlCatalog(
    "custody",
    uri=f"sqlite:///{warehouse}/catalog.db",
    warehouse=f"file://{warehouse}/data",
)
out = {}
for ident in catalog.list_tables("custody"):
    table = catalog.load_table(ident)
    snapshot = table.current_snapshot()
    name = ident[-1]
    if snapshot is None:
        out[name] = {"files": 0, "partitions": 0, "manifests": 0}
        continue
    files = table.inspect.files().to_pylist()
    partitions = {json.dumps(f.get("partition"), sort_keys=True, default=str) for f in files}
    out[name] = {
        "files": len(files),
        "partitions": len(partitions),
        "manifests": len(snapshot.manifests(table.io)),
        "spec": str(table.spec()),
    }
print(json.dumps(out))
