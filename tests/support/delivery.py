"""What a readiness gate sends on stdin (bundle.payload): the provisioning bundle, then the secrets' tar archive,
each base64 on a line of its own."""
from __future__ import annotations

import base64
import gzip
import hashlib
import io
import tarfile
from typing import Any

from llmdeploy.vmpaths import BUNDLE_DIGEST

from .pulumi_mocks import unwrap


def split_payload(stdin: str) -> tuple[bytes, bytes]:
    """(the bundle's tar.gz, the secrets' tar) of a gate's stdin."""
    bundle, secrets = stdin.split("\n")[:2]
    return base64.b64decode(bundle), base64.b64decode(secrets)


def secrets_tar(stdin: str) -> tarfile.TarFile:
    return tarfile.open(fileobj=io.BytesIO(split_payload(stdin)[1]))


def bundle_files(stdin: str) -> dict[str, str]:
    """The bundle's files by their path on the VM."""
    with tarfile.open(fileobj=io.BytesIO(split_payload(stdin)[0]), mode="r:gz") as tar:
        return {"/" + m.name: tar.extractfile(m).read().decode()  # type: ignore[union-attr]
                for m in tar.getmembers()}


def gate_of(instance_name: str) -> str:
    """The readiness gate's name for an instance's name: <x>-instance and <x>-head → <x>-readiness (the VM, a
    workshop attendee's, a Ray head), <x>-worker-N / <x>-replica-N → <x>-worker-N-readiness / ...-readiness."""
    for suffix in ("-instance", "-head"):
        if instance_name.endswith(suffix):
            return instance_name[:-len(suffix)] + "-readiness"
    return instance_name + "-readiness"


def provisioned(run: Any, instance: Any) -> str:
    """Everything an instance gets as text: its user-data (the bootstrap), then each file of the bundle its gate
    delivers, whose digest must be the one the user-data carries."""
    user_data = gzip.decompress(base64.b64decode(unwrap(instance.inputs)["metadata"]["user_data"])).decode()
    gate = next(r for r in run.of_type("command:remote:Command") if r.name == gate_of(instance.name))
    stdin = unwrap(gate.inputs["stdin"])
    digest = hashlib.sha256(split_payload(stdin)[0]).hexdigest()
    assert f"{BUNDLE_DIGEST}\n" in user_data and digest in user_data, f"{gate.name} delivers another bundle"
    return user_data + "".join(f"\n# {path}\n{content}" for path, content in bundle_files(stdin).items())
