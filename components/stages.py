"""kfp v2 lightweight components, one per stage of ``fedmm.graph``, over the same fedmm functions.

Each component runs in the image ``FEDMM_IMAGE``, built from this repository (it has fedmm,
its locked dependencies and kfp installed); ``infra/README.md`` describes building and
pushing it. kfp copies only the function body into the container, so every import happens
inside the body and nothing is pip-installed at run time.

A component's parameters are its stage's input and output artifacts, by the graph's names;
its body hands their paths to ``fedmm.stages.run_json``, which stores them as DVC's stages
do (folders and JSON files; a skipped stage writes an explicit record). The config travels
as a JSON string and is validated again in each task. A validation component raises when its
suite fails, so no downstream task runs.
"""

# No `from __future__ import annotations`: kfp reads the annotations as real types.
from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

FEDMM_IMAGE = "fedmm:0.1.0"
"""The image every component runs in: the repository installed over requirements.lock."""

component = dsl.component(base_image=FEDMM_IMAGE, install_kfp_package=False)


@component
def prepare(config_json: str, prepared: Output[Dataset]):
    """Load, window and split the data."""
    from fedmm.stages import run_json

    run_json("prepare", config_json, prepared=prepared.path)


@component
def validate_data(config_json: str, prepared: Input[Dataset], data_report: Output[Artifact]):
    """Great Expectations suite over the prepared data; raises (fails the run) when it fails."""
    from fedmm.stages import run_json

    run_json("validate-data", config_json, prepared=prepared.path, data_report=data_report.path)


@component
def partition(config_json: str, prepared: Input[Dataset], federated: Output[Dataset]):
    """Split the training pool across clients and draw the modality masks."""
    from fedmm.stages import run_json

    run_json("partition", config_json, prepared=prepared.path, federated=federated.path)


@component
def validate_partitions(config_json: str, federated: Input[Dataset], partition_report: Output[Artifact]):
    """Great Expectations suite over client sizes and realised missing rates; raises when it fails."""
    from fedmm.stages import run_json

    run_json("validate-partitions", config_json, federated=federated.path, partition_report=partition_report.path)


@component
def train(config_json: str, prepared: Input[Dataset], federated: Input[Dataset], result: Output[Model]):
    """Federated rounds (and the centralized reference); ``train.device: auto`` picks the GPU."""
    from fedmm.stages import run_json

    run_json("train", config_json, prepared=prepared.path, federated=federated.path, result=result.path)


@component
def evaluate(
    config_json: str,
    prepared: Input[Dataset],
    federated: Input[Dataset],
    result: Input[Model],
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
):
    """Both test protocols, the centralized gap and per-client scores; headline numbers as kfp metrics."""
    from fedmm.stages import run_json

    report = run_json("evaluate", config_json, prepared=prepared.path, federated=federated.path,
                      result=result.path, evaluation=evaluation.path)
    for name, value in report.headline().items():
        metrics.log_metric(name, value)


@component
def audit(
    config_json: str, prepared: Input[Dataset], federated: Input[Dataset], result: Input[Model], audit: Output[Artifact]
):
    """Shapley audit of every stored round (a record that there is nothing to audit without parameter deltas)."""
    from fedmm.stages import run_json

    run_json("audit", config_json, prepared=prepared.path, federated=federated.path, result=result.path,
             audit=audit.path)


@component
def evaluate_imputation(
    config_json: str,
    prepared: Input[Dataset],
    federated: Input[Dataset],
    result: Input[Model],
    imputation: Output[Artifact],
):
    """Fit the configured imputers federatedly and score them (a skipped record unless ``impute.evaluate``)."""
    from fedmm.stages import run_json

    run_json("evaluate-imputation", config_json, prepared=prepared.path, federated=federated.path,
             result=result.path, imputation=imputation.path)


@component
def register(
    config_json: str,
    prepared: Input[Dataset],
    federated: Input[Dataset],
    result: Input[Model],
    evaluation: Input[Artifact],
    data_report: Input[Artifact],
    partition_report: Input[Artifact],
    audit: Input[Artifact],
    imputation: Input[Artifact],
    tracking_uri: str = "",
) -> dict:
    """Log to MLflow, register the model as ``challenger``, promote it if the gates pass.

    ``tracking_uri`` is the MLflow server (in production the in-cluster one); empty means
    fedmm's default, a SQLite store under ``$FEDMM_HOME``. Returns the run summary's JSON.
    """
    import os

    from fedmm.stages import run_json

    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    return run_json(
        "register", config_json, prepared=prepared.path, federated=federated.path, result=result.path,
        evaluation=evaluation.path, data_report=data_report.path, partition_report=partition_report.path,
        audit=audit.path, imputation=imputation.path,
    ).to_dict()


COMPONENTS = {
    "prepare": prepare,
    "validate-data": validate_data,
    "partition": partition,
    "validate-partitions": validate_partitions,
    "train": train,
    "evaluate": evaluate,
    "audit": audit,
    "evaluate-imputation": evaluate_imputation,
    "register": register,
}
"""The component of each graph stage (a test checks names and parameters against ``fedmm.graph``)."""
