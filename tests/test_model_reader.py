"""The identity KServe downloads the served model with is read-only, proven on a real SeaweedFS.

One identities file, infra/k8s/tracking/s3-identities.json(.example), is what the cluster's SeaweedFS is
started with (a Secret mounted at -s3.config) and what infra.local_stack.s3_server starts the local one
with; the model reader's keys in it are those of the Secret in infra/k8s/serving. With that Secret's keys,
against SeaweedFS: the model files can be read and listed, every write, overwrite or delete answers 403
AccessDenied (multi-delete: 200 with AccessDenied for each key, as S3 answers it) and leaves the bucket
as it was, and another bucket is out of reach; the admin still writes, so the refusals are the
identity's, not a broken server's.
"""

from __future__ import annotations

import base64
import json

import pytest

from infra.local_stack import S3_IDENTITIES, s3_server
from tests.test_manifests import K8S, containers, rendered

MODEL = "mlflow/1/models/m-1/artifacts/model.keras"
WEIGHTS = b"the champion's weights"
SCRATCH = "mlflow/by-the-reader"


def cluster_bucket(tracking: list[dict]) -> str:
    (bucket,) = [arg.split("=", 1)[1] for arg in containers(tracking)["seaweedfs"]["args"]
                 if arg.startswith("-bucket=")]
    return bucket


@pytest.fixture(scope="module")
def tracking(tmp_path_factory) -> list[dict]:
    return rendered(K8S / "tracking", tmp_path_factory.mktemp("tracking"))


@pytest.fixture(scope="module")
def reader_keys(tmp_path_factory) -> dict[str, str]:
    """AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY of the Secret KServe's storage initializer gets."""
    (secret,) = [obj for obj in rendered(K8S / "serving", tmp_path_factory.mktemp("serving"))
                 if obj["kind"] == "Secret"]
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def test_the_cluster_and_the_local_stack_start_seaweedfs_with_one_identities_file(tracking, reader_keys):
    (secret,) = [obj for obj in tracking if obj["kind"] == "Secret" and "s3.json" in obj["data"]]
    assert base64.b64decode(secret["data"]["s3.json"]) == S3_IDENTITIES.read_bytes()
    (pod,) = [obj["spec"]["template"]["spec"] for obj in tracking
              if obj["kind"] == "Deployment" and obj["metadata"]["name"] == "seaweedfs"]
    (volume,) = [volume for volume in pod["volumes"]
                 if volume.get("secret", {}).get("secretName") == secret["metadata"]["name"]]
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"]]
    assert f"-s3.config={mount['mountPath']}/s3.json" in pod["containers"][0]["args"]

    (reader,) = json.loads(S3_IDENTITIES.read_text())["identities"]
    assert reader["credentials"] == [{"accessKey": reader_keys["AWS_ACCESS_KEY_ID"],
                                      "secretKey": reader_keys["AWS_SECRET_ACCESS_KEY"]}]
    bucket = cluster_bucket(tracking)
    assert reader["actions"] == [f"Read:{bucket}", f"List:{bucket}"]
    assert reader["credentials"][0]["secretKey"].startswith("change-me")  # a placeholder, never a key


def _writes(bucket: str, upload_id: str) -> dict[str, tuple[str, dict]]:
    """Every way to write, overwrite or delete that S3 has: (client method, its arguments)."""
    model = {"Bucket": bucket, "Key": MODEL}
    public = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:*",
                                                      "Resource": f"arn:aws:s3:::{bucket}/*"}]}
    return {
        "PutObject a new key": ("put_object", {"Bucket": bucket, "Key": SCRATCH, "Body": b"x"}),
        "PutObject over the model": ("put_object", {**model, "Body": b"poisoned"}),
        "DeleteObject": ("delete_object", model),
        "CopyObject into the bucket": ("copy_object", {"Bucket": bucket, "Key": SCRATCH,
                                                       "CopySource": model}),
        "CopyObject over the model": ("copy_object", {**model, "CopySource": model,
                                                      "MetadataDirective": "REPLACE",
                                                      "Metadata": {"poisoned": "yes"}}),
        "CreateMultipartUpload": ("create_multipart_upload", {"Bucket": bucket, "Key": SCRATCH}),
        "UploadPart into the admin's upload": ("upload_part", {**model, "UploadId": upload_id,
                                                               "PartNumber": 1, "Body": b"poisoned"}),
        "CompleteMultipartUpload of the admin's upload": (
            "complete_multipart_upload", {**model, "UploadId": upload_id, "MultipartUpload": {"Parts": []}}),
        "AbortMultipartUpload of the admin's upload": ("abort_multipart_upload",
                                                       {**model, "UploadId": upload_id}),
        "PutObjectTagging": ("put_object_tagging", {**model, "Tagging": {"TagSet": [
            {"Key": "stage", "Value": "poisoned"}]}}),
        "DeleteObjectTagging": ("delete_object_tagging", model),
        "PutObjectAcl": ("put_object_acl", {**model, "ACL": "public-read-write"}),
        "PutBucketAcl": ("put_bucket_acl", {"Bucket": bucket, "ACL": "public-read-write"}),
        "PutBucketPolicy": ("put_bucket_policy", {"Bucket": bucket, "Policy": json.dumps(public)}),
        # an expiry rule deletes the model later, a suspended or enabled versioning changes what a
        # delete keeps: both are writes
        "PutBucketLifecycleConfiguration": ("put_bucket_lifecycle_configuration", {
            "Bucket": bucket, "LifecycleConfiguration": {"Rules": [{
                "ID": "expire", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 1}}]}}),
        "PutBucketVersioning": ("put_bucket_versioning", {
            "Bucket": bucket, "VersioningConfiguration": {"Status": "Enabled"}}),
        "DeleteBucket": ("delete_bucket", {"Bucket": bucket}),
        "CreateBucket": ("create_bucket", {"Bucket": "made-by-the-reader"}),
    }


