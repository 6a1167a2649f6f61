"""The FedMKGC graph's stage bodies (``fedmm.graph.FEDMKGC`` wires them; every orchestrator runs them).

validate the triples (a gate) -> federate -> train -> evaluate -> register and promote on filtered MRR.
Each stage reads the pinned graph files itself (``load_kg`` is cheap); the artifacts are the
federation, the trained model, the evaluation and the run summary.
"""

from __future__ import annotations

from collections.abc import Callable

from fedmm.data.validation import ValidationReport
from fedmm.kg.artifacts import Federation, TrainedKG
from fedmm.kg.config import KGRunConfig
from fedmm.kg.data import load_kg
from fedmm.kg.run import evaluate_graph, federate_graph, train_graph
from fedmm.kg.validation import validate_kg


def validate_triples(config: KGRunConfig) -> ValidationReport:
    """The ``kg_triples`` Great Expectations suite; a failure stops the run (nothing registered)."""
    return validate_kg(load_kg(config.run.dataset))


def federate_triples(config: KGRunConfig) -> Federation:
    """Deal the relations to the clients, embed the entity names, draw the missing modalities."""
    return federate_graph(load_kg(config.run.dataset), config.run)


def train_kg(config: KGRunConfig, kg_federation: Federation) -> TrainedKG:
    """The method's federated rounds (or the local / centralized reference)."""
    return train_graph(load_kg(config.run.dataset), kg_federation, config.run)


def evaluate_kg(config: KGRunConfig, kg_federation: Federation, kg_model: TrainedKG) -> dict:
    """Filtered test and validation MRR and Hits@k, and every test query's rank."""
    return evaluate_graph(load_kg(config.run.dataset), kg_federation, kg_model)


def register_kg(config: KGRunConfig, kg_validation_report: ValidationReport, kg_federation: Federation,
                kg_model: TrainedKG, kg_evaluation: dict, extra_tags: dict[str, str] | None = None) -> dict:
    """Log to MLflow, register the model as challenger, promote it if the MRR gates pass; the run summary."""
    from fedmm.kg.registry import record_and_register_kg

    return record_and_register_kg(config, kg_validation_report, kg_federation, kg_model, kg_evaluation,
                                  extra_tags=extra_tags)


def conclude(summary: dict, echo: Callable[[str], None]) -> str | None:
    """Print a run's metrics, gates and registry outcome; the warning line when it was not promoted."""
    echo(f"{summary['dataset']} {summary['method']}: filtered test MRR {summary['test_mrr']:.4f}, Hits@1/3/10 "
         f"{summary['test_hits@1']:.4f} / {summary['test_hits@3']:.4f} / {summary['test_hits@10']:.4f} "
         f"over {summary['test_queries']} queries")
    for gate in summary["gates"]:
        echo(f"gate {gate['name']}: {'pass' if gate['passed'] else 'FAIL'} ({gate['detail']})")
    echo(f"{summary['model_name']} v{summary['model_version']} aliases {summary['aliases']}; "
         f"MLflow run {summary['mlflow_run_id']}; ZenML run {summary['zenml_pipeline_run']}")
    if summary["promoted"]:
        return None
    return f"{summary['model_name']} v{summary['model_version']} was not promoted (a gate failed)"
