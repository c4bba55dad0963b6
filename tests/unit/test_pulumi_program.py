"""The Pulumi program (infra/__main__.py) run whole under Pulumi's mocks, as `pulumi up` would run it,
for every example stack: resources and their key inputs, ports, user-data, tags, the
instance -> readiness -> smoke chain, secrets, and bad config failing before any resource."""
import base64
import gzip
import json
from typing import Any

import pulumi_oci
import pytest
from test_image_lookup import expected_image

from llmdeploy import nvidia
from llmdeploy.config import parse
from llmdeploy.render import render
from llmdeploy.stack import output_names as out
from llmdeploy.stack.gates import SMOKE_SCRIPT, readiness_script
from llmdeploy.stack_yaml import read_stack
from support.delivery import bundle_files, secrets_tar, split_payload
from support.project import ROOT, SSH_KEY
from support.pulumi_mocks import MD_URL, PUBLIC_IP, Registered, Run, is_secret, run_program, unwrap
from support.pulumi_program import MAIN, PRIVATE_KEY, example_run, run_stack, vm_run

ENGINE_PORTS = {11434, 9997, 8000, 8080}


def taggable(resource: Registered) -> bool:
    """Whether the SDK's class for this type token has freeform_tags (oci:Core/vcn:Vcn -> core.Vcn)."""
    package, rest = resource.type.split(":", 1)
    if package != "oci":
        return False
    module, cls = rest.split("/", 1)[0].lower(), rest.rsplit(":", 1)[1]
    return hasattr(getattr(getattr(pulumi_oci, module), cls), "freeform_tags")


def test_the_vm_target_creates_the_whole_stack(vm_run: tuple[str, Run, dict[str, Any]]) -> None:
    stack, run, values = vm_run
    types = [r.type for r in run.resources]
    for expected in ("oci:Core/vcn:Vcn", "oci:Core/subnet:Subnet", "oci:Core/internetGateway:InternetGateway",
                     "oci:Core/routeTable:RouteTable", "oci:Core/networkSecurityGroup:NetworkSecurityGroup",
                     "oci:Core/instance:Instance", "oci:Core/publicIp:PublicIp", "command:remote:Command",
                     "command:local:Command"):
        assert types.count(expected) == 1, expected
    assert types.count("oci:Dns/rrset:Rrset") == (1 if values.get("dnsZone") else 0)
    # One per API key, and Open WebUI's secret key (chatUi open-webui).
    webui = 1 if values.get("chatUi") == "open-webui" else 0
    assert types.count("random:index/randomPassword:RandomPassword") == len(values["apiKeys"]) + webui
    subnet = unwrap(run.one("oci:Core/subnet:Subnet").inputs)
    assert "availabilityDomain" not in subnet  # regional
    ip = unwrap(run.one("oci:Core/publicIp:PublicIp").inputs)
    assert ip["lifetime"] == "RESERVED" and ip["privateIpId"] == "ocid1.privateip.oc1..primary"


def test_instance_inputs(vm_run: tuple[str, Run, dict[str, Any]]) -> None:
    stack, run, values = vm_run
    cfg = parse(values, stack=stack)
    instance = unwrap(run.one("oci:Core/instance:Instance").inputs)
    assert instance["shape"] == cfg.shape.name
    assert instance["availabilityDomain"] == "Uocm:EU-FRANKFURT-1-AD-1"
    assert instance["sourceDetails"] == {"sourceType": "image", "sourceId": expected_image(cfg.os, cfg.shape.name),
                                         "bootVolumeSizeInGbs": str(cfg.boot_volume_gbs)}
    assert instance["createVnicDetails"]["assignPublicIp"] == "false"
    assert instance["createVnicDetails"]["nsgIds"] == ["llmdeploy-" + stack + "-net-nsg-id"]
    assert ("shapeConfig" in instance) == cfg.shape.flex
    if cfg.shape.flex:
        assert instance["shapeConfig"] == {"ocpus": cfg.shape_ocpus, "memoryInGbs": cfg.shape_memory_gbs}
    # The metadata is the bootstrap user-data alone (the admin user's keys are in it; a metadata ssh_authorized_keys
    # would only reach the image's default user, which the user-data does not create).
    assert set(instance["metadata"]) == {"user_data"}
    user_data = gzip.decompress(base64.b64decode(instance["metadata"]["user_data"])).decode()
    rendered = render(cfg)
    assert user_data == rendered.user_data and all(key in user_data for key in cfg.ssh_public_keys)
    # The gate delivers the bundle whose digest the user-data carries, and the bundle holds every other file.
    gate_stdin = unwrap(run.one("command:remote:Command").inputs["stdin"])
    assert split_payload(gate_stdin)[0] == rendered.bundle and rendered.bundle_digest in user_data
    assert set(bundle_files(gate_stdin)) == {f.path for f in rendered.bundle_files}
    images = [args for token, args in run.invokes if token == "oci:Core/getImages:getImages"]
    assert images and images[0]["shape"] == cfg.shape.name and images[0]["sortBy"] == "TIMECREATED"


