"""The ray target's user-data (render.py, the Ray templates) and its plan: the head's and each worker's files,
a snapshot of the worker's, token auth from a file in every Ray unit and never a secret in user-data, bad
cluster sizes refused with the fix, and `workshop plan` counting the cluster's VMs and GPUs. The Ray node's
firewall runs for real in tests/integration/test_ray_firewall.py."""
from __future__ import annotations

import ast
import os
import shlex
from pathlib import Path

import pytest
import yaml

from support.project import ROOT, minimal_raw
from llmdeploy import addresses, raycluster
from llmdeploy.cli import main
from llmdeploy.errors import EXIT_USAGE
from llmdeploy.config import ConfigError, parse
from llmdeploy.render import BASE_STEPS, FILES_DIR, INSTALL_SECRETS, RAY_STATUS, STEPS_DIR, WAIT_READY, render
from llmdeploy.secret_delivery import worker_bundle
from llmdeploy.stack_yaml import load_stack_config
from llmdeploy.topology import REPLICA, WORKER, Node, node
from support.workshop_stack import people, workshop_project
from test_workshop_plan import AD1, limits_file, line, plan

SNAPSHOT = ROOT / "tests" / "snapshots" / "ray-a10.worker-0.user-data.yaml"
HF_TOKEN = "hf_SECRETtoken1234567890abcdef"


def ray_raw(**overrides: object) -> dict[str, object]:
    """Two VM.GPU.A10.2 workers and the head: 6 GPUs, 3 replicas of tensor parallel 2."""
    return minimal_raw(**{"target": "ray", "shape": "VM.GPU.A10.2", "engine": "vllm",
                          "vllmModel": "Qwen/Qwen2.5-14B-Instruct", "modelName": "qwen2.5-14b", "tlsMode": "self-signed",
                          "rayWorkers": 2, "rayTensorParallel": 2, "rayMaxReplicas": 3, **overrides})


def test_worker_user_data_matches_snapshot() -> None:
    """The head's is in test_render's snapshots (ray-a10); UPDATE_SNAPSHOTS=1 rewrites this one too."""
    cfg = load_stack_config(ROOT, "ray-a10")
    user_data = render(cfg, node=node(cfg, WORKER, 0)).expanded()
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(user_data, encoding="utf-8")
    assert user_data == SNAPSHOT.read_text(encoding="utf-8")


