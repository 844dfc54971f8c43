"""Prints every value held in the Parquet files under a directory, whatever snapshot (if any)
references them: each column's values (binary as hex, 16-byte values also as UUID text) and
each column chunk's min/max statistics, as one text per file. Used by the retention test to
search decoded data for what must be gone.

    file_text.py DIR     # {"path": "text", ...}
"""

import json
import os
import sys
import uuid

import pyarrow.parquet as pq


def text(value):
    if isinstance(value, (bytes, bytearray)):
        out = value.hex()
        if len(value) == 16:
            out += " " + str(uuid.UUID(bytes=bytes(value)))
        return out
    return str(value)


def main():
    out = {}
    for root, _, files in os.walk(sys.argv[1]):
        for name in files:
            if not name.endswith(".parquet"):
                continue
            path = os.path.join(root, name)
            parts = []
            table = pq.read_table(path)
            for column in table.columns:
                for value in column.to_pylist():
                    if value is not None:
                        parts.append(text(value))
            meta = pq.ParquetFile(path).metadata
            for g in range(meta.num_row_groups):
                for c in range(meta.num_columns):
                    stats = meta.row_group(g).column(c).statistics
                    if stats is not None and stats.has_min_max:
                        parts.append(text(stats.min))
                        parts.append(text(stats.max))
            out[path] = "\n".join(parts)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