def test_only_ssh_http_and_https_are_open(vm_run: tuple[str, Run, dict[str, Any]]) -> None:
    stack, run, values = vm_run
    rules = [unwrap(r.inputs) for r in run.of_type(
        "oci:Core/networkSecurityGroupSecurityRule:NetworkSecurityGroupSecurityRule")]
    ingress = [r for r in rules if r["direction"] == "INGRESS"]
    tcp = {(int(r["tcpOptions"]["destinationPortRange"]["min"]), int(r["tcpOptions"]["destinationPortRange"]["max"]),
            r["source"]) for r in ingress if r["protocol"] == "6"}
    cidrs = values.get("sshAllowedCidrs", ["0.0.0.0/0"])
    assert tcp == {(22, 22, c) for c in cidrs} | {(80, 80, "0.0.0.0/0"), (443, 443, "0.0.0.0/0")}
    assert {r["protocol"] for r in ingress} == {"6", "1"}  # TCP above, ICMP only for path MTU discovery
    assert all(r["icmpOptions"] == {"type": 3, "code": 4} for r in ingress if r["protocol"] == "1")
    assert not {p for lo, hi, _ in tcp for p in range(lo, hi + 1)} & ENGINE_PORTS
    security_list = unwrap(run.one("oci:Core/securityList:SecurityList").inputs)
    assert security_list.get("ingressSecurityRules", []) == []


def test_every_taggable_resource_carries_the_same_tags(vm_run: tuple[str, Run, dict[str, Any]]) -> None:
    stack, run, values = vm_run
    expected = {"project": "llmdeploy", "stack": stack, "managed-by": "llmdeploy"}
    expected |= dict(t.split("=", 1) for t in values.get("tags", []))
    if values.get("expiresAt"):
        expected["expires-at"] = values["expiresAt"]
    tagged = [r for r in run.resources if r.custom and taggable(r)]
    assert len(tagged) >= 8
    for resource in tagged:
        assert unwrap(resource.inputs).get("freeformTags") == expected, resource.name


def test_readiness_follows_the_instance_and_smoke_follows_readiness(vm_run: tuple[str, Run, dict[str, Any]]) -> None:
    stack, run, values = vm_run
    instance, ip = run.one("oci:Core/instance:Instance"), run.one("oci:Core/publicIp:PublicIp")
    ready, smoke = run.one("command:remote:Command"), run.one("command:local:Command")
    assert {instance.urn, ip.urn} <= set(ready.dependencies)
    assert ready.urn in smoke.dependencies
    assert unwrap(smoke.inputs["triggers"]) == [f"{ready.name}-id"]  # re-run when readiness is replaced
    if values.get("dnsZone"):
        assert run.one("oci:Dns/rrset:Rrset").urn in ready.dependencies
    component = run.one("llmdeploy:vm:VmEndpoint")
    assert instance.parent == ready.parent == smoke.parent == component.urn


