"""The artifacts of a finished training pipeline run, for pipelines that analyse it later."""

from __future__ import annotations

from uuid import UUID

from zenml.client import Client

from fedmm.errors import PastRunError

# (step name, output name) of what later analyses read from a training run
TRAINING_OUTPUTS = {
    "prepared": ("prepare_data", "prepared_data"),
    "federated": ("partition_clients", "client_partitions"),
    "result": ("train_federated", "training_result"),
    "run_summary": ("register_and_promote", "run_summary"),
}


def training_artifacts(training_run_id: str) -> dict:
    """The artifact versions of a finished training run (prepared data, partitions, result, summary)."""
    try:
        run = Client().get_pipeline_run(UUID(training_run_id))
    except (KeyError, ValueError):
        raise PastRunError(f"no ZenML pipeline run {training_run_id!r}") from None
    found = {}
    for key, (step, output) in TRAINING_OUTPUTS.items():
        if step not in run.steps or output not in run.steps[step].outputs:
            raise PastRunError(
                f"pipeline run {training_run_id} has no {step}.{output}: only finished training runs can be analysed"
            )
        found[key] = run.steps[step].outputs[output][0]
    return found
