"""The local bakes, without booting anything: the digest `local up` and `bake` compute for a local stack, which
image `local up` chooses (a matching, young enough bake; else the base image, said why in one line; --baked refuses)
and `llmdeploy bake`'s refusals of bad input."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from llmdeploy.bake import store
from llmdeploy.cli import main
from llmdeploy.config import parse
from llmdeploy.declared import declarations
from llmdeploy.errors import UsageError
from llmdeploy.local.image import Image
from llmdeploy.local.localconfig import ModelSource
from llmdeploy.stack_yaml import read_stack
from support.project import ROOT


@pytest.fixture
def bakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LLMDEPLOY_BAKED_DIR", str(tmp_path / "baked"))
    return tmp_path / "baked"


def digest_of(stack: str, model: ModelSource, base: Image, wheels: list[Path] | None = None) -> str:
    values = read_stack(ROOT, stack)
    cfg0 = parse(values, stack=stack, decls=declarations(ROOT))
    return store.local_digest(ROOT, stack, values, cfg0, model, wheels or [], base)


def test_the_local_digest_names_the_model_file_and_base_image_and_not_the_run(tmp_path: Path) -> None:
    gguf = tmp_path / "tiny-llama.gguf"
    gguf.write_bytes(b"GGUF one")
    model = ModelSource("tiny-llama.gguf", gguf, "http://10.0.2.2/tiny-llama.gguf")
    base = Image(tmp_path / "debian-12-aaa")
    first = digest_of("local", model, base)
    assert first == digest_of("local", model, base)  # nothing of a run (ports, keys) enters it
    gguf.write_bytes(b"GGUF two")
    assert digest_of("local", model, base) != first  # another model in the image
    gguf.write_bytes(b"GGUF one")
    assert digest_of("local", model, Image(tmp_path / "debian-12-bbb")) != first


def make_bake(bakes: Path, digest: str, runtime: str, base: Image, stack: str = "local", age_days: float = 0) -> Path:
    folder = bakes / f"{digest}-{runtime}"
    (folder / "rootfs").mkdir(parents=True)
    store.write_manifest(folder, {"digest": digest, "stack": stack, "runtime": runtime, "engine": "llamacpp",
                                  "base_image": base.folder.name, "keep_models": True})
    if age_days:
        manifest = json.loads((folder / store.MANIFEST).read_text())
        manifest["created_epoch"] = int(time.time() - age_days * 86400)
        (folder / store.MANIFEST).write_text(json.dumps(manifest))
    return folder


def test_up_boots_a_matching_bake_and_says_so(bakes: Path, tmp_path: Path) -> None:
    base = Image(tmp_path / "debian-12-aaa")
    folder = make_bake(bakes, "0123456789abcdef", "nspawn", base)
    said: list[str] = []
    chosen = store.choose(store.AUTO, "0123456789abcdef", "nspawn", "local", base, 30, said.append)
    assert chosen.rootfs == folder / "rootfs" and chosen.kernel == base.kernel
    assert said and said[0].startswith(f"baked image: {folder}")
    # the same digest baked for the other runtime is not this one's
    assert store.choose(store.AUTO, "0123456789abcdef", "qemu", "local", base, 30, said.append) == base


def test_a_bake_of_another_install_is_not_used_and_the_line_says_why(bakes: Path, tmp_path: Path) -> None:
    base = Image(tmp_path / "debian-12-aaa")
    make_bake(bakes, "1111111111111111", "nspawn", base)
    said: list[str] = []
    assert store.choose(store.AUTO, "2222222222222222", "nspawn", "local", base, 30, said.append) == base
    assert len(said) == 1 and "1111111111111111" in said[0] and "2222222222222222" in said[0]
    with pytest.raises(UsageError, match="--baked: .*1111111111111111.*llmdeploy bake --stack local"):
        store.choose(store.REQUIRE, "2222222222222222", "nspawn", "local", base, 30, said.append)


def test_a_bake_older_than_the_limit_is_refused(bakes: Path, tmp_path: Path) -> None:
    base = Image(tmp_path / "debian-12-aaa")
    make_bake(bakes, "0123456789abcdef", "nspawn", base, age_days=45)
    said: list[str] = []
    assert store.choose(store.AUTO, "0123456789abcdef", "nspawn", "local", base, 30, said.append) == base
    assert "45 days old, older than 30 days" in said[0]
    with pytest.raises(UsageError, match="45 days old"):
        store.choose(store.REQUIRE, "0123456789abcdef", "nspawn", "local", base, 30, said.append)
    assert store.choose(store.AUTO, "0123456789abcdef", "nspawn", "local", base, 60, said.append) != base


def test_no_baked_boots_the_base_image_and_an_unfinished_bake_is_never_used(bakes: Path, tmp_path: Path) -> None:
    base = Image(tmp_path / "debian-12-aaa")
    folder = make_bake(bakes, "0123456789abcdef", "nspawn", base)
    said: list[str] = []
    assert store.choose(store.NO, "0123456789abcdef", "nspawn", "local", base, 30, said.append) == base
    assert said == ["baked image: not used (--no-baked)"]
    (folder / store.MANIFEST).unlink()  # the manifest is written last: without it the bake did not finish
    assert store.choose(store.AUTO, "0123456789abcdef", "nspawn", "local", base, 30, said.append) == base


@pytest.mark.parametrize(("stack", "expected"), [
    ("ollama-a10", "has target 'vm'; `llmdeploy bake` bakes stacks with target local"),
    ("no-such-stack", "no stack file"),
])
def test_bake_refuses_a_cloud_stack_and_an_unknown_one(stack: str, expected: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bake", "--stack", stack, "--project-dir", str(ROOT), "--runtime", "nspawn"]) == 2
    assert expected in capsys.readouterr().err


def test_up_refuses_both_baked_and_no_baked(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["local", "up", "--baked", "--no-baked"])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_the_default_age_limit_is_the_same_in_the_parser_and_the_store() -> None:
    from llmdeploy.local import cli

    assert cli.DEFAULT_MAX_AGE_DAYS == store.DEFAULT_MAX_AGE_DAYS
