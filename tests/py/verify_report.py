"""An independent verifier for Custody's signed reports, written from the format in
reports/src/document.rs (custody-signed-report/1), as a regulator would check one offline.

Usage: verify_report.py FILE --trusted-key HEX_OR_FILE

FILE is the signed JSON (`reports/NAME?format=signed`) or the HTML page (`format=html`),
which carries the same document in <script id="custody-signed-report">. Checks the report's
SHA-256 and Ed25519 signature (over b"custody-report/v1\\n" + the report text), and the
signature of the checkpoint the report cites. Prints a JSON summary; exits 1 on any failure.
Standard library plus PyNaCl.
"""

import argparse
import hashlib
import json
import os
import sys

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from verify_bundle import checkpoint_message, key_id  # noqa: E402

MARK = 'id="custody-signed-report">'


def document(text: str) -> dict:
    at = text.find(MARK)
    if at >= 0:
        start = at + len(MARK)
        text = text[start:text.index("</script>", start)]
    return json.loads(text)


def verify(doc: dict, key: VerifyKey) -> tuple[dict, list[str]]:
    problems = []
    if doc.get("format") != "custody-signed-report/1" or doc.get("algorithm") != "ed25519":
        return {}, [f"unknown format {doc.get('format')!r}/{doc.get('algorithm')!r}"]
    if doc["key_id"] != key_id(bytes(key)):
        problems.append(f"signed by key {doc['key_id']}, not the trusted one")
    text = doc["report"].encode("utf-8")
    if hashlib.sha256(text).hexdigest() != doc["report_sha256"]:
        problems.append("report_sha256 does not match the report")
    try:
        key.verify(b"custody-report/v1\n" + text, bytes.fromhex(doc["signature"]))
    except (BadSignatureError, ValueError):
        problems.append("the report's signature does not verify")
    report = json.loads(text)
    scope = report.get("scope") or {}
    cp = scope.get("checkpoint")
    if cp is not None:
        try:
            key.verify(checkpoint_message(cp), bytes.fromhex(cp["signature"]))
        except (BadSignatureError, ValueError):
            problems.append("the cited checkpoint's signature does not verify")
        if cp["tenant_id"] != report["tenant_id"] or cp["tree_size"] != scope["as_of_tree_size"]:
            problems.append("the cited checkpoint is not the report's")
    return report, problems


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--trusted-key", required=True)
    a = ap.parse_args()
    k = a.trusted_key
    if os.path.exists(k):
        k = open(k).read().strip()
    key = VerifyKey(bytes.fromhex(k))
    report, problems = verify(document(open(a.file, encoding="utf-8").read()), key)
    print(json.dumps({
        "ok": not problems,
        "problems": problems,
        "report": report.get("report"),
        "tenant_id": report.get("tenant_id"),
        "scope": {k: v for k, v in (report.get("scope") or {}).items() if k != "checkpoint"},
    }))
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