def test_secrets_travel_only_as_secrets(vm_run: tuple[str, Run, dict[str, Any]]) -> None:
    stack, run, values = vm_run
    ready = run.one("command:remote:Command")
    timeout_s = int(values.get("readinessTimeoutMinutes", 60)) * 60
    assert ready.inputs["create"] == readiness_script(timeout_s) and f" {timeout_s} " in ready.inputs["create"]
    assert "environment" not in ready.inputs  # sshd would drop it (AcceptEnv), so nothing relies on it
    assert is_secret(ready.inputs["stdin"]) and is_secret(ready.inputs["connection"])
    assert unwrap(ready.inputs["connection"])["privateKey"] == PRIVATE_KEY
    assert unwrap(ready.inputs["connection"])["user"] == values.get("adminUser", "llmadmin")
    bundle = secrets_tar(unwrap(ready.inputs["stdin"]))
    key_map = bundle.extractfile("api-keys.map").read().decode()  # type: ignore[union-attr]
    keys = run.outputs[out.API_KEYS]
    assert set(keys) == {k.split(":")[0] for k in values["apiKeys"]}
    assert all(f'"Bearer {key}" {name};' in key_map for name, key in keys.items())
    smoke = run.one("command:local:Command")
    assert is_secret(smoke.inputs["environment"]) and smoke.inputs["create"] == SMOKE_SCRIPT
    assert unwrap(smoke.inputs["environment"])["LLMDEPLOY_API_KEY"] in keys.values()
    # Only the apiKeys output is secret, and no other output, command line or trigger holds a key.
    assert run.secret_outputs == {out.API_KEYS} and out.API_KEYS in out.SECRET_OUTPUTS
    public = json.dumps({k: v for k, v in run.outputs.items() if k != out.API_KEYS})
    commands = json.dumps([unwrap(r.inputs).get("create", "") for r in run.resources])
    for key in keys.values():
        assert key not in public and key not in commands


def test_outputs_for_users_and_scripts(vm_run: tuple[str, Run, dict[str, Any]]) -> None:
    stack, run, values = vm_run
    cfg = parse(values, stack=stack)
    host = cfg.domain or PUBLIC_IP
    assert run.outputs[out.ENDPOINT_URL] == f"https://{host}"
    assert run.outputs[out.OPENAI_BASE_URL] == f"https://{host}/v1"
    assert run.outputs[out.MODEL_NAME] == cfg.model_name
    assert run.outputs[out.SSH_COMMAND] == f"ssh {cfg.admin_user}@{PUBLIC_IP}"
    assert run.outputs[out.PUBLIC_IP] == PUBLIC_IP
    assert "$LLMDEPLOY_API_KEY" in run.outputs[out.CURL_EXAMPLE] and cfg.model_name in run.outputs[out.CURL_EXAMPLE]
    assert run.outputs[out.CA_CERTIFICATE].startswith("-----BEGIN CERTIFICATE-----")


