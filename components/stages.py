"""kfp v2 lightweight components, one per pipeline stage, over the same fedmm functions.

Each component runs in the image ``FEDMM_IMAGE``, built from this repository (it has fedmm,
its locked dependencies and kfp installed); ``infra/README.md`` describes building and
pushing it. kfp copies only the function body into the container, so every import happens
inside the body and nothing is pip-installed at run time.

Artifacts are folders (``.path``) written and read with the fedmm artifact's own
``save``/``load``; validation reports and the evaluation report are JSON files. The config
travels as a JSON string and is validated again in each task. A validation component raises
when its suite fails, so no downstream task runs.
"""

# No `from __future__ import annotations`: kfp reads the annotations as real types.
from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

FEDMM_IMAGE = "fedmm:0.1.0"
"""The image every component runs in: the repository installed over requirements.lock."""

component = dsl.component(base_image=FEDMM_IMAGE, install_kfp_package=False)


@component
def prepare(config_json: str, prepared: Output[Dataset]):
    """Load, window and split the data (fedmm.workflow.prepare_data)."""
    import json

    from fedmm import runtime, workflow
    from fedmm.config import config_from_dict

    runtime.configure()
    workflow.prepare_data(config_from_dict(json.loads(config_json))).save(prepared.path)


@component
def validate_data(config_json: str, prepared: Input[Dataset], report: Output[Artifact]):
    """Great Expectations suite over the prepared data; raises (fails the run) when it fails."""
    import json

    from fedmm import runtime, workflow
    from fedmm.artifacts import write_json
    from fedmm.config import config_from_dict
    from fedmm.data.prepare import PreparedData

    runtime.configure()
    result = workflow.validate_data(config_from_dict(json.loads(config_json)), PreparedData.load(prepared.path))
    write_json(report.path, result.to_dict())
    result.raise_if_failed()


@component
def partition(config_json: str, prepared: Input[Dataset], partitions: Output[Dataset]):
    """Split the training pool across clients and draw the modality masks."""
    import json

    from fedmm import runtime, workflow
    from fedmm.config import config_from_dict
    from fedmm.data.prepare import PreparedData

    runtime.configure()
    config = config_from_dict(json.loads(config_json))
    workflow.make_partitions(config, PreparedData.load(prepared.path)).save(partitions.path)


@component
def validate_partitions(config_json: str, partitions: Input[Dataset], report: Output[Artifact]):
    """Great Expectations suite over client sizes and realised missing rates; raises when it fails."""
    import json

    from fedmm import runtime, workflow
    from fedmm.artifacts import write_json
    from fedmm.config import config_from_dict
    from fedmm.data.federated import FederatedData

    runtime.configure()
    result = workflow.check_partitions(config_from_dict(json.loads(config_json)), FederatedData.load(partitions.path))
    write_json(report.path, result.to_dict())
    result.raise_if_failed()


@component
def train(config_json: str, prepared: Input[Dataset], partitions: Input[Dataset], training: Output[Model]):
    """Federated rounds (and the centralized reference); ``train.device: auto`` picks the GPU."""
    import json

    from fedmm import runtime, workflow
    from fedmm.config import config_from_dict
    from fedmm.data.federated import FederatedData
    from fedmm.data.prepare import PreparedData
    from fedmm.progress import RoundProgress

    runtime.configure()
    config = config_from_dict(json.loads(config_json))
    data, federated = PreparedData.load(prepared.path), FederatedData.load(partitions.path)
    with RoundProgress(config.train.rounds, config.train.strategy) as progress:
        workflow.train_models(config, data, federated, progress.update).save(training.path)


@component
def evaluate(
    prepared: Input[Dataset],
    partitions: Input[Dataset],
    training: Input[Model],
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
):
    """Both test protocols, the centralized gap and per-client scores; headline numbers as kfp metrics."""
    from fedmm import runtime, workflow
    from fedmm.artifacts import write_json
    from fedmm.data.federated import FederatedData
    from fedmm.data.prepare import PreparedData
    from fedmm.fl.result import TrainResult

    runtime.configure()
    data, federated = PreparedData.load(prepared.path), FederatedData.load(partitions.path)
    report = workflow.evaluate_models(data, federated, TrainResult.load(training.path))
    write_json(evaluation.path, report)
    for name, value in report["summary"].items():
        metrics.log_metric(name, value)


@component
def register(
    config_json: str,
    prepared: Input[Dataset],
    partitions: Input[Dataset],
    training: Input[Model],
    evaluation: Input[Artifact],
    data_report: Input[Artifact],
    partition_report: Input[Artifact],
    tracking_uri: str = "",
) -> dict:
    """Log to MLflow, register the model as ``challenger``, promote it if the gates pass.

    ``tracking_uri`` is the MLflow server (in production the in-cluster one); empty means
    fedmm's default, a SQLite store under ``$FEDMM_HOME``. Returns the run summary.
    """
    import json
    import os

    from fedmm import runtime, workflow
    from fedmm.artifacts import read_json
    from fedmm.config import config_from_dict
    from fedmm.data.federated import FederatedData
    from fedmm.data.prepare import PreparedData
    from fedmm.data.validation import ValidationReport
    from fedmm.fl.result import TrainResult

    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    runtime.configure()
    config = config_from_dict(json.loads(config_json))
    data, federated = PreparedData.load(prepared.path), FederatedData.load(partitions.path)
    result, report = TrainResult.load(training.path), read_json(evaluation.path)
    reports = [ValidationReport.from_dict(read_json(item.path)) for item in (data_report, partition_report)]
    run_id = workflow.start_tracking(config, run_name="kfp")
    for item in reports:
        workflow.record_validation(run_id, item)
    workflow.log_results(run_id, result, report)
    return workflow.register_and_promote(
        config, run_id, data, federated, result, report, all(item.success for item in reports)
    )
