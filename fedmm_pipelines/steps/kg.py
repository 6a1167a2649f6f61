"""The FedMKGC pipeline's steps: thin calls into ``fedmm.kg`` and ``fedmm.kg.registry``."""

from typing import Annotated

from zenml import get_step_context, step

from fedmm.data.validation import ValidationReport
from fedmm.kg.artifacts import Federation, TrainedKG
from fedmm.kg.config import KGRunConfig
from fedmm.kg.data import load_kg
from fedmm.kg.registry import record_and_register_kg
from fedmm.kg.run import evaluate_graph, federate_graph, train_graph
from fedmm.kg.validation import validate_kg
from fedmm.tracking import tags as T
from fedmm_pipelines.pipelines.model_control_plane import TAG_ZENML_VERSION, mirror_aliases
from fedmm_pipelines.steps.materializers import FolderArtifactMaterializer, JsonArtifactMaterializer


@step(enable_cache=False, output_materializers=JsonArtifactMaterializer)
def validate_triples(config: KGRunConfig) -> Annotated[ValidationReport, "kg_validation_report"]:
    """The ``kg_triples`` Great Expectations suite; fails the run (nothing registered) when it fails."""
    report = validate_kg(load_kg(config.run.dataset))
    report.raise_if_failed()
    return report


@step(output_materializers=FolderArtifactMaterializer)
def federate_triples(config: KGRunConfig) -> Annotated[Federation, "kg_federation"]:
    """Deal the relations to the clients, embed the entity names, draw the missing modalities."""
    return federate_graph(load_kg(config.run.dataset), config.run)


@step(output_materializers=FolderArtifactMaterializer)
def train_kg(config: KGRunConfig, federation: Federation) -> Annotated[TrainedKG, "kg_model"]:
    """The method's federated rounds (or the local / centralized reference)."""
    return train_graph(load_kg(config.run.dataset), federation, config.run)


@step
def evaluate_kg(config: KGRunConfig, federation: Federation, trained: TrainedKG) -> Annotated[dict, "kg_evaluation"]:
    """Filtered test and validation MRR and Hits@k, and every test query's rank."""
    return evaluate_graph(load_kg(config.run.dataset), federation, trained)


@step(enable_cache=False)
def register_kg(config: KGRunConfig, report: ValidationReport, federation: Federation, trained: TrainedKG,
                evaluation: dict) -> Annotated[dict, "run_summary"]:
    """Log to MLflow, register the model, promote it if the MRR gates pass, mirror it in ZenML."""
    context = get_step_context()
    zenml_version = context.model._get_or_create_model_version()
    summary = record_and_register_kg(
        config, report, federation, trained, evaluation,
        extra_tags={TAG_ZENML_VERSION: str(zenml_version.id), T.ZENML_PIPELINE_RUN: str(context.pipeline_run.id)})
    mirror_aliases(config.registry.model_name)
    context.model.log_metadata({"mlflow_model_version": summary["model_version"], "aliases": summary["aliases"],
                                "promoted": summary["promoted"], "test_mrr": summary["test_mrr"]})
    return summary
