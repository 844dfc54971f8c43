"""An independent verifier for Custody export bundles and warehouses, written from
docs/chain-format.md.

Usage: verify_bundle.py BUNDLE_DIR --trusted-key HEX [--trusted-key HEX ...] [--checkpoint FILE]
       verify_bundle.py --warehouse WH --trusted-key HEX ...   (needs pyiceberg: section 6.2)

Prints a JSON object {tenant_id: {"ok": bool, "first_bad_seq": int|null, "problems": [...]}}
and exits 1 if any tenant fails. Standard library plus PyNaCl (Ed25519).
"""

import argparse
import hashlib
import json
import os
import sys
import uuid
from collections import defaultdict

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

ZERO = bytes(32)


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def js(value) -> str:
    """A JSON string or null, escaped as the spec says (json.dumps with ensure_ascii=False)."""
    return "null" if value is None else json.dumps(value, ensure_ascii=False)


def canonical(row: dict) -> bytes:
    text = (
        '{"agent_id":' + js(row["agent_id"])
        + ',"event_id":' + js(row["event_id"])
        + ',"event_type":' + js(row["event_type"])
        + ',"parent_event_id":' + js(row["parent_event_id"])
        + ',"payload":' + row["payload"]
        + ',"schema_version":' + js(row["schema_version"])
        + ',"seq":' + str(row["seq"])
        + ',"session_id":' + js(row["session_id"])
        + ',"tenant_id":' + js(row["tenant_id"])
        + ',"timestamp":' + js(row["event_time"])
        + ',"user_id":' + js(row["user_id"])
        + "}"
    )
    return text.encode("utf-8")


def leaf_hash(row: dict) -> bytes:
    return sha256(b"\x00" + canonical(row))


def node(left: bytes, right: bytes) -> bytes:
    return sha256(b"\x01" + left + right)


def mth(leaves: list) -> bytes:
    """RFC 6962 Merkle tree hash."""
    n = len(leaves)
    if n == 0:
        return sha256(b"")
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return node(mth(leaves[:k]), mth(leaves[k:]))


def verify_inclusion(leaf: bytes, index: int, size: int, proof: list, root: bytes) -> bool:
    """RFC 9162 section 2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def sealed_pins(sealed: dict, trusted: dict):
    """An export's registry.json: {tenant: pinned checkpoint hash hex}, or an error string."""
    seal = sealed["seal"]
    key = trusted.get(seal.get("key_id"))
    if key is None:
        return f"epoch {seal.get('epoch')} sealed by an untrusted key"
    try:
        key.verify(seal_message(seal), bytes.fromhex(seal["signature"]))
    except (BadSignatureError, ValueError):
        return f"the seal of epoch {seal['epoch']} has a bad signature"
    root = bytes.fromhex(seal["tenants_root"])
    pins = {}
    for e in sealed["tenants"]:
        leaf = sha256(b"\x00" + canonical_json({"checkpoint": e["checkpoint"], "tenant_id": e["tenant_id"]}).encode("utf-8"))
        proof = [bytes.fromhex(h) for h in e["proof"]]
        if not verify_inclusion(leaf, e["index"], seal["tenants"], proof, root):
            return f"the entry of tenant {e['tenant_id']} is not in the sealed registry"
        pins[e["tenant_id"]] = e["checkpoint"]
    return pins


def roots_at(leaves: list, sizes: set) -> dict:
    """MTH of every prefix size in `sizes`, using a compact range (O(n log n))."""
    out = {}
    stack = []  # (height, hash) of perfect subtrees, left to right
    for i, leaf in enumerate(leaves):
        height, h = 0, leaf
        while stack and stack[-1][0] == height:
            _, left = stack.pop()
            h = node(left, h)
            height += 1
        stack.append((height, h))
        size = i + 1
        if size in sizes:
            acc = stack[-1][1]
            for _, left in reversed(stack[:-1]):
                acc = node(left, acc)
            out[size] = acc
    return out


def key_id(public: bytes) -> str:
    return hashlib.sha256(public).hexdigest()[:16]


