"""Builds the conformance vectors of docs/chain-format.md from the `valid` bundle.

    python3 tests/vectors/make.py      # rewrites every vector directory but `valid`

`valid` is an export of a small warehouse signed with the seed 07…07 (public key in
`trusted.pub`); regenerate it with:

    CUSTODY_SIGNING_KEY=0707…07 CUSTODY__PIPELINE__BATCH_SIZE=15 custody demo --events 40 \\
        --tenants 2 --seed 11 --warehouse W && custody export --warehouse W --out tests/vectors/valid

(`valid/registry.json`, the sealed registry, is copied into every vector but those that
change or drop it.)

Each vector is a bundle; `expected.json` gives, per vector, whether it verifies and one problem
kind both verifiers must report. Both `custody verify --export` and tests/py/verify_bundle.py
must agree with it (tests/tests/conformance.rs).
"""

import json
import os
import random
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
VALID = os.path.join(HERE, "valid")


def lines(name):
    with open(os.path.join(VALID, name), encoding="utf-8") as f:
        return [l.rstrip("\n") for l in f if l.strip()]


def write(vector, events, checkpoints, registry):
    d = os.path.join(HERE, vector)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(os.path.join(d, "keys"))
    with open(os.path.join(d, "events.ndjson"), "w", encoding="utf-8") as f:
        f.write("".join(l + "\n" for l in events))
    with open(os.path.join(d, "checkpoints.ndjson"), "w", encoding="utf-8") as f:
        f.write("".join(l + "\n" for l in checkpoints))
    if registry is not None:
        with open(os.path.join(d, "registry.json"), "w", encoding="utf-8") as f:
            json.dump(registry, f, indent=1)


def main():
    ev, cp = lines("events.ndjson"), lines("checkpoints.ndjson")
    with open(os.path.join(VALID, "registry.json"), encoding="utf-8") as f:
        reg = json.load(f)
    expected = {"valid": {"ok": True, "kind": None}}
    keep = object()

    def vector(name, ok, kind, events=None, checkpoints=None, registry=keep):
        write(name, ev if events is None else events, cp if checkpoints is None else checkpoints,
              reg if registry is keep else registry)
        expected[name] = {"ok": ok, "kind": kind}

    # Valid: the same rows in another order, with blank lines, with other JSON escapes.
    shuffled = ev[:]
    random.Random(7).shuffle(shuffled)
    vector("valid-shuffled", True, None, events=shuffled)
    vector("valid-blank-lines", True, None, events=[x for l in ev for x in (l, "")])
    row = json.loads(ev[3])
    escaped = ev[:]
    escaped[3] = json.dumps(row, ensure_ascii=True).replace('"agent_id": "a', '"agent_id": "\\u0061', 1)
    vector("valid-escaped-strings", True, None, events=escaped)

    def edit(i, f, rows=None):
        rows = list(ev if rows is None else rows)
        rows[i] = f(rows[i])
        return rows

    # Malformed rows: left out, reported as `malformed`.
    vector("uppercase-hash", False, "malformed",
           events=edit(5, lambda l: l.replace(json.loads(l)["hash"], json.loads(l)["hash"].upper())))
    vector("uppercase-checkpoint-root", False, "malformed",
           checkpoints=edit(0, lambda l: l.replace(json.loads(l)["root"], json.loads(l)["root"].upper()), cp))
    null_user = next(i for i, l in enumerate(ev) if json.loads(l)["user_id"] is None
                     or json.loads(l)["parent_event_id"] is None)
    def omit_null(l):
        r = json.loads(l)
        key = "user_id" if r["user_id"] is None else "parent_event_id"
        del r[key]
        return json.dumps(r, ensure_ascii=False, separators=(",", ":"))
    vector("omitted-null-member", False, "malformed", events=edit(null_user, omit_null))
    vector("duplicate-member-same-value", False, "malformed",
           events=edit(4, lambda l: l[:-1] + ',"seq":' + str(json.loads(l)["seq"]) + "}"))
    vector("duplicate-tenant-id", False, "malformed",
           events=edit(4, lambda l: l[:-1] + ',"tenant_id":"someone-else"}'))
    vector("unknown-member", False, "malformed", events=edit(6, lambda l: l[:-1] + ',"note":"x"}'))
    vector("seq-as-string", False, "malformed",
           events=edit(2, lambda l: l.replace('"seq":%d' % json.loads(l)["seq"], '"seq":"%d"' % json.loads(l)["seq"])))
    vector("seq-as-float", False, "malformed",
           events=edit(2, lambda l: l.replace('"seq":%d' % json.loads(l)["seq"], '"seq":%d.0' % json.loads(l)["seq"])))
    vector("negative-epoch", False, "malformed",
           checkpoints=edit(1, lambda l: l.replace('"epoch":%d' % json.loads(l)["epoch"], '"epoch":-1'), cp))
    vector("not-json", False, "malformed", events=ev[:7] + ["{not json"] + ev[7:])
    # Well formed, but wrong.
    def modify_payload(l):
        r = json.loads(l)
        r["payload"] = r["payload"].replace('"', '" ', 1) if False else r["payload"] + " "
        return json.dumps(r, ensure_ascii=False, separators=(",", ":"))
    vector("payload-modified", False, "modified", events=edit(8, modify_payload))
    vector("checkpoint-removed", False, "checkpoint_chain", checkpoints=cp[:1] + cp[2:])
    # The sealed registry (registry.json) pins every tenant's latest checkpoint.
    vector("registry-missing", False, "truncated", registry=None)
    moved = json.loads(json.dumps(reg))
    moved["tenants"][0]["index"] += 1
    vector("registry-entry-moved", False, "bad_seal", registry=moved)
    # One tenant cut back consistently: its last checkpoint and the events it covered.
    first = json.loads(ev[0])["tenant_id"]
    mine = [json.loads(l) for l in cp if json.loads(l)["tenant_id"] == first]
    newest = max(mine, key=lambda c: c["epoch"])
    before = max((c["tree_size"] for c in mine if c["epoch"] < newest["epoch"]), default=0)
    vector("tail-cut-consistently", False, "truncated",
           events=[l for l in ev if json.loads(l)["tenant_id"] != first or json.loads(l)["seq"] < before],
           checkpoints=[l for l in cp if not (json.loads(l)["tenant_id"] == first
                                               and json.loads(l)["epoch"] == newest["epoch"])])
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
