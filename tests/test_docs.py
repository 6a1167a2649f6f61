"""The documentation site: it builds strictly, its reference pages come from the code, every config field is described."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _docs_module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _build(root: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(root / "mkdocs.yml"), "--site-dir", str(site)],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = _build(ROOT, out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_every_config_field_has_a_description():
    undocumented = [f.path for f in _docs_module("gen_reference").config_fields() if not f.description.strip()]
    assert not undocumented, f"config fields without a description: {', '.join(undocumented)}"


def test_config_reference_lists_every_field_with_its_default(site):
    from fedmm.config import Config

    page = (site / "reference" / "config" / "index.html").read_text()
    fields = list(_docs_module("gen_reference").config_fields())
    assert len(fields) > 100
    missing = [f.path for f in fields if f"<code>{f.path}</code>" not in page]
    assert not missing, missing
    assert f"<code>{Config().registry.min_test_samples!r}</code>" in page


def test_cli_reference_lists_every_command_and_option(site):
    from fedmm.cli import main

    page = (site / "reference" / "cli" / "index.html").read_text()
    for name, command in main.commands.items():
        if command.hidden:
            continue
        assert f"fedmm {name}" in page, name
        for option in (p for p in command.params if p.param_type_name == "option"):
            assert f"<code>{option.opts[0]}</code>" in page, (name, option.opts[0])


def test_stage_graph_page_shows_every_stage(site):
    from fedmm import graph

    page = (site / "concepts" / "stage-graph" / "index.html").read_text()
    assert 'class="mermaid"' in page
    for pipeline in graph.GRAPHS.values():
        for stage in pipeline.stages:
            assert f"<code>{stage.name}</code>" in page and f"<code>{stage.function}</code>" in page, stage.name


def test_api_reference_renders_docstrings(site):
    page = (site / "reference" / "api" / "index.html").read_text()
    assert "fedmm.config.load_config" in page and "fedmm.fl.strategy" in page


def test_strict_build_fails_on_a_broken_link(tmp_path):
    for name in ("mkdocs.yml", "docs"):
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / name)
    page = tmp_path / "docs" / "get-started.md"
    page.write_text(page.read_text() + "\nSee [the old page](nowhere.md).\n")
    result = _build(tmp_path, tmp_path / "site")
    assert result.returncode != 0
    assert "nowhere.md" in result.stderr


def test_tutorial_dataset_is_a_valid_data_file(tmp_path):
    from fedmm.data.dataset import load_npz

    path = tmp_path / "nested" / "digits.npz"
    _docs_module("make_tutorial_data").digits_npz(str(path))
    data = load_npz(path)
    assert sorted(data.modalities) == ["lower", "upper"]
    assert len(data.labels) == 1797 and len(set(data.labels.tolist())) == 10


def test_readme_is_a_front_page_whose_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) < 10 * 1024
    first_block = text.split("```bash\n", 1)[1].splitlines()
    assert first_block[0].startswith("make run") and first_block[1].startswith("make test")
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    assert targets and all((ROOT / target).exists() for target in targets), targets
