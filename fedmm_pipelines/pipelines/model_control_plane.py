"""Mirror the MLflow registry's aliases into ZenML's Model Control Plane stages."""

from __future__ import annotations

from uuid import UUID

from zenml.client import Client
from zenml.enums import ModelStages

from fedmm.tracking import registry
from fedmm.tracking import tags as T

TAG_ZENML_VERSION = T.ZENML_MODEL_VERSION
STAGE_OF_ALIAS = {
    registry.CHALLENGER: ModelStages.STAGING,
    registry.PREVIOUS: ModelStages.ARCHIVED,
    registry.CHAMPION: ModelStages.PRODUCTION,
}


def mirror_aliases(model_name: str) -> dict[str, str]:
    """Set the stage of every aliased version's ZenML twin; returns version id -> stage."""
    mlflow_client = registry.client()
    zenml_client = Client()
    mirrored = {}
    for alias, stage in STAGE_OF_ALIAS.items():
        version = registry.aliases(model_name).get(alias)
        if version is None:
            continue
        twin = mlflow_client.get_model_version(model_name, version).tags.get(TAG_ZENML_VERSION)
        if twin is None:
            continue
        zenml_client.update_model_version(model_name, UUID(twin), stage=stage, force=True)
        mirrored[twin] = stage.value
    return mirrored
