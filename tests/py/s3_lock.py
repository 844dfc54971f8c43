"""S3 Object Lock from the bucket owner's side (boto3), for tests/tests/object_storage.rs.

    s3_lock.py ENDPOINT create BUCKET DAYS
        a versioned bucket with Object Lock and a default COMPLIANCE retention of DAYS days
    s3_lock.py ENDPOINT probe BUCKET PREFIX
        for every version of every object under PREFIX: its lock, and whether storage refuses
        to delete that version (DeleteObject with its VersionId, the only delete that removes
        bytes on a versioned bucket); prints one JSON report

Credentials come from the AWS environment.
"""

import json
import sys

import boto3
from botocore.exceptions import ClientError


def client(endpoint):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def create(s3, bucket, days):
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    s3.put_object_lock_configuration(
        Bucket=bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": int(days)}},
        },
    )


def probe(s3, bucket, prefix):
    versions, markers = [], []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        versions += page.get("Versions", [])
        markers += page.get("DeleteMarkers", [])
    report = {"versions": [], "delete_markers": len(markers)}
    for v in versions:
        key, version = v["Key"], v["VersionId"]
        head = s3.head_object(Bucket=bucket, Key=key, VersionId=version)
        try:
            s3.delete_object(Bucket=bucket, Key=key, VersionId=version)
            refused = None
        except ClientError as e:
            refused = e.response["Error"]["Code"]
        still_there = True
        try:
            s3.head_object(Bucket=bucket, Key=key, VersionId=version)
        except ClientError:
            still_there = False
        until = head.get("ObjectLockRetainUntilDate")
        report["versions"].append(
            {
                "key": key,
                "latest": v["IsLatest"],
                "mode": head.get("ObjectLockMode"),
                "retain_until": until.isoformat() if until else None,
                "delete_refused": refused,
                "still_there": still_there,
            }
        )
    json.dump(report, sys.stdout)


def main():
    endpoint, command, *args = sys.argv[1:]
    s3 = client(endpoint)
    if command == "create":
        create(s3, *args)
    elif command == "probe":
        probe(s3, *args)
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
