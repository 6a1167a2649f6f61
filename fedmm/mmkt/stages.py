"""The FedMMKT graph's stage bodies (``fedmm.graph.FEDMMKT`` wires them; every orchestrator runs them).

prepare UCI Multiple Features, ``pix`` as 16x16 images (``data.square_images``) -> validate it (a gate)
-> partition and mask it ->
validate the partitions (a gate) -> the method's rounds on the round engine (FedMMKT co-enhancing the
generator) -> client and generator metrics -> register the task model and the generator and promote
them by their gates. The run config is a ``task: fedmmkt`` file (:class:`MMKTRunConfig`); its
federation config is ``run.base`` with ``run.set`` (:func:`federation_config`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

from fedmm.data.federated import FederatedData, partition_and_mask
from fedmm.data.prepare import PreparedData, prepare
from fedmm.data.validation import ValidationReport
from fedmm.fl.history import RoundRecord
from fedmm.fl.result import TrainResult
from fedmm.mmkt.config import MMKTRunConfig
from fedmm.mmkt.evaluate import client_metrics, generator_images, generator_metrics
from fedmm.mmkt.federation import Federation, federation_config, train_federation
from fedmm.mmkt.strategy import generator_of
from fedmm.progress import RoundProgress


def federation(config: MMKTRunConfig, prepared: PreparedData, federated: FederatedData) -> Federation:
    """The federation of the prepared (square-image) data and its partition."""
    return Federation.build(federation_config(config.cell()), prepared, federated)


def preflight(config: MMKTRunConfig) -> list[str]:
    """The federation config (``run.base`` with ``run.set``) loads and validates: a bad one is one line before any work."""
    from fedmm.config import ConfigError

    try:
        federation_config(config.cell())
    except ConfigError as error:
        raise ConfigError(f"run.base / run.set: {error}") from None
    return []


def prepare_digits(config: MMKTRunConfig) -> PreparedData:
    """UCI Multiple Features with ``pix`` as 16x16 images (split, statistics, hashes): what the data gate validates."""
    fed_config = federation_config(config.cell())
    return prepare(fed_config.data, fed_config.seed)


def validate_digits(config: MMKTRunConfig, mmkt_prepared: PreparedData) -> ValidationReport:
    """The prepared-data Great Expectations suite of the training graph; a failure stops the run."""
    from fedmm.workflow import validate_data

    return validate_data(federation_config(config.cell()), mmkt_prepared)


def partition_digits(config: MMKTRunConfig, mmkt_prepared: PreparedData) -> FederatedData:
    """The Dirichlet partition and modality mask of the square-image data."""
    fed_config = federation_config(config.cell())
    return partition_and_mask(mmkt_prepared, fed_config.partition, fed_config.mask, fed_config.seed,
                              fed_config.corruption)


def validate_digit_partitions(config: MMKTRunConfig, mmkt_federated: FederatedData) -> ValidationReport:
    """The partition suite (client sizes, realised missing rates); a failure stops the run."""
    from fedmm.workflow import check_partitions

    return check_partitions(federation_config(config.cell()), mmkt_federated)


@contextmanager
def training_progress(config: MMKTRunConfig, inputs: dict):
    """A bar over the rounds."""
    with RoundProgress(federation_config(config.cell()).train.rounds, config.run.method) as progress:
        yield {"on_round": progress.update}


def train_digits(config: MMKTRunConfig, mmkt_prepared: PreparedData, mmkt_federated: FederatedData,
                 on_round: Callable[[RoundRecord], None] | None = None) -> TrainResult:
    """The method's rounds, resumed from their round checkpoint after a kill (its server state: the generator)."""
    return train_federation(config.cell(), federation(config, mmkt_prepared, mmkt_federated), on_round=on_round)


def evaluate_digits(config: MMKTRunConfig, mmkt_prepared: PreparedData, mmkt_federated: FederatedData,
                    mmkt_result: TrainResult) -> dict:
    """Task-model accuracy and macro-F1 per test view; for ``fedmmkt`` the generator's metrics before and after."""
    built = federation(config, mmkt_prepared, mmkt_federated)
    metrics = client_metrics(mmkt_result.model(), built.evaluation)
    run = config.run
    if run.method == "fedmmkt":
        generator = generator_of(mmkt_result.server_state, run.strategy_section())
        metrics.update(generator_metrics(built, *generator_images(run, generator).values()))
    return metrics


def register_digits(config: MMKTRunConfig, mmkt_data_report: ValidationReport,
                    mmkt_partition_report: ValidationReport, mmkt_prepared: PreparedData,
                    mmkt_federated: FederatedData, mmkt_result: TrainResult, mmkt_evaluation: dict,
                    extra_tags: dict[str, str] | None = None) -> dict:
    """Log the run to MLflow, register the task model (and for ``fedmmkt`` the generator), promote by the gates."""
    from fedmm.mmkt.tracking import record_and_register

    return record_and_register(config, [mmkt_data_report, mmkt_partition_report],
                               federation(config, mmkt_prepared, mmkt_federated), mmkt_result, mmkt_evaluation,
                               extra_tags or {})


def conclude(summary: dict, echo: Callable[[str], None]) -> str | None:
    """Print the run's metrics, gates and registry outcome; the warning line when the task model was not promoted."""
    echo(f"{summary['method']} seed {summary['seed']}: test macro-F1 {summary['test_macro_f1']:.4f}"
         + (f", generator fidelity {summary['server_before_fidelity']:.3f} -> {summary['server_after_fidelity']:.3f}"
            if "server_after_fidelity" in summary else ""))
    for model in summary["models"]:
        for gate in model["gates"]:
            echo(f"{model['model_name']} gate {gate['name']}: {'pass' if gate['passed'] else 'FAIL'} ({gate['detail']})")
        echo(f"{model['model_name']} v{model['model_version']} aliases {model['aliases']}")
    echo(f"MLflow run {summary['mlflow_run_id']}; ZenML run {summary['zenml_pipeline_run']}")
    if summary["promoted"]:
        return None
    return f"{summary['model_name']} v{summary['model_version']} was not promoted (a gate failed)"