def checkpoint_message(cp: dict) -> bytes:
    body = (
        '{"chain_head":' + js(cp["chain_head"])
        + ',"epoch":' + str(cp["epoch"])
        + ',"key_id":' + js(cp["key_id"])
        + ',"prev_checkpoint":' + js(cp["prev_checkpoint"])
        + ',"root":' + js(cp["root"])
        + ',"signed_at":' + js(cp["signed_at"])
        + ',"tenant_id":' + js(cp["tenant_id"])
        + ',"tree_size":' + str(cp["tree_size"])
        + "}"
    )
    return b"custody-checkpoint/v2\n" + body.encode("utf-8")


def checkpoint_hash(cp: dict) -> str:
    return sha256(checkpoint_message(cp)).hex()


def valid_signature(cp: dict, trusted: dict) -> bool:
    key = trusted.get(cp["key_id"])
    if key is None:
        return False
    try:
        key.verify(checkpoint_message(cp), bytes.fromhex(cp["signature"]))
        return True
    except (BadSignatureError, ValueError):
        return False


def read_ndjson(path: str) -> list:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


EVENT_MEMBERS = {
    "agent_id", "event_id", "event_time", "event_type", "hash", "leaf_hash", "parent_event_id",
    "payload", "prev_hash", "schema_version", "seq", "session_id", "tenant_id", "user_id",
}
EVENT_HASHES = {"prev_hash": 64, "hash": 64, "leaf_hash": 64}
EVENT_TYPES = {"seq": int, "payload": str}
CHECKPOINT_MEMBERS = {
    "chain_head", "epoch", "key_id", "prev_checkpoint", "root", "signature", "signed_at",
    "tenant_id", "tree_size",
}
CHECKPOINT_HASHES = {"root": 64, "chain_head": 64, "prev_checkpoint": 64, "signature": 128}
CHECKPOINT_TYPES = {"epoch": int, "tree_size": int}
NULLABLE = {"user_id", "parent_event_id"}


class Malformed(Exception):
    pass


def no_duplicates(pairs):
    out = {}
    for key, value in pairs:
        if key in out:
            raise Malformed(f"duplicate member name {key!r}")
        out[key] = value
    return out


