#!/usr/bin/env python3
"""Probe an S3-compatible test server for what vmshot's uploads need (research aid).

Creates a bucket, starts a multipart upload, uploads parts (with SHA-256
part checksums), lists them with ListParts (the "resume after restart" path:
which parts does the server already hold?), completes, reads the object back
and compares its SHA-256, then aborts a second upload. Prints one line a step.

    python tests/sdk/s3_multipart_probe.py http://127.0.0.1:8014 AK SK [--part-kib 5120] [--parts 3]

Needs boto3 (tests/sdk/requirements.txt pins one).
"""
import argparse
import hashlib
import os
import sys
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("endpoint")
    ap.add_argument("ak")
    ap.add_argument("sk")
    ap.add_argument("--bucket", default="vmshot-probe")
    ap.add_argument("--part-kib", type=int, default=5 * 1024)
    ap.add_argument("--parts", type=int, default=3)
    ap.add_argument("--checksum", action="store_true", help="send x-amz-checksum-sha256 per part")
    a = ap.parse_args()

    s3 = boto3.client("s3", endpoint_url=a.endpoint, aws_access_key_id=a.ak,
                      aws_secret_access_key=a.sk, region_name="us-east-1",
                      config=Config(s3={"addressing_style": "path"},
                                    request_checksum_calculation="when_required",
                                    response_checksum_validation="when_required"))
    t0 = time.monotonic()
    try:
        s3.create_bucket(Bucket=a.bucket)
    except ClientError as e:
        if e.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    print("bucket ok")

    key = "rec/probe.bin"
    chunks = [os.urandom(a.part_kib * 1024) for _ in range(a.parts - 1)] + [b"tail" * 100]
    whole = b"".join(chunks)
    extra = {"ChecksumAlgorithm": "SHA256"} if a.checksum else {}
    up = s3.create_multipart_upload(Bucket=a.bucket, Key=key, **extra)
    uid = up["UploadId"]
    print("create_multipart_upload: UploadId=%s" % uid)

    etags = []
    for i, c in enumerate(chunks, 1):
        kw = dict(Bucket=a.bucket, Key=key, UploadId=uid, PartNumber=i, Body=c)
        if a.checksum:
            import base64
            kw["ChecksumSHA256"] = base64.b64encode(hashlib.sha256(c).digest()).decode()
        r = s3.upload_part(**kw)
        etags.append(r["ETag"])
        print("upload_part %d (%d bytes): ETag=%s%s" % (
            i, len(c), r["ETag"], " ChecksumSHA256=%s" % r.get("ChecksumSHA256") if a.checksum else ""))

    # the resume path: after a restart, ask the server which parts it holds
    lp = s3.list_parts(Bucket=a.bucket, Key=key, UploadId=uid)
    print("list_parts: %s" % [(p["PartNumber"], p["Size"], p.get("ETag", "<no ETag>")) for p in lp.get("Parts", [])])
    # re-uploading a part number replaces it (what a resume does for a part in doubt)
    r = s3.upload_part(Bucket=a.bucket, Key=key, UploadId=uid, PartNumber=len(chunks), Body=chunks[-1])
    print("re-upload last part: ETag=%s (same as before: %s)" % (r["ETag"], r["ETag"] == etags[-1]))
    try:
        mpu = s3.list_multipart_uploads(Bucket=a.bucket)
        print("list_multipart_uploads: %s" % [u["UploadId"] for u in mpu.get("Uploads", [])])
    except ClientError as e:
        print("list_multipart_uploads: %s" % e.response["Error"]["Code"])

    parts = [{"PartNumber": i, "ETag": e} for i, e in enumerate(etags, 1)]
    if a.checksum:
        import base64
        for p, c in zip(parts, chunks):
            p["ChecksumSHA256"] = base64.b64encode(hashlib.sha256(c).digest()).decode()
    done = s3.complete_multipart_upload(Bucket=a.bucket, Key=key, UploadId=uid,
                                        MultipartUpload={"Parts": parts})
    print("complete: ETag=%s" % done["ETag"])

    got = s3.get_object(Bucket=a.bucket, Key=key)["Body"].read()
    ok = hashlib.sha256(got).hexdigest() == hashlib.sha256(whole).hexdigest()
    print("get_object: %d bytes, sha256 matches: %s" % (len(got), ok))
    rng = s3.get_object(Bucket=a.bucket, Key=key, Range="bytes=0-9")
    print("ranged get: %s %d bytes" % (rng["ResponseMetadata"]["HTTPStatusCode"], len(rng["Body"].read())))

    up2 = s3.create_multipart_upload(Bucket=a.bucket, Key="rec/aborted.bin")
    s3.abort_multipart_upload(Bucket=a.bucket, Key="rec/aborted.bin", UploadId=up2["UploadId"])
    try:
        s3.list_parts(Bucket=a.bucket, Key="rec/aborted.bin", UploadId=up2["UploadId"])
        print("abort: list_parts still answers (server keeps aborted uploads)")
    except ClientError as e:
        print("abort: list_parts after abort -> %s" % e.response["Error"]["Code"])

    # a wrong secret must be refused (auth really checked)
    bad = boto3.client("s3", endpoint_url=a.endpoint, aws_access_key_id=a.ak,
                       aws_secret_access_key=a.sk + "x", region_name="us-east-1",
                       config=Config(s3={"addressing_style": "path"}))
    try:
        bad.head_object(Bucket=a.bucket, Key=key)
        print("wrong secret: ACCEPTED (server does not check signatures)")
    except ClientError as e:
        print("wrong secret: refused %s" % e.response["Error"]["Code"])
    print("total %.2f s" % (time.monotonic() - t0))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
