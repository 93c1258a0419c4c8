"""A real S3-compatible HTTP server for the tests and the files bench: moto's server mode (``python -m moto.server``,
from PyPI), started as a child process on a free loopback port and stopped afterwards.

What it emulates, and what not (say so in results): buckets, PUT/HEAD/GET objects with user metadata, multipart
uploads (create, parts, complete, list, abort), the S3 error codes (NoSuchBucket/404, AccessDenied/403,
InvalidAccessKeyId, SignatureDoesNotMatch) and, with ``auth=True``, IAM-checked credentials and policies. It keeps
objects in its own memory (its RSS grows with what is stored, not ours); it does not emulate latency, bandwidth
limits, throttling (SlowDown), eventual consistency or lifecycle rules.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import boto3

REGION = "us-east-1"
# With auth=True the first SETUP_ACTIONS requests are not checked (moto's INITIAL_NO_AUTH_ACTION_COUNT): exactly the
# ones `auth_users` makes to create the bucket, the two users, their keys and policies.
SETUP_ACTIONS = 7


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(auth: bool = False, log=None):
    """Yield the endpoint URL of a fresh moto server (stopped on exit)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    if auth:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(SETUP_ACTIONS)
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=log or subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_answering(proc, url + "/moto-api/data.json", "moto server")
        yield url
    finally:
        stop(proc)


def wait_answering(proc: subprocess.Popen, url: str, what: str, timeout: float = 60.0) -> None:
    """Until `url` gets an HTTP answer, whatever its status: the server child `proc` is up. RuntimeError naming
    `what` when the child exits first, or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except urllib.error.HTTPError:
            return  # it answers (an error status, e.g. 403 without a signature): up
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start on {url} (exit {proc.poll()})") from None
            time.sleep(0.1)


def stop(proc: subprocess.Popen) -> None:
    """Terminate a server child, killing it after 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def client(url: str, key: str = "testing", secret: str = "testing"):
    """A plain boto3 S3 client of that server (what a test or a baseline uses directly)."""
    return boto3.client("s3", endpoint_url=url, region_name=REGION, aws_access_key_id=key,
                        aws_secret_access_key=secret)


def auth_users(url: str, bucket: str) -> dict[str, tuple[str, str]]:
    """On a server started with auth=True: the bucket, a user who may do everything on S3 and one who may only read;
    {"writer": (key, secret), "reader": (key, secret)}. Exactly SETUP_ACTIONS requests."""
    client(url).create_bucket(Bucket=bucket)
    iam = boto3.client("iam", endpoint_url=url, region_name=REGION, aws_access_key_id="testing",
                       aws_secret_access_key="testing")
    out = {}
    # real S3 authorizes HEAD bucket and ListObjects(V2) as s3:ListBucket; moto (5.2) asks for its own action names
    reads = ["s3:GetObject", "s3:ListBucket", "s3:HeadBucket", "s3:ListObjects", "s3:ListObjectsV2"]
    for name, actions in (("writer", ["s3:*"]), ("reader", reads)):
        iam.create_user(UserName=name)
        key = iam.create_access_key(UserName=name)["AccessKey"]
        iam.put_user_policy(UserName=name, PolicyName="s3", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}))
        out[name] = (key["AccessKeyId"], key["SecretAccessKey"])
    return out