def test_the_head_runs_nginx_ray_and_the_serve_app_and_a_worker_only_its_node() -> None:
    cfg = parse(ray_raw(), stack="ray")
    head, worker = render(cfg), render(cfg, node=node(cfg, WORKER, 1))
    assert head.steps == (*BASE_STEPS, "25-nvidia", "40-engine", "50-tls", "60-nginx", "90-ready")
    assert worker.steps == (*BASE_STEPS, "25-nvidia", "40-engine", "90-ready")
    head_unit = head.file(f"{FILES_DIR}/ray-head.service").content
    worker_unit = worker.file(f"{FILES_DIR}/ray-worker.service").content
    assert f"ExecStart={shlex.join(raycluster.head_command('/opt/llmdeploy/ray/bin/ray', addresses.head_ip()))}" \
        in head_unit
    assert f"--address {addresses.head_ip()}:6379" in worker_unit and "--node-ip-address 10.42.2.11" in worker_unit
    for unit in (head_unit, worker_unit):
        assert "KillMode=control-group" in unit and "User=ray" in unit
        for name, value in raycluster.environment().items():
            assert f"Environment={name}={value}\n" in unit
    assert "StartLimitIntervalSec=0" in worker_unit and "Restart=always" in worker_unit  # until the head answers
    app = yaml.safe_load(head.file(f"{FILES_DIR}/serve-app.yaml").content)
    (llm,) = app["applications"][0]["args"]["llm_configs"]
    assert llm["deployment_config"]["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 3}
    assert llm["placement_group_config"]["bundles"] == [{"GPU": 1}, {"GPU": 1}]
    assert llm["engine_kwargs"]["tensor_parallel_size"] == 2
    assert "serve deploy /etc/ray/serve-app.yaml --address http://127.0.0.1:8265" in \
        head.file(f"{FILES_DIR}/ray-serve-app.service").content
    assert not any(f.path.endswith("nginx-site.conf") or f.path.endswith("serve-app.yaml") for f in worker.files)
    # nginx on the head proxies the API to Serve on loopback; /healthz asks the model's own replica for one token
    # (it answers only once vLLM has loaded the model), not the ingress's static model card.
    assert "proxy_pass http://127.0.0.1:8000/v1/completions;" in head.nginx_site
    assert """proxy_set_body '{"model": "qwen2.5-14b", "prompt": "ok", "max_tokens": 1}';""" in head.nginx_site
    assert "proxy_method POST;" in head.nginx_site
    status = head.file(RAY_STATUS).content
    assert '["10.42.1.10", "10.42.2.10", "10.42.2.11"]' in status  # every node the head waits for


def test_readiness_waits_for_every_node_and_the_app_and_names_what_is_missing() -> None:
    cfg = parse(ray_raw(), stack="ray")
    wait = render(cfg).file(WAIT_READY).content
    assert RAY_STATUS in wait and "the Ray cluster is not whole: $status" in wait
    assert RAY_STATUS in render(cfg).file(f"{STEPS_DIR}/40-engine.sh").content
    worker_wait = render(cfg, node=node(cfg, WORKER, 0)).file(WAIT_READY).content
    assert RAY_STATUS not in worker_wait and "ray-worker is not running" in worker_wait


def test_no_secret_and_no_token_in_any_node_user_data() -> None:
    cfg = parse(ray_raw(hfToken=HF_TOKEN), stack="ray")
    token = "t" * 64
    for user_data in (render(cfg).expanded(), render(cfg, node=node(cfg, WORKER, 0)).expanded()):
        assert HF_TOKEN not in user_data and token not in user_data
        assert "wait_for_secret /etc/ray/token rayToken" in user_data  # the token arrives after boot
    assert b"ray-token" in worker_bundle(cfg, token) and b"api-keys.map" not in worker_bundle(cfg, token)
    with pytest.raises(ValueError, match="Ray token"):
        worker_bundle(cfg, "short")
    installer = render(cfg, node=node(cfg, WORKER, 0)).file(INSTALL_SECRETS).content
    assert '"$work/ray-token"' in installer and "install -d -m 0755 /etc/ray" in installer


def test_a_worker_index_beyond_the_cluster_is_refused() -> None:
    cfg = parse(ray_raw(), stack="ray")
    with pytest.raises(ValueError, match=r"worker 2: the stack has no such machine \(target ray: head, worker-0, "
                                         r"worker-1\)"):
        node(cfg, WORKER, 2)
    with pytest.raises(ValueError, match="replica 0: the stack has no such machine"):
        node(cfg, REPLICA, 0)


def test_render_refuses_a_node_the_stack_does_not_have() -> None:
    """A Node made by hand (not topology's) for a worker beyond the cluster, or with another address."""
    cfg = parse(ray_raw(), stack="ray")
    worker = node(cfg, WORKER, 1)
    for foreign in (Node(WORKER, 2, addresses.worker_ip(2)), Node(WORKER, 1, "10.9.9.9")):
        with pytest.raises(ValueError, match=rf"{foreign.name} \({foreign.ip}\): the stack has no such machine"):
            render(cfg, node=foreign)
    assert render(cfg, node=worker).steps[-1] == "90-ready"


@pytest.mark.parametrize(("overrides", "key", "fix"), [
    ({"rayMaxReplicas": 4}, "rayMaxReplicas", "pulumi config set rayMaxReplicas 3, or add workers: pulumi config "
                                              "set rayWorkers 3"),
    ({"rayTensorParallel": 4}, "rayTensorParallel", "pulumi config set rayTensorParallel 2"),
    ({"engine": "ollama"}, "engine", "pulumi config set engine vllm"),
    ({"rayWorkerShape": "VM.Standard.E4.Flex"}, "rayWorkerShape", "pulumi config set rayWorkerShape VM.GPU.A10.2"),
    ({"rayPackage": "ray==2.60.0"}, "rayPackage", "ray[serve,llm]==2.60.0"),
    ({"rayMinReplicas": 4, "rayMaxReplicas": 3}, "rayMinReplicas", "pulumi config set rayMinReplicas 3"),
])
def test_bad_cluster_sizes_are_refused_with_the_fix(overrides: dict[str, object], key: str, fix: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(ray_raw(**overrides), stack="ray")
    assert [p.key for p in caught.value.problems] == [key]
    assert fix in str(caught.value)


def test_validate_exits_2_for_a_cluster_too_small(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "project"
    root.mkdir()
    (root / "Pulumi.yaml").write_text((ROOT / "Pulumi.yaml").read_text())
    stack = yaml.safe_load((ROOT / "Pulumi.ray-a10.yaml").read_text())
    stack["config"]["llmdeploy:rayMaxReplicas"] = 3
    (root / "Pulumi.small.yaml").write_text(yaml.safe_dump(stack))
    assert main(["validate", "--stack", "small", "--project-dir", str(root)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "rayMaxReplicas: got 3" in err and "the cluster's 4 GPUs" in err and "Traceback" not in err


def test_workshop_plan_counts_the_clusters_vms_and_gpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = workshop_project(tmp_path, people(30), target="ray", shape="VM.GPU.A10.2", engine="vllm",
                            vllmModel="Qwen/Qwen2.5-14B-Instruct", modelName="qwen2.5-14b", rayWorkers=2,
                            rayTensorParallel=2, rayMaxReplicas=3, workshopLayout="shared", workshopEndpoints=1,
                            tlsMode="self-signed", workshopHours=4)
    code, out, _ = plan(capsys, root, "--limits", str(limits_file(tmp_path, {AD1: 4})))
    assert code == 1, out  # 3 x VM.GPU.A10.2 = 6 A10s, 4 available
    assert "3 instance(s), 6 GPU(s)" in out
    assert "need 6 GPUs (3 x VM.GPU.A10.2)" in line(out, "limit gpu-a10-count")
    assert "in a Ray cluster" in line(out, "shape VM.GPU.A10.2")
    code, out, _ = plan(capsys, root, "--limits", str(limits_file(tmp_path, {AD1: 6})))
    assert code == 0, out


def test_a_ray_workshop_is_one_shared_cluster() -> None:
    with pytest.raises(ConfigError, match="shared with workshopEndpoints 1 on the ray target"):
        parse(ray_raw(workshopRoster="roster.csv", workshopLayout="dedicated"), stack="ray")


def test_ray_cluster_status_script_is_valid_python() -> None:
    cfg = parse(ray_raw(), stack="ray")
    ast.parse(render(cfg).file(RAY_STATUS).content)  # tests/integration/test_ray_status.py runs it against Ray
