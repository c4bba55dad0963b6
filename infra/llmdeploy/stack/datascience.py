"""Target `datascience`: an OCI Data Science model deployment running vLLM's OpenAI-compatible server
in a container (BYOC), with access and predict logs, smoke-tested through signed /predict calls."""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pulumi
from pulumi_oci import datascience as ds
from pulumi_oci import logging as oci_logging

from ..config import StackConfig, VllmModel
from ..declared import PROJECT_ROOT
from . import gates

SERVER_PORT = 8080  # the service forwards <deployment url>/predict here, and health checks it
# vLLM's tensor-parallel workers talk through /dev/shm (its docs: --ipc=host or --shm-size); the deployment's
# container gets its size from SHM_SIZE, as Oracle's model-deployment samples set it (5g on an A10.1, 10g for
# NIM on an A10.2).
SHM_SIZE_TP = "10g"
# The deployment's only handle on a Hugging Face token: a Vault secret's OCID, read by the image itself.
HF_TOKEN_SECRET_ENV = "HF_TOKEN_SECRET_OCID"
PREDICT_ROUTE = "/v1/chat/completions"
HEALTH_ROUTE = "/health"

P = "ModelDeploymentModelDeploymentConfigurationDetails"
ScalingPolicy = ds.ModelDeploymentModelDeploymentConfigurationDetailsModelConfigurationDetailsScalingPolicyArgs


@dataclass(frozen=True)
class DataScienceArgs:
    """What a DataScienceEndpoint is built from: the project, the model's artifact and the deployment."""

    compartment_id: str
    stack: str  # names the project's description and the artifact's folder
    model_name: str
    artifact_readme: str  # what the artifact records: the stack, the model and the name it is served as
    shape_name: str
    flex: tuple[float, float] | None  # a Flex shape's OCPUs and memory (GB)
    bandwidth_mbps: int
    scaling_policy: ScalingPolicy
    container_image: str
    cmds: list[str]  # vllm_arguments
    environment: dict[str, str]  # environment_variables: never a secret

    @classmethod
    def from_config(cls, cfg: StackConfig) -> DataScienceArgs:
        assert isinstance(cfg.model, VllmModel)
        return cls(compartment_id=cfg.compartment_id, stack=cfg.stack, model_name=cfg.model_name,
                   artifact_readme=f"llmdeploy stack {cfg.stack}: vLLM serving {cfg.model.hf_id} as {cfg.model_name}\n",
                   shape_name=cfg.shape.name,
                   flex=(float(cfg.shape_ocpus), float(cfg.shape_memory_gbs)) if cfg.shape.flex else None,
                   bandwidth_mbps=cfg.datascience.bandwidth_mbps, scaling_policy=scaling_policy(cfg),
                   container_image=cfg.datascience.container_image, cmds=vllm_arguments(cfg),
                   environment=environment_variables(cfg))