WRITES = list(_writes("bucket", "upload"))


class Store:
    """A running SeaweedFS with the model file in the cluster's bucket, uploaded by the admin."""

    def __init__(self, s3_env: dict[str, str], reader_keys: dict[str, str], bucket: str):
        import boto3

        def client(keys: dict[str, str]):
            return boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                                aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
                                aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"])

        self.bucket, self.admin, self.reader = bucket, client(s3_env), client(reader_keys)
        self.admin.put_object(Bucket=bucket, Key=MODEL, Body=WEIGHTS, Tagging="stage=champion")
        self.upload_id = self.admin.create_multipart_upload(Bucket=bucket, Key=MODEL)["UploadId"]
        self.writes = _writes(bucket, self.upload_id)

    def state(self) -> dict:
        """What a write would change, as the admin sees it."""
        admin, bucket = self.admin, self.bucket
        head = admin.head_object(Bucket=bucket, Key=MODEL)
        return {"buckets": sorted(b["Name"] for b in admin.list_buckets()["Buckets"]),
                "keys": sorted(o["Key"] for o in admin.list_objects_v2(Bucket=bucket).get("Contents", [])),
                "model": admin.get_object(Bucket=bucket, Key=MODEL)["Body"].read(),
                "etag": head["ETag"], "metadata": head["Metadata"],
                "tags": admin.get_object_tagging(Bucket=bucket, Key=MODEL)["TagSet"],
                "uploads": [u["UploadId"] for u in
                            admin.list_multipart_uploads(Bucket=bucket).get("Uploads", [])],
                "policy": _policy(admin, bucket),
                "versioning": admin.get_bucket_versioning(Bucket=bucket).get("Status")}


def _policy(client, bucket: str) -> str | None:
    from botocore.exceptions import ClientError

    try:
        return client.get_bucket_policy(Bucket=bucket)["Policy"]
    except ClientError:
        return None


@pytest.fixture(scope="module")
def store(tmp_path_factory, tracking, reader_keys):
    with s3_server(tmp_path_factory.mktemp("s3"), cluster_bucket(tracking)) as s3_env:
        yield Store(s3_env, reader_keys, cluster_bucket(tracking))


@pytest.mark.slow
def test_the_reader_reads_and_lists_the_model_files(store):
    reader, bucket = store.reader, store.bucket
    assert reader.get_object(Bucket=bucket, Key=MODEL)["Body"].read() == WEIGHTS
    assert reader.head_object(Bucket=bucket, Key=MODEL)["ETag"] == store.state()["etag"]
    listed = reader.list_objects_v2(Bucket=bucket, Prefix="mlflow/1/models/m-1/")["Contents"]
    assert [o["Key"] for o in listed] == [MODEL]


@pytest.mark.slow
def test_another_bucket_is_out_of_the_readers_reach(store):
    from botocore.exceptions import ClientError

    store.admin.create_bucket(Bucket="elsewhere")
    store.admin.put_object(Bucket="elsewhere", Key="data.npz", Body=b"x")
    for call in (lambda: store.reader.get_object(Bucket="elsewhere", Key="data.npz"),
                 lambda: store.reader.list_objects_v2(Bucket="elsewhere")):
        with pytest.raises(ClientError) as refused:
            call()
        assert refused.value.response["Error"]["Code"] == "AccessDenied"


@pytest.mark.slow
@pytest.mark.parametrize("write", WRITES)
def test_every_write_of_the_reader_is_refused_and_changes_nothing(store, write):
    from botocore.exceptions import ClientError

    method, kwargs = store.writes[write]
    before = store.state()
    with pytest.raises(ClientError) as refused:
        getattr(store.reader, method)(**kwargs)
    answer = refused.value.response
    assert (answer["ResponseMetadata"]["HTTPStatusCode"], answer["Error"]["Code"]) == (403, "AccessDenied")
    assert store.state() == before


@pytest.mark.slow
def test_a_multi_delete_by_the_reader_deletes_nothing(store):
    """S3 answers DeleteObjects with 200 and an outcome per key: here AccessDenied for each."""
    before = store.state()
    answer = store.reader.delete_objects(Bucket=store.bucket, Delete={"Objects": [{"Key": MODEL}]})
    assert answer.get("Deleted", []) == []
    assert [(e["Key"], e["Code"]) for e in answer["Errors"]] == [(MODEL, "AccessDenied")]
    assert store.state() == before


@pytest.mark.slow
def test_the_admin_still_writes(store):
    admin, bucket, key = store.admin, store.bucket, "mlflow/by-the-admin"
    admin.put_object(Bucket=bucket, Key=key, Body=b"first")
    admin.put_object(Bucket=bucket, Key=key, Body=b"second")
    admin.put_object_tagging(Bucket=bucket, Key=key, Tagging={"TagSet": [{"Key": "a", "Value": "b"}]})
    admin.copy_object(Bucket=bucket, Key=f"{key}-copy", CopySource={"Bucket": bucket, "Key": key})
    assert admin.get_object(Bucket=bucket, Key=f"{key}-copy")["Body"].read() == b"second"
    admin.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": key}, {"Key": f"{key}-copy"}]})
    assert key not in store.state()["keys"]
