"""The Ray cluster as data (llmdeploy/raycluster.py): fixed ports on every node, the dashboard and Serve on
loopback only, token auth in the environment and never on a command line, the Serve LLM app's shape."""
from __future__ import annotations

import yaml

from llmdeploy import raycluster as rc
from llmdeploy.config import CHAT_UI_PORTS
from llmdeploy.shapes import SHAPES, VCPUS


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_head_fixes_every_port_and_keeps_the_dashboard_on_loopback():
    argv = rc.head_command("/opt/ray/bin/ray", "10.42.1.10")
    assert argv[:3] == ["/opt/ray/bin/ray", "start", "--head"]
    assert "--block" in argv
    assert _flag(argv, "--dashboard-host") == "127.0.0.1"
    assert _flag(argv, "--node-ip-address") == "10.42.1.10"
    wanted = {"--port": 6379, "--node-manager-port": 6380, "--object-manager-port": 6381,
              "--runtime-env-agent-port": 6382, "--dashboard-agent-grpc-port": 6383, "--metrics-export-port": 6384,
              "--dashboard-agent-listen-port": 52365, "--ray-client-server-port": 10001,
              "--min-worker-port": 10002, "--max-worker-port": 19999, "--dashboard-port": 8265}
    assert {k: int(_flag(argv, k)) for k in wanted} == wanted


def test_worker_joins_the_head_with_the_same_node_ports():
    head = rc.head_command("ray", "10.42.1.10")
    worker = rc.worker_command("ray", "10.42.1.11", "10.42.1.10", num_cpus=4, num_gpus=2)
    assert _flag(worker, "--address") == "10.42.1.10:6379"
    assert "--head" not in worker and "--dashboard-host" not in worker
    for name in ("--node-manager-port", "--object-manager-port", "--min-worker-port", "--max-worker-port",
                 "--runtime-env-agent-port", "--dashboard-agent-grpc-port", "--dashboard-agent-listen-port",
                 "--metrics-export-port"):
        assert _flag(worker, name) == _flag(head, name)
    assert (_flag(worker, "--num-cpus"), _flag(worker, "--num-gpus")) == ("4", "2")


def test_worker_port_range_outlasts_the_workers_of_the_largest_gpu_shape():
    """Each Ray worker process holds a port of the range, and the raylet starts about one per vCPU before any work:
    99 ports (10002-10100) ran out on a 128- or 256-vCPU bare-metal shape ("No available ports")."""
    assert set(VCPUS) == {s.name for s in SHAPES.values() if s.is_gpu}, "every GPU shape needs its vCPU count"
    largest = max(VCPUS.values())
    assert largest >= 256
    worker_ports = rc.PORTS.max_worker - rc.PORTS.min_worker + 1
    assert worker_ports > largest, f"{worker_ports} ports, fewer than the {largest} workers pre-started"
    for shape, vcpus in VCPUS.items():
        assert worker_ports >= rc.worker_ports_needed(vcpus), shape


def test_worker_port_range_holds_no_other_port_of_a_ray_node():
    ports = rc.PORTS
    workers = range(ports.min_worker, ports.max_worker + 1)
    fixed = {ports.gcs, ports.node_manager, ports.object_manager, ports.runtime_env_agent, ports.dashboard_agent_grpc,
             ports.metrics_export, ports.dashboard_agent_listen, ports.client_server, ports.dashboard, ports.serve}
    assert not (fixed | set(CHAT_UI_PORTS.values()) | {22, 80, 443}) & set(workers)
    # Below Linux's ephemeral range (32768-60999), so an outgoing connection never takes a worker's port.
    assert ports.max_worker < 32768


def test_token_reaches_ray_through_a_file_never_argv():
    env = rc.environment()
    assert env == {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": "/etc/ray/token", "RAY_USAGE_STATS_ENABLED": "0"}
    argv = rc.head_command("ray", "10.0.0.1") + rc.worker_command("ray", "10.0.0.2", "10.0.0.1")
    assert not any("token" in a.lower() for a in argv)


def test_cluster_ranges_cover_every_node_port_but_not_serve_or_the_dashboard():
    ports = rc.PORTS
    covered = {p for lo, hi in ports.cluster_ranges() for p in range(lo, hi + 1)}
    node_ports = {ports.gcs, ports.node_manager, ports.object_manager, ports.runtime_env_agent,
                  ports.dashboard_agent_grpc, ports.metrics_export, ports.dashboard_agent_listen,
                  ports.client_server, ports.min_worker, ports.max_worker}
    assert node_ports <= covered
    assert ports.serve not in covered and ports.dashboard not in covered


def test_serve_app_config_binds_loopback_on_the_head_with_tp_pp_bundles_and_autoscaling():
    app = rc.LlmApp("qwen-14b", "Qwen/Qwen2.5-14B-Instruct", tensor_parallel=2, pipeline_parallel=2,
                    min_replicas=1, max_replicas=2, engine_kwargs={"max_model_len": 8192})
    doc = yaml.safe_load(rc.serve_config_yaml(app))
    assert doc["proxy_location"] == "HeadOnly"
    assert doc["http_options"] == {"host": "127.0.0.1", "port": 8000}
    (application,) = doc["applications"]
    assert application["import_path"] == "ray.serve.llm:build_openai_app"
    (llm,) = application["args"]["llm_configs"]
    assert llm["model_loading_config"] == {"model_id": "qwen-14b", "model_source": "Qwen/Qwen2.5-14B-Instruct"}
    assert llm["engine_kwargs"] == {"tensor_parallel_size": 2, "pipeline_parallel_size": 2, "max_model_len": 8192}
    assert llm["deployment_config"]["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 2}
    assert llm["placement_group_config"]["bundles"] == [{"GPU": 1}] * 4
    assert app.gpus_needed() == 8


def test_cpu_bundles_need_no_gpu():
    app = rc.LlmApp("tiny", "/models/tiny", bundle={"CPU": 2}, max_replicas=3)
    assert rc.llm_config(app)["placement_group_config"]["bundles"] == [{"CPU": 2}]
    assert app.gpus_needed() == 0


def test_serve_deploy_talks_to_the_loopback_dashboard():
    assert rc.serve_deploy_command("/opt/ray/bin/serve") == [
        "/opt/ray/bin/serve", "deploy", "/etc/ray/serve-app.yaml", "--address", "http://127.0.0.1:8265"]
