"""The templates read typed objects (template_context.py), and a name or field they misspell fails: at render time
through the strict environment, and here, statically, for every branch of every template, taken or not."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import jinja2
import pytest
from jinja2 import meta, nodes

from llmdeploy.config import Sources, parse
from llmdeploy.engines.ray_serve import RayContext
from llmdeploy.engines.vllm import VllmContext
from llmdeploy.engines.xinference import XinferenceContext
from llmdeploy.template_context import (AuthContext, ChatContext, EngineContext, HfTokenContext, HostLayout, HostPaths,
                                        MachineContext, TlsContext, TopologyContext, TorchContext, template_context)
from llmdeploy.templating import ENV, TEMPLATES
from llmdeploy.topology import HEAD_NODE
from support.project import minimal_raw

# Each typed object by the name templates know it by.
TYPED = {"machine": MachineContext, "topology": TopologyContext, "engine": EngineContext, "tls": TlsContext,
         "auth": AuthContext, "chat": ChatContext, "hf_token": HfTokenContext, "torch": TorchContext,
         "paths": HostPaths, "host_layout": HostLayout, "sources": Sources, "vllm": VllmContext,
         "xinference": XinferenceContext, "ray": RayContext}
# Keys beside template_context's: an engine's own objects, the bootstrap's stage, the chat sign-in page's flag.
OTHER_KEYS = {"vllm", "xinference", "ray", "bundle_stage", "failed", "keep_models"}  # keep_models: bake-scrub.sh.j2


def _templates() -> list[Path]:
    return sorted(TEMPLATES.rglob("*.j2"))


def _attributes(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)} | {n for n in dir(cls) if not n.startswith("_")}


def test_every_field_a_template_reads_exists_on_its_object() -> None:
    wrong = []
    for path in _templates():
        tree = ENV.parse(path.read_text(encoding="utf-8"))
        for node in tree.find_all(nodes.Getattr):
            if isinstance(node.node, nodes.Name) and node.node.name in TYPED \
                    and node.attr not in _attributes(TYPED[node.node.name]):
                wrong.append(f"{path.relative_to(TEMPLATES)}:{node.lineno}: {node.node.name}.{node.attr}")
    assert not wrong, "fields no context object has:\n" + "\n".join(wrong)


def test_every_name_a_template_reads_is_in_the_context() -> None:
    cfg = parse(minimal_raw(), stack="context")
    known = set(template_context(cfg, HostLayout(), HEAD_NODE, ["90-ready"])) | OTHER_KEYS
    macros = {m.name for p in _templates() for m in ENV.parse(p.read_text(encoding="utf-8")).find_all(nodes.Macro)}
    unknown = {f"{p.relative_to(TEMPLATES)}: {name}" for p in _templates()
               for name in meta.find_undeclared_variables(ENV.parse(p.read_text(encoding="utf-8")))
               if name not in known | macros}
    assert not unknown, "names no context holds:\n" + "\n".join(sorted(unknown))


def test_a_misspelled_field_fails_the_render_instead_of_writing_nothing() -> None:
    cfg = parse(minimal_raw(), stack="context")
    ctx = template_context(cfg, HostLayout(), HEAD_NODE, ["90-ready"])
    assert ENV.from_string("{{ engine.port }}").render(**ctx) == str(cfg.engine_port)
    with pytest.raises(jinja2.UndefinedError, match="has no attribute 'prot'"):
        ENV.from_string("port={{ engine.prot }}").render(**ctx)
    with pytest.raises(jinja2.UndefinedError, match="'engine_port' is undefined"):
        ENV.from_string("port={{ engine_port }}").render(**ctx)  # the flat bag's old name


def test_the_check_catches_a_misspelled_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The static check fails for a template that reads a field its object lacks."""
    (tmp_path / "bad.sh.j2").write_text("echo {{ machine.readiness_timeout_s }} {{ engine.prot }}\n", encoding="utf-8")
    monkeypatch.setattr(f"{__name__}._templates", lambda: [tmp_path / "bad.sh.j2"])
    monkeypatch.setattr(f"{__name__}.TEMPLATES", tmp_path)
    with pytest.raises(AssertionError, match=r"bad.sh.j2:1: engine.prot"):
        test_every_field_a_template_reads_exists_on_its_object()