def strict_row(line: str, members: set, hashes: dict, types: dict) -> dict:
    """The row, if in the strict form of docs/chain-format.md section 5; Malformed otherwise."""
    try:
        row = json.loads(line, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as e:
        raise Malformed(f"invalid json: {e}")
    if not isinstance(row, dict):
        raise Malformed("not a JSON object")
    missing = sorted(members - set(row))
    if missing:
        raise Malformed(f"member {missing[0]!r} is missing (write null, never omit)")
    extra = sorted(set(row) - members)
    if extra:
        raise Malformed(f"unknown member {extra[0]!r}")
    for name, length in hashes.items():
        h = row[name]
        if not (isinstance(h, str) and len(h) == length and all(c in "0123456789abcdef" for c in h)):
            raise Malformed(f"{name} is not {length} lowercase hex digits")
    for name, value in row.items():
        want = types.get(name, str)
        if value is None and name in NULLABLE:
            continue
        if want is int:
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
                raise Malformed(f"{name} is not a non-negative integer")
        elif not isinstance(value, str):
            raise Malformed(f"{name} is not a string")
    return row


def read_strict(path: str, members: set, hashes: dict, types: dict, malformed: list) -> list:
    name = path.rsplit("/", 1)[-1]
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append(strict_row(line, members, hashes, types))
            except Malformed as e:
                malformed.append(f"{name}:{i}: {e}")
    return out


def declared_expired(events):
    """The [first, last] ranges RETENTION_APPLIED events of the log declare removed."""
    out = []
    for e in events:
        if e["event_type"] != "RETENTION_APPLIED":
            continue
        try:
            payload = json.loads(e["payload"])
            out.extend((int(a), int(b)) for a, b in payload.get("expired_ranges", []))
        except (ValueError, TypeError):
            continue
    return out


def verify_tenant(tenant, events, checkpoints, held, trusted, latest, expired=()):
    problems = []

    def problem(kind, seq, detail):
        problems.append({"kind": kind, "seq": seq, "detail": detail})

    valid = defaultdict(list)
    chain = []
    for i, cp in enumerate(checkpoints + held):
        key = trusted.get(cp["key_id"])
        if key is None:
            problem("unknown_key", None, f"epoch {cp['epoch']}: untrusted key {cp['key_id']}")
            continue
        try:
            key.verify(checkpoint_message(cp), bytes.fromhex(cp["signature"]))
        except (BadSignatureError, ValueError):
            problem("bad_signature", None, f"epoch {cp['epoch']}: bad signature")
            continue
        valid[cp["tree_size"]].append(cp)
        if i < len(checkpoints):
            chain.append(cp)
    # The stored checkpoints chain by hash, epoch after epoch, from the tenant's first.
    chain.sort(key=lambda c: c["epoch"])
    prev = None
    for cp in chain:
        expected = ZERO.hex() if prev is None else checkpoint_hash(prev)
        if prev is not None and prev["epoch"] == cp["epoch"]:
            problem("checkpoint_chain", None, f"two checkpoints of epoch {cp['epoch']}")
        elif cp["prev_checkpoint"] != expected:
            problem("checkpoint_chain", None, f"epoch {cp['epoch']} does not follow its predecessor")
        elif prev is not None and prev["tree_size"] > cp["tree_size"]:
            problem("checkpoint_chain", None, f"epoch {cp['epoch']} shrinks the log")
        prev = cp
    if latest is not None and prev is not None and prev["epoch"] < latest:
        problem("truncated", None, f"checkpoints stop at epoch {prev['epoch']}, the log's newest is {latest}")
    for cp in valid.get(0, []):
        if cp["root"] != sha256(b"").hex():
            problem("root_mismatch", 0, "empty checkpoint with a non-empty root")

    events = sorted(events, key=lambda e: e["seq"])
    leaves, prev, broken, last_seq = [], ZERO, False, None
    heads = []
    # Section 6.1 step 7: a removed event is represented by its leaf alone.
    standing = {}
    for x in expired:
        if x["seq"] in standing:
            problem("fork", x["seq"], f"two expired leaves at seq {x['seq']}")
        standing[x["seq"]] = bytes.fromhex(x["leaf_hash"])
    through_leaf = []

    def walk(upto):
        nonlocal prev
        while len(leaves) < upto and len(leaves) in standing:
            seq = len(leaves)
            leaf = standing.pop(seq)
            through_leaf.append(seq)
            prev = sha256(b"\x02" + prev + leaf)
            leaves.append(leaf)
            heads.append(prev)

    for row in events:
        seq = row["seq"]
        if not broken and seq >= 0:
            walk(seq)
        if seq == last_seq:
            problem("fork", seq, f"two events at seq {seq}")
            continue
        last_seq = seq
        if broken:
            continue
        expected = len(leaves)
        if seq != expected:
            problem("gap", expected, f"seq {expected} missing")
            broken = True
            continue
        leaf = leaf_hash(row)
        # A warehouse row stores neither (None): the hash check below covers both.
        if row["prev_hash"] is not None and row["prev_hash"] != prev.hex():
            problem("broken_link", seq, "prev_hash is not the previous hash")
            broken = True
            continue
        h = sha256(b"\x02" + prev + leaf)
        if row["leaf_hash"] not in (None, leaf.hex()) or row["hash"] != h.hex():
            problem("modified", seq, "content does not match its hashes")
            broken = True
            continue
        leaves.append(leaf)
        heads.append(h)
        prev = h

    if not broken:
        walk(float("inf"))
    if standing:
        problem("fork", min(standing), "expired leaves where the log holds its events or past its end")
    declared = declared_expired(events)
    undeclared = [s for s in through_leaf if not any(a <= s <= b for a, b in declared)]
    if undeclared:
        problem("unrecorded_expiry", undeclared[0], f"{len(undeclared)} events removed without a recorded retention")
    roots = roots_at(leaves, set(valid))
    for size, cps in valid.items():
        if 0 < size <= len(leaves):
            for cp in cps:
                if cp["root"] != roots[size].hex() or cp["chain_head"] != heads[size - 1].hex():
                    problem("root_mismatch", size - 1, f"epoch {cp['epoch']} disagrees at size {size}")
    if not broken:
        largest = max(valid) if valid else None
        if largest is not None and largest > len(leaves):
            problem("truncated", len(leaves), f"checkpoint covers {largest}, log has {len(leaves)}")
        elif (largest or 0) < len(leaves):
            problem("unattested", largest or 0, "events past the last checkpoint")

    seqs = [p["seq"] for p in problems if p["seq"] is not None]
    ranges = []
    for s in through_leaf:
        if ranges and ranges[-1][1] + 1 == s:
            ranges[-1][1] = s
        else:
            ranges.append([s, s])
    return {
        "ok": not problems,
        "first_bad_seq": min(seqs) if seqs else None,
        "verified_events": len(leaves),
        "expired_ranges": ranges,
        "problems": problems,
    }


def canonical_json(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def timestamp(dt) -> str:
    return dt.astimezone(__import__("datetime").timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def seal_message(seal: dict) -> bytes:
    body = {k: seal[k] for k in ("epoch", "key_id", "prev_seal", "row", "signed_at", "tenants", "tenants_root")}
    return b"custody-epoch/v1\n" + canonical_json(body).encode("utf-8")


def registry_root(entries: list) -> bytes:
    leaves = [
        sha256(b"\x00" + canonical_json({"checkpoint": h, "tenant_id": t}).encode("utf-8"))
        for t, h in entries
    ]
    return mth(leaves)


def stored_id(binary, text):
    return str(uuid.UUID(bytes=binary)) if binary is not None else text


def read_warehouse(path: str):
    """Events, checkpoints, epoch rows and every table's current data files (with SHA-256)."""
    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog("custody", uri=f"sqlite:///{path}/catalog.db", warehouse=f"file://{path}/data")

    def rows(name):
        return catalog.load_table(("custody", name)).scan().to_arrow().to_pylist()

    events = []
    for r in rows("events"):
        # Section 6.1: ids are stored as a UUID's 16 bytes or, when not a canonical UUID,
        # as text; the hash as 32 bytes. The leaf and the predecessor's hash are not stored:
        # they are recomputed from the row and from the previous row.
        r["event_time"] = timestamp(r["event_time"])
        r["event_id"] = stored_id(r["event_uuid"], r["event_id_text"])
        r["parent_event_id"] = stored_id(r["parent_uuid"], r["parent_id_text"])
        r["hash"] = r["hash"].hex()
        r["prev_hash"] = None
        r["leaf_hash"] = None
        events.append({k: r[k] for k in EVENT_MEMBERS})
    checkpoints = [{k: r[k] for k in CHECKPOINT_MEMBERS} for r in rows("checkpoints")]
    # Leaves of events removed by retention (a table older warehouses lack).
    try:
        expired = [
            {"tenant_id": r["tenant_id"], "seq": r["seq"], "leaf_hash": r["leaf_hash"].hex()}
            for r in rows("expired")
        ]
    except Exception:  # noqa: BLE001 - pyiceberg raises its own NoSuchTableError
        expired = []
    epochs = rows("epochs")
    files = {}
    for (_, name) in catalog.list_tables("custody"):
        if name == "epochs":
            continue
        table = catalog.load_table(("custody", name))
        found = {}
        if table.current_snapshot() is not None:
            for task in table.scan().plan_files():
                p = task.file.file_path
                with open(p[len("file://"):] if p.startswith("file://") else p, "rb") as f:
                    found[p] = hashlib.sha256(f.read()).hexdigest()
        files[name] = found
    return events, checkpoints, epochs, files, expired


def verify_warehouse(epochs, checkpoints, files, trusted, tenants_with_events):
    """Section 6.2: seals, registries and table files. Returns (report, {tenant: [problems]},
    {tenant: epoch of its latest checkpoint in the signed registry})."""
    problems, tenant_problems = [], defaultdict(list)

    def bad(kind, detail):
        problems.append({"kind": kind, "seq": None, "detail": detail})

    stored = {(c["epoch"], c["tenant_id"]): sha256(checkpoint_message(c)).hex() for c in checkpoints}
    ever = {c["tenant_id"] for c in checkpoints} | set(tenants_with_events)
    registered, sealed, prev, last = set(), {}, None, None
    full, latest_registered = {}, {}
    sealed_rows = {}
    for row in sorted(epochs, key=lambda r: r["epoch"]):
        epoch = row["epoch"]
        if epoch == last:
            bad("bad_seal", f"two rows for epoch {epoch}")
            continue
        last = epoch
        try:
            seal = json.loads(row["seal"])
        except (TypeError, json.JSONDecodeError):
            bad("bad_seal", f"epoch {epoch} has no seal")
            prev = None
            continue
        key = trusted.get(seal.get("key_id"))
        if key is None:
            bad("unknown_key", f"epoch {epoch} sealed by an untrusted key")
            prev = sha256(seal_message(seal))
            continue
        try:
            key.verify(seal_message(seal), bytes.fromhex(seal["signature"]))
        except (BadSignatureError, ValueError):
            bad("bad_seal", f"the seal of epoch {epoch} has a bad signature")
            prev = sha256(seal_message(seal))
            continue
        digest = sha256(canonical_json({
            "checkpoint_digest": row["checkpoint_digest"], "checkpoints": row["checkpoints"],
            "committed_at": timestamp(row["committed_at"]), "epoch": epoch, "events": row["events"],
            "files": row["files"], "positions": row["positions"], "quarantined": row["quarantined"],
            "registry": row["registry"], "sink_id": row["sink_id"], "source": row["source"],
        }).encode("utf-8")).hex()
        if seal["epoch"] != epoch or seal["row"] != digest:
            bad("bad_seal", f"the row of epoch {epoch} is not the row its seal signed")
        if seal["prev_seal"] != (prev or ZERO).hex():
            bad("bad_seal", f"the seal of epoch {epoch} does not follow the previous one")
        prev = sha256(seal_message(seal))
        # The row holds the registry's change (the checkpoints the epoch signed); the seal
        # signs the whole registry: every tenant's latest checkpoint.
        change = json.loads(row["registry"])
        for tenant, h in change:
            full[tenant] = h
            latest_registered[tenant] = epoch
        entries = sorted(full.items())
        if seal["tenants_root"] != registry_root(entries).hex() or seal["tenants"] != len(entries):
            bad("bad_seal", f"the registry of epoch {epoch} is not the one sealed")
        for tenant, h in change:
            registered.add((epoch, tenant))
            have = stored.get((epoch, tenant))
            if have != h:
                kind = "checkpoint_chain" if have is not None or tenant in ever else "tenant_missing"
                tenant_problems[tenant].append({"kind": kind, "seq": None, "detail": f"epoch {epoch}"})
        manifest = json.loads(row["files"])
        digests = manifest.get("sha256", {})
        for table, entries in manifest.get("tables", {}).items():
            for entry in entries:
                data_file = json.loads(entry)
                path = data_file["file_path"]
                sealed[path] = (table, digests.get(path))
                sealed_rows[path] = data_file["record_count"]
        # Compactions: sealed files replaced, row for row, by files under this seal.
        for table, merges in manifest.get("compacted", {}).items():
            for merge in merges:
                replaced = 0
                for path in merge["inputs"]:
                    if path in sealed and sealed[path][0] == table:
                        del sealed[path]
                        replaced += sealed_rows.pop(path, 0)
                    else:
                        bad("bad_seal", f"epoch {epoch} compacts {path}, which no epoch sealed")
                merged = 0
                for entry in merge["outputs"]:
                    data_file = json.loads(entry)
                    path = data_file["file_path"]
                    sealed[path] = (table, digests.get(path))
                    sealed_rows[path] = data_file["record_count"]
                    merged += data_file["record_count"]
                # Retention removes `expired` rows; a rebuilt derived table (the views'
                # changelog) is replaced whole by the epoch's own files.
                expired = merge.get("expired", 0)
                consistent = merged == 0 if merge.get("rebuild") else (
                    replaced == merge["rows"] + expired and merged == merge["rows"])
                if not consistent:
                    bad("bad_seal", f"epoch {epoch} compacts {replaced} rows into {merged}")
    for c in checkpoints:
        if (c["epoch"], c["tenant_id"]) not in registered:
            tenant_problems[c["tenant_id"]].append(
                {"kind": "checkpoint_chain", "seq": None, "detail": f"epoch {c['epoch']} under no seal"})
    for table, found in files.items():
        for path, digest in found.items():
            if sealed.pop(path, None) != (table, digest):
                bad("table_modified", f"custody.{table}: {path} is not as sealed")
    for path, (table, _) in sealed.items():
        bad("table_modified", f"custody.{table}: sealed {path} is missing")
    report = {"ok": not problems, "first_bad_seq": None, "verified_events": 0, "problems": problems}
    return report, tenant_problems, latest_registered


def cosignature_message(c: dict) -> bytes:
    body = {k: c[k] for k in ("checkpoint", "cosigned_at", "key_id", "tenant_id", "tree_size")}
    return b"custody-cosignature/v1\n" + canonical_json(body).encode("utf-8")


def read_witness(source: str) -> dict:
    """A witness's published state: its http://ADDR (GET /cosigned) or cosigned.json."""
    if source.startswith("http://") or source.startswith("https://"):
        import urllib.request

        url = source if source.endswith("/cosigned") else source.rstrip("/") + "/cosigned"
        with urllib.request.urlopen(url, timeout=30) as r:
            return json.load(r)
    import os

    path = os.path.join(source, "cosigned.json") if os.path.isdir(source) else source
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def witness_checks(state: dict, witness_key: bytes, trusted, events, stored, held):
    """Section 6.3: cosigned checkpoints become held ones; returns {tenant: [problems]}."""
    problems = defaultdict(list)
    key = VerifyKey(witness_key)
    wid = key_id(witness_key)
    valid = {}
    for tenant, w in state.get("tenants", {}).items():
        cp, co = w["checkpoint"], w["cosignature"]
        ok = (
            co["key_id"] == wid and co["tenant_id"] == tenant == cp["tenant_id"]
            and co["tree_size"] == cp["tree_size"]
            and co["checkpoint"] == sha256(checkpoint_message(cp)).hex()
        )
        if ok:
            try:
                key.verify(cosignature_message(co), bytes.fromhex(co["signature"]))
            except (BadSignatureError, ValueError):
                ok = False
        if not ok:
            problems[tenant].append({"kind": "bad_signature", "seq": None, "detail": "witness cosignature"})
            continue
        valid[tenant] = cp
        held[tenant].append(cp)
        if tenant not in events and not any(c["tenant_id"] == tenant for c in stored):
            problems[tenant].append({"kind": "tenant_missing", "seq": None, "detail": "cosigned, gone"})
    latest = {}
    for c in stored:
        if c["tenant_id"] not in latest or c["epoch"] > latest[c["tenant_id"]]["epoch"]:
            latest[c["tenant_id"]] = c
    for tenant, c in latest.items():
        if valid.get(tenant) != c:
            problems[tenant].append({"kind": "unwitnessed", "seq": None, "detail": f"epoch {c['epoch']}"})
    return problems


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("bundle", nargs="?")
    parser.add_argument("--warehouse")
    parser.add_argument("--witness")
    parser.add_argument("--witness-key")
    parser.add_argument("--trusted-key", action="append", default=[])
    parser.add_argument("--checkpoint", action="append", default=[])
    args = parser.parse_args()
    trusted = {}
    for k in args.trusted_key:
        public = bytes.fromhex(open(k).read().strip() if not all(c in "0123456789abcdef" for c in k) else k)
        trusted[key_id(public)] = VerifyKey(public)
    malformed = []
    events = defaultdict(list)
    warehouse = None
    expired = defaultdict(list)
    if args.warehouse:
        rows, stored, epochs, files, leaves = read_warehouse(args.warehouse)
        warehouse = (epochs, files)
    else:
        leaves = []
        if os.path.exists(f"{args.bundle}/expired.ndjson"):
            leaves = read_strict(
                f"{args.bundle}/expired.ndjson", {"tenant_id", "seq", "leaf_hash"}, {"leaf_hash": 64},
                {"seq": int}, malformed)
        rows = read_strict(f"{args.bundle}/events.ndjson", EVENT_MEMBERS, EVENT_HASHES, EVENT_TYPES, malformed)
        stored = read_strict(
            f"{args.bundle}/checkpoints.ndjson", CHECKPOINT_MEMBERS, CHECKPOINT_HASHES, CHECKPOINT_TYPES, malformed
        )
    for row in rows:
        events[row["tenant_id"]].append(row)
    for leaf in leaves:
        expired[leaf["tenant_id"]].append(leaf)
    cps = defaultdict(list)
    for cp in stored:
        cps[cp["tenant_id"]].append(cp)
    held = defaultdict(list)
    for path in args.checkpoint:
        for cp in read_ndjson(path):
            held[cp["tenant_id"]].append(cp)
    witnessed = {}
    if args.witness:
        wk = args.witness_key
        wk = open(wk).read().strip() if not all(c in "0123456789abcdef" for c in wk) else wk
        witnessed = witness_checks(read_witness(args.witness), bytes.fromhex(wk), trusted, events, stored, held)
    # A tenant's stored checkpoints must reach the latest one the signed registry lists: a
    # warehouse's seals, or the export's sealed registry (registry.json).
    wh = None
    latest = {}
    bundle_problems = []
    pin_problems = defaultdict(list)
    if warehouse is not None:
        wh = verify_warehouse(warehouse[0], stored, warehouse[1], trusted, set(events))
        latest = wh[2]
    else:
        try:
            sealed = json.load(open(f"{args.bundle}/registry.json"))
        except FileNotFoundError:
            sealed = None
        pins = sealed_pins(sealed, trusted) if sealed is not None else "the bundle has no sealed registry"
        if isinstance(pins, str):
            bundle_problems.append({"kind": "bad_seal" if sealed is not None else "truncated", "seq": None, "detail": pins})
        else:
            by_hash = {(c["tenant_id"], sha256(checkpoint_message(c)).hex()): c for c in stored}
            for t in sorted(set(events) | set(cps)):
                cp = by_hash.get((t, pins.get(t)))
                if cp is None:
                    pin_problems[t].append({"kind": "truncated", "seq": None, "detail": "the sealed latest checkpoint is missing"})
                else:
                    latest[t] = cp["epoch"]
    report = {
        t: verify_tenant(t, events.get(t, []), cps.get(t, []), held.get(t, []), trusted, latest.get(t),
                         expired.get(t, []))
        for t in sorted(set(events) | set(cps) | set(held))
    }
    for tenant, found in list(witnessed.items()) + list(pin_problems.items()):
        r = report.setdefault(tenant, {"ok": True, "first_bad_seq": None, "verified_events": 0, "problems": []})
        r["problems"].extend(found)
        r["ok"] = False
    if wh is not None:
        wh_report, tenant_problems, _ = wh
        for tenant, found in tenant_problems.items():
            r = report.setdefault(tenant, {"ok": True, "first_bad_seq": None, "verified_events": 0, "problems": []})
            r["problems"].extend(found)
            r["ok"] = False
        report["(warehouse)"] = wh_report
    if malformed or bundle_problems:
        report["(bundle)"] = {
            "ok": False,
            "first_bad_seq": None,
            "verified_events": 0,
            "problems": bundle_problems + [{"kind": "malformed", "seq": None, "detail": d} for d in malformed],
        }
    json.dump(report, sys.stdout, indent=1)
    return 0 if all(r["ok"] for r in report.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