def model_artifact(readme: str, out_dir: Path) -> Path:
    """The model's artifact. A BYOC container needs no files from it (vLLM fetches its weights), so it
    only records what is served. Built byte-for-byte the same each run so the model is not replaced."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model-artifact.zip"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo("README.txt", date_time=(2020, 1, 1, 0, 0, 0))
        archive.writestr(info, readme)
    if not path.exists() or path.read_bytes() != buffer.getvalue():
        path.write_bytes(buffer.getvalue())
    return path


def vllm_arguments(cfg: StackConfig) -> list[str]:
    """The container's CMD: vLLM's server arguments (the image's ENTRYPOINT starts the server)."""
    assert isinstance(cfg.model, VllmModel)
    return ["--model", cfg.model.hf_id, "--served-model-name", cfg.model_name, "--host", "0.0.0.0",
            "--port", str(SERVER_PORT), "--dtype", cfg.model.dtype, "--max-model-len", str(cfg.model.max_model_len),
            "--tensor-parallel-size", str(cfg.tensor_parallel_size)]


def scaling_policy(cfg: StackConfig) -> ScalingPolicy:
    sizing = cfg.datascience
    if not sizing.autoscaling:
        return ds.ModelDeploymentModelDeploymentConfigurationDetailsModelConfigurationDetailsScalingPolicyArgs(
            policy_type="FIXED_SIZE", instance_count=sizing.instance_count)
    rule = ds.ModelDeploymentModelDeploymentConfigurationDetailsModelConfigurationDetailsScalingPolicyAutoScalingPolicyRuleArgs(
        metric_expression_rule_type="PREDEFINED_EXPRESSION", metric_type="CPU_UTILIZATION",
        scale_in_configuration=ds.ModelDeploymentModelDeploymentConfigurationDetailsModelConfigurationDetailsScalingPolicyAutoScalingPolicyRuleScaleInConfigurationArgs(
            scaling_configuration_type="THRESHOLD", threshold=20, instance_count_adjustment=1, pending_duration="PT5M"),
        scale_out_configuration=ds.ModelDeploymentModelDeploymentConfigurationDetailsModelConfigurationDetailsScalingPolicyAutoScalingPolicyRuleScaleOutConfigurationArgs(
            scaling_configuration_type="THRESHOLD", threshold=70, instance_count_adjustment=1, pending_duration="PT3M"))
    return ds.ModelDeploymentModelDeploymentConfigurationDetailsModelConfigurationDetailsScalingPolicyArgs(
        policy_type="AUTOSCALING", is_enabled=True, cool_down_in_seconds=600,
        auto_scaling_policies=[ds.ModelDeploymentModelDeploymentConfigurationDetailsModelConfigurationDetailsScalingPolicyAutoScalingPolicyArgs(
            auto_scaling_policy_type="THRESHOLD", initial_instance_count=sizing.instance_count,
            minimum_instance_count=sizing.instance_count, maximum_instance_count=sizing.max_instance_count,
            rules=[rule])])


def environment_variables(cfg: StackConfig) -> dict[str, str]:
    """The container's environment. Never a secret: the deployment shows these to anyone who can read it."""
    env = {"MODEL_DEPLOY_PREDICT_ENDPOINT": PREDICT_ROUTE, "MODEL_DEPLOY_HEALTH_ENDPOINT": HEALTH_ROUTE,
           "MODEL_DEPLOY_ENABLE_STREAMING": "true", "HF_ENDPOINT": cfg.sources.hf_endpoint}
    if cfg.tensor_parallel_size > 1:
        env["SHM_SIZE"] = SHM_SIZE_TP
    if cfg.datascience.hf_token_secret_id:
        env[HF_TOKEN_SECRET_ENV] = cfg.datascience.hf_token_secret_id
    return env


def deployment_configuration(args: DataScienceArgs, model_id: pulumi.Input[str]) -> ds.ModelDeploymentModelDeploymentConfigurationDetailsArgs:
    flex = ds.ModelDeploymentModelDeploymentConfigurationDetailsModelConfigurationDetailsInstanceConfigurationModelDeploymentInstanceShapeConfigDetailsArgs(
        ocpus=args.flex[0], memory_in_gbs=args.flex[1]) if args.flex else None
    return ds.ModelDeploymentModelDeploymentConfigurationDetailsArgs(
        deployment_type="SINGLE_MODEL",
        model_configuration_details=ds.ModelDeploymentModelDeploymentConfigurationDetailsModelConfigurationDetailsArgs(
            model_id=model_id, bandwidth_mbps=args.bandwidth_mbps, scaling_policy=args.scaling_policy,
            instance_configuration=ds.ModelDeploymentModelDeploymentConfigurationDetailsModelConfigurationDetailsInstanceConfigurationArgs(
                instance_shape_name=args.shape_name, model_deployment_instance_shape_config_details=flex)),
        environment_configuration_details=ds.ModelDeploymentModelDeploymentConfigurationDetailsEnvironmentConfigurationDetailsArgs(
            environment_configuration_type="OCIR_CONTAINER", image=args.container_image,
            cmds=args.cmds, server_port=SERVER_PORT, health_check_port=SERVER_PORT,
            environment_variables=args.environment))


class DataScienceEndpoint(pulumi.ComponentResource):
    endpoint_url: pulumi.Output[str]
    smoke_report: pulumi.Output[str]

    def __init__(self, name: str, args: DataScienceArgs, tags: dict[str, str],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llmdeploy:datascience:DataScienceEndpoint", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        compartment = args.compartment_id
        project = ds.Project(f"{name}-project", compartment_id=compartment, display_name=f"{name}-project",
                             description=f"llmdeploy stack {args.stack}", freeform_tags=tags, opts=child)
        artifact = model_artifact(args.artifact_readme, PROJECT_ROOT / "build" / args.stack)
        model = ds.Model(f"{name}-model", compartment_id=compartment, project_id=project.id,
                         model_artifact=str(artifact), artifact_content_length=str(artifact.stat().st_size),
                         artifact_content_disposition="attachment; filename=model-artifact.zip",
                         display_name=f"{name}-model", freeform_tags=tags, opts=child)
        log_group = oci_logging.LogGroup(f"{name}-logs", compartment_id=compartment, display_name=f"{name}-logs",
                                         freeform_tags=tags, opts=child)
        logs = {kind: oci_logging.Log(f"{name}-{kind}-log", display_name=f"{name}-{kind}", log_group_id=log_group.id,
                                      log_type="CUSTOM", is_enabled=True, retention_duration=30, freeform_tags=tags,
                                      opts=child) for kind in ("access", "predict")}
        deployment = ds.ModelDeployment(
            f"{name}-deployment", compartment_id=compartment, project_id=project.id,
            display_name=f"{name}-deployment", freeform_tags=tags, opts=child,
            model_deployment_configuration_details=deployment_configuration(args, model.id),
            category_log_details=ds.ModelDeploymentCategoryLogDetailsArgs(
                access=ds.ModelDeploymentCategoryLogDetailsAccessArgs(log_group_id=log_group.id,
                                                                      log_id=logs["access"].id),
                predict=ds.ModelDeploymentCategoryLogDetailsPredictArgs(log_group_id=log_group.id,
                                                                        log_id=logs["predict"].id)))
        self.endpoint_url = deployment.model_deployment_url
        check = gates.smoke(name, self.endpoint_url, "oci-ds", args.model_name, {}, [deployment], self)
        self.smoke_report = check.stdout
        self.register_outputs({"endpointUrl": self.endpoint_url})
