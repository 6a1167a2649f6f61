"""The FedMKGC pipeline, the ZenML adapter of ``fedmm.kg.run``: validate triples -> federate -> train ->
evaluate -> register + promote on MRR.

The KG path is its own short graph, not a ``fedmm.graph`` stage list: its config, artifacts and
gates differ from the sensor pipeline's. The validation gate orders federation after it.
"""

from __future__ import annotations

from zenml import Model, pipeline
from zenml.enums import ExecutionMode

from fedmm.kg.config import KGRunConfig
from fedmm_pipelines.steps.kg import evaluate_kg, federate_triples, register_kg, train_kg, validate_triples


@pipeline(enable_cache=True, execution_mode=ExecutionMode.FAIL_FAST)
def kg_pipeline(config: KGRunConfig) -> None:
    report = validate_triples(config)
    federation = federate_triples(config, after=report)
    trained = train_kg(config, federation)
    evaluation = evaluate_kg(config, federation, trained)
    register_kg(config, report, federation, trained, evaluation)


def run_kg_pipeline(config: KGRunConfig) -> dict:
    """Run the pipeline on the active (default: local) stack; returns the run summary."""
    from fedmm_pipelines.pipelines.runner import ensure_store

    ensure_store()
    model = Model(name=config.registry.model_name, description="fedmm FedMKGC model")
    run = kg_pipeline.with_options(model=model)(config)
    artifact = run.steps["register_kg"].outputs["run_summary"]
    artifact = artifact[0] if isinstance(artifact, list) else artifact
    return {**artifact.load(), "zenml_pipeline_run": str(run.id)}
