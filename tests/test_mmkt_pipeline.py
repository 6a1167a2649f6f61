"""`fedmm run` on a `task: fedmmkt` file: the generated FedMMKT pipeline registers the task model and the generator."""

import yaml
from click.testing import CliRunner
from mmkt_support import tiny_config

from fedmm import graph
from fedmm.cli import main
from fedmm.tracking import registry


def run_file(tmp_path, **registry_names) -> str:
    config = tiny_config()
    payload = {"task": "fedmmkt", "registry": registry_names,
               "run": {**config.model_dump(mode="json"),
                       "set": [*config.set, "train.rounds=2", "registry.min_macro_f1=0.0",
                               "registry.require_clean_audit=false"]}}
    path = tmp_path / "mmkt.yaml"
    path.write_text(yaml.safe_dump(payload))
    return str(path)


def test_run_trains_on_the_engine_and_registers_both_models(tmp_path):
    from zenml.client import Client

    path = run_file(tmp_path, model_name="mmkt-run-client", generator_model_name="mmkt-run-generator")
    result = CliRunner().invoke(main, ["run", "--config", path], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "mmkt-run-client gate min_macro_f1: pass" in result.output
    client = registry.client()
    tags = client.get_model_version("mmkt-run-client", registry.aliases("mmkt-run-client")["champion"]).tags
    generator = client.get_model_version("mmkt-run-generator", "1").tags
    assert tags["fedmm.generator_model"] == "mmkt-run-generator v1"
    assert generator["fedmm.client_model"] == f"mmkt-run-client v{registry.aliases('mmkt-run-client')['champion']}"
    run = Client().get_pipeline_run(tags["fedmm.zenml_pipeline_run"])
    assert list(run.steps) == [stage.function for stage in graph.FEDMMKT.stages]
    trained = run.steps["train_digits"].outputs["mmkt_result"][0].load()
    assert trained.strategy == "fedmmkt" and len(trained.history) == 2 and any(
        key.startswith("generator/") for key in trained.server_state)  # the co-enhanced generator, checkpointed


def test_a_bad_file_is_one_line_and_kfp_and_dvc_build_the_graph(tmp_path):
    from kfp import compiler

    from fedmm.graph import load_run_config
    from fedmm.stages import dvc_pipeline
    from fedmm_pipelines.components.pipeline import graph_pipeline

    path = run_file(tmp_path)
    bad = CliRunner().invoke(main, ["run", "--config", path, "--set", "run.set=[partition.num_clients=0]"])
    assert bad.exit_code == 2 and "partition.num_clients" in bad.output and "Traceback" not in bad.output
    config = load_run_config(path)
    assert graph.for_config(config) is graph.FEDMMKT
    compiler.Compiler().compile(graph_pipeline(graph.FEDMMKT, config), str(tmp_path / "kfp.yaml"))
    assert set(yaml.safe_load((tmp_path / "kfp.yaml").read_text())["root"]["dag"]["tasks"]) == set(graph.FEDMMKT.names)
    assert list(dvc_pipeline(graph.FEDMMKT, config)["stages"]) == list(graph.FEDMMKT.names)