@pytest.mark.parametrize("overrides, message", [
    ({"engine": "bogus"}, "engine: got 'bogus'"),
    ({"vllmModel": "meta-llama/Llama-3.1-405B-Instruct", "engine": "vllm"}, "no known shape fits it"),
    ({"compartmentId": ""}, "compartmentId"),
    ({"target": "local"}, "llmdeploy local up"),
])
def test_bad_config_fails_before_any_resource(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(Exception, match=message):
        run_stack("ollama-a10", **overrides)
    from support import pulumi_mocks
    assert pulumi_mocks.LAST_MOCKS is not None and pulumi_mocks.LAST_MOCKS.resources == []


def test_no_ssh_key_and_no_agent_fails_before_any_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    values = read_stack(ROOT, "llamacpp-cpu")
    with pytest.raises(Exception, match="no ssh-agent is running"):
        run_program(MAIN, values, stack="llamacpp-cpu")
    from support import pulumi_mocks
    assert pulumi_mocks.LAST_MOCKS is not None and pulumi_mocks.LAST_MOCKS.resources == []


def test_the_ssh_agent_serves_when_no_key_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSH_AUTH_SOCK", "/run/user/0/agent.sock")
    run = run_program(MAIN, read_stack(ROOT, "llamacpp-cpu"), stack="llamacpp-cpu")
    connection = unwrap(run.one("command:remote:Command").inputs["connection"])
    assert connection["agentSocketPath"] == "/run/user/0/agent.sock" and "privateKey" not in connection


DS_VALUES = {"target": "datascience", "compartmentId": "ocid1.compartment.oc1..ds", "engine": "vllm",
             "shape": "VM.GPU.A10.2", "vllmModel": "Qwen/Qwen2.5-7B-Instruct", "modelName": "qwen7b",
             "dsContainerImage": "iad.ocir.io/mytenancy/vllm-openai:v0.33.0", "sshPublicKeys": [SSH_KEY]}


@pytest.mark.parametrize("scaling", [{}, {"dsInstanceCount": 2, "dsMaxInstanceCount": 4}])
def test_the_datascience_target_deploys_vllm_with_logs_and_a_signed_smoke(scaling: dict[str, Any]) -> None:
    run = run_program(MAIN, DS_VALUES | scaling, stack="ds")
    md = unwrap(run.one("oci:DataScience/modelDeployment:ModelDeployment").inputs)
    details = md["modelDeploymentConfigurationDetails"]
    env = details["environmentConfigurationDetails"]
    assert env["environmentConfigurationType"] == "OCIR_CONTAINER" and env["image"] == DS_VALUES["dsContainerImage"]
    assert env["serverPort"] == env["healthCheckPort"] == 8080
    assert env["environmentVariables"]["MODEL_DEPLOY_PREDICT_ENDPOINT"] == "/v1/chat/completions"
    assert env["environmentVariables"]["MODEL_DEPLOY_HEALTH_ENDPOINT"] == "/health"
    cmds = env["cmds"]
    assert cmds[cmds.index("--model") + 1] == "Qwen/Qwen2.5-7B-Instruct"
    assert cmds[cmds.index("--tensor-parallel-size") + 1] == "2"  # the shape's GPU count
    model_cfg = details["modelConfigurationDetails"]
    assert model_cfg["instanceConfiguration"]["instanceShapeName"] == "VM.GPU.A10.2"
    policy = model_cfg["scalingPolicy"]
    if scaling:
        assert policy["policyType"] == "AUTOSCALING"
        assert policy["autoScalingPolicies"][0]["maximumInstanceCount"] == 4
    else:
        assert policy == {"policyType": "FIXED_SIZE", "instanceCount": 1}
    logs = {r.name: r for r in run.of_type("oci:Logging/log:Log")}
    assert md["categoryLogDetails"]["access"]["logId"] == "llmdeploy-ds-access-log-id"
    assert md["categoryLogDetails"]["predict"]["logId"] == "llmdeploy-ds-predict-log-id" and len(logs) == 2
    model = unwrap(run.one("oci:DataScience/model:Model").inputs)
    artifact = ROOT / "build" / "ds" / "model-artifact.zip"
    assert model["modelArtifact"] == str(artifact) and model["artifactContentLength"] == str(artifact.stat().st_size)
    smoke = run.one("command:local:Command")
    assert unwrap(smoke.inputs["environment"])["LLMDEPLOY_SMOKE_KIND"] == "oci-ds"
    assert unwrap(smoke.inputs["environment"])["LLMDEPLOY_SMOKE_URL"] == MD_URL
    assert run.one("oci:DataScience/modelDeployment:ModelDeployment").urn in smoke.dependencies
    assert run.outputs[out.ENDPOINT_URL] == MD_URL
    for resource in run.resources:
        if resource.custom and taggable(resource):
            assert unwrap(resource.inputs)["freeformTags"]["stack"] == "ds", resource.name


def deployment_env(run: Run) -> dict[str, str]:
    md = unwrap(run.one("oci:DataScience/modelDeployment:ModelDeployment").inputs)
    return md["modelDeploymentConfigurationDetails"]["environmentConfigurationDetails"]["environmentVariables"]


def test_the_datascience_example_stack_deploys_two_a10s_with_shared_memory_for_tensor_parallel() -> None:
    """vLLM's tensor-parallel workers need a large /dev/shm; the deployment sizes it from SHM_SIZE."""
    run = run_program(MAIN, read_stack(ROOT, "datascience-a10"), stack="datascience-a10")
    env = deployment_env(run)
    assert env["SHM_SIZE"] == "10g" and "HF_TOKEN_SECRET_OCID" not in env
    md = unwrap(run.one("oci:DataScience/modelDeployment:ModelDeployment").inputs)
    cmds = md["modelDeploymentConfigurationDetails"]["environmentConfigurationDetails"]["cmds"]
    assert cmds[cmds.index("--tensor-parallel-size") + 1] == "2"
    assert run.outputs[out.ENDPOINT_URL] == MD_URL
    one_gpu = deployment_env(run_program(MAIN, DS_VALUES | {"shape": "VM.GPU.A10.1"}, stack="ds1"))
    assert "SHM_SIZE" not in one_gpu


def test_the_datascience_example_runs_a_cuda_12_vllm_at_a_fixed_size() -> None:
    """Oracle manages a model deployment's NVIDIA driver, and it has lagged behind CUDA before
    (oracle-samples/oci-data-science-ai-samples#363: "unsatisfied condition: cuda>=11.8"). vLLM's unsuffixed images
    are CUDA 13.0 since v0.20.0 (driver 580+): the example deploys the -cu129 build, and no CPU_UTILIZATION
    autoscaling, which a GPU-bound vLLM rarely trips."""
    run = run_program(MAIN, read_stack(ROOT, "datascience-a10"), stack="datascience-a10")
    md = unwrap(run.one("oci:DataScience/modelDeployment:ModelDeployment").inputs)
    details = md["modelDeploymentConfigurationDetails"]
    assert nvidia.vllm_image_cuda(details["environmentConfigurationDetails"]["image"]) == (12, 9)
    assert details["modelConfigurationDetails"]["scalingPolicy"] == {"policyType": "FIXED_SIZE", "instanceCount": 1}


def test_the_datascience_deployment_gets_the_hf_token_secrets_ocid_never_a_token() -> None:
    secret_id = "ocid1.vaultsecret.oc1.iad.amaaaaaaexamplesecret"
    run = run_program(MAIN, DS_VALUES | {"dsHfTokenSecretId": secret_id}, stack="ds")
    assert deployment_env(run)["HF_TOKEN_SECRET_OCID"] == secret_id
    assert not any(key.startswith("HF_TOKEN") and key != "HF_TOKEN_SECRET_OCID" for key in deployment_env(run))


def test_a_basic_auth_only_stack_smokes_with_the_password_as_secret_environment() -> None:
    password = "alice-long-secret-passphrase"
    run, _ = run_stack("llamacpp-cpu", apiKeys=[], basicAuthUsers=["alice"],
                       basicAuthPasswords=json.dumps({"alice": password}))
    smoke = run.one("command:local:Command")
    env = unwrap(smoke.inputs["environment"])
    assert is_secret(smoke.inputs["environment"])
    assert env["LLMDEPLOY_BASIC_USER"] == "alice" and env["LLMDEPLOY_BASIC_PASSWORD"] == password
    assert "LLMDEPLOY_API_KEY" not in env and password not in smoke.inputs["create"]


def test_a_chat_frontend_gets_its_dns_record_its_output_and_its_smoke() -> None:
    """chatUi: an A record for chat.<domain> beside the endpoint's, the chatUrl output, and the smoke gate signs
    in on the chat host too."""
    run, _ = run_stack("chat-light", dnsZone="example.org")
    records = {unwrap(r.inputs["domain"]) for r in run.of_type("oci:Dns/rrset:Rrset")}
    assert records == {"llm.example.org", "chat.llm.example.org"}
    assert run.outputs[out.CHAT_URL] == "https://chat.llm.example.org/_login"
    smoke = run.one("command:local:Command")
    assert unwrap(smoke.inputs["environment"])["LLMDEPLOY_SMOKE_CHAT_URL"] == "https://chat.llm.example.org/_login"
    plain, _ = example_run("llamacpp-cpu")
    assert out.CHAT_URL not in plain.outputs
    assert "LLMDEPLOY_SMOKE_CHAT_URL" not in unwrap(plain.one("command:local:Command").inputs["environment"])
