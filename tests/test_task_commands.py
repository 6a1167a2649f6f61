"""The commands that read a run config (``stage``, ``dvc``, ``audit``, ``impute``, ``config``, ``experiment`` and
the kfp compiler) on a ``task:`` file: its graph's, or one line and exit 2 where the command makes no sense."""

import pytest
import yaml
from click.testing import CliRunner

from fedmm import graph
from fedmm.cli import main
from fedmm.kg.config import KGRunConfig
from fedmm_pipelines.components.pipeline import main as compile_main

KG = {"task": "fedmkgc", "run": {"dataset": "nations", "clients": 3, "dim": 8, "rounds": 1, "local_epochs": 1}}


def fedmm(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_dvc_and_its_stages_run_the_fedmkgc_graph_of_a_task_file(tmp_path):
    config = tmp_path / "kg.yaml"
    config.write_text(yaml.safe_dump(KG))
    assert fedmm("dvc", "-c", str(config), "--dir", str(tmp_path / "dvc")).exit_code == 0
    stages = yaml.safe_load((tmp_path / "dvc" / "dvc.yaml").read_text())["stages"]
    assert list(stages) == list(graph.FEDMKGC.names)
    params = tmp_path / "dvc" / "params.yaml"
    assert graph.load_run_config(params) == graph.load_run_config(config)
    shown = fedmm("config", "-c", str(params))
    assert shown.exit_code == 0 and yaml.safe_load(shown.output)["task"] == "fedmkgc"
    for stage in ("validate-triples", "federate"):  # the second reads what the first wrote
        assert fedmm("stage", stage, "-c", str(params), "--workdir", str(tmp_path / "w")).exit_code == 0
    assert (tmp_path / "w" / "validation" / "triples.json").is_file()
    assert (tmp_path / "w" / "federation" / "federation.json").is_file()


def test_commands_that_make_no_sense_for_a_task_refuse_it_in_one_line(tmp_path):
    config = tmp_path / "kg.yaml"
    config.write_text(yaml.safe_dump(KG))
    for command, stage in (("audit", "audit"), ("impute", "evaluate-imputation")):
        result = fedmm(command, "--run", "any", "-c", str(config))
        assert result.exit_code == 2
        assert result.output.splitlines()[0] == (
            f"error: the fedmkgc graph has no {stage} stage: this command does not apply to its configs")
    config.write_text("task: nosuch\nname: x\n")
    for args in (["experiment", "-c", str(config)], ["stage", "train", "-c", str(config)]):
        result = fedmm(*args)
        assert result.exit_code == 2 and "task 'nosuch' is not one of" in result.output.splitlines()[0]


def test_the_kfp_compiler_builds_a_task_files_graph(tmp_path, capsys):
    config = tmp_path / "kg.yaml"
    config.write_text(yaml.safe_dump(KG))
    compile_main(["--config", str(config), "--set", "run.rounds=2", "--output", str(tmp_path / "kfp.yaml")])
    spec = yaml.safe_load((tmp_path / "kfp.yaml").read_text())
    assert set(spec["root"]["dag"]["tasks"]) == set(graph.FEDMKGC.names)
    default = spec["root"]["inputDefinitions"]["parameters"]["config_json"]["defaultValue"]
    assert KGRunConfig.model_validate_json(default).run.rounds == 2
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        compile_main(["--config", str(config), "--set", "run.method=bogus", "--output", str(tmp_path / "x.yaml")])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.startswith("error: invalid configuration: run.method: Input should be")
