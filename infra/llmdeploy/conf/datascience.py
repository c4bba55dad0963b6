"""The datascience section of Pulumi.yaml: the OCI Data Science model deployment's image, instances and the
Vault secret that holds the Hugging Face token."""
from __future__ import annotations

import re
from dataclasses import dataclass

from .deployment import DeploymentKind
from .reader import Problem, Reader, Secret, set_cmd


@dataclass(frozen=True)
class DataScience:
    container_image: str
    instance_count: int
    max_instance_count: int
    bandwidth_mbps: int
    hf_token_secret_id: str  # an OCI Vault secret's OCID, not the token

    @property
    def autoscaling(self) -> bool:
        return self.max_instance_count > self.instance_count


def parse_datascience(r: Reader, kind: DeploymentKind) -> DataScience:
    image = r.str("dsContainerImage")
    if kind.model_deployment and not re.fullmatch(r"[a-z0-9.-]+\.ocir\.io/\S+:\S+", image):
        r.bad("dsContainerImage", image, "an OCIR image with a tag (<region>.ocir.io/<namespace>/<repo>:<tag>) "
              "for the datascience target", "iad.ocir.io/mytenancy/vllm-openai:v0.33.0-cu129")
    count = r.int("dsInstanceCount", 1, 100)
    most = r.int("dsMaxInstanceCount", 0, 100)
    if most and most < count:
        r.bad("dsMaxInstanceCount", most, f"0 (fixed size) or at least dsInstanceCount ({count})", str(count))
    secret_id = r.str("dsHfTokenSecretId")
    if secret_id and not re.fullmatch(r"ocid1\.vaultsecret\.[a-z0-9-]+\.[a-z0-9-]*\.[a-z0-9]+", secret_id):
        # Not shown: what is here by mistake may be the token itself.
        r.problems.append(Problem("dsHfTokenSecretId", Secret(secret_id), "an OCI Vault secret OCID "
                                  "(ocid1.vaultsecret.oc1...) or empty, not the token itself",
                                  set_cmd("dsHfTokenSecretId", "ocid1.vaultsecret.oc1.iad.xxxx")))
    # A model deployment's environment variables are readable by anyone who can read the deployment.
    if kind.model_deployment and r.secret("hfToken"):
        r.problems.append(Problem(
            "hfToken", r.secret("hfToken"), "no hfToken on the datascience target (a model deployment has no secret "
            "channel: its environment variables are shown to anyone who can read the deployment)",
            "pulumi config rm hfToken; store the token in OCI Vault and pulumi config set dsHfTokenSecretId "
            "ocid1.vaultsecret.oc1...; the image reads it with its resource principal (README: Data Science and "
            "gated models)"))
    return DataScience(image, count, most, r.int("dsBandwidthMbps", 10, 8000), secret_id)
