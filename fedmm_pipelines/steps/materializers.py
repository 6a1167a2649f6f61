"""ZenML materializers of fedmm's artifacts: folders through their own ``save``/``load``, typed records as JSON."""

from __future__ import annotations

import json
import os
from typing import Any, ClassVar

from zenml.enums import ArtifactType
from zenml.materializers.base_materializer import BaseMaterializer
from zenml.utils import io_utils

from fedmm.artifacts import json_bytes
from fedmm.audit.report import AuditReport
from fedmm.data.federated import FederatedData
from fedmm.data.prepare import PreparedData
from fedmm.data.validation import ValidationReport
from fedmm.evaluation import EvaluationReport
from fedmm.fl.deployed import CoordinatorData
from fedmm.fl.result import TrainResult
from fedmm.impute.report import ImputationReport
from fedmm.kg.artifacts import Federation, TrainedKG
from fedmm.summary import RunSummary


class FolderArtifactMaterializer(BaseMaterializer):
    """Stores an object through its own ``save(folder)`` / ``load(folder)`` (pickle-free)."""

    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (
        PreparedData, FederatedData, TrainResult, AuditReport, ImputationReport, Federation, TrainedKG, CoordinatorData)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.DATA

    def save(self, data: Any) -> None:
        with self.get_temporary_directory(delete_at_exit=True) as tmp:
            data.save(tmp)
            io_utils.copy_dir(tmp, self.uri, overwrite=True)

    def load(self, data_type: type[Any]) -> Any:
        with self.get_temporary_directory(delete_at_exit=False) as tmp:
            io_utils.copy_dir(self.uri, tmp)
            return data_type.load(os.path.join(tmp))


class JsonArtifactMaterializer(BaseMaterializer):
    """Stores a typed record as the JSON of its ``to_dict`` (the same file the DVC and kfp stages write);
    ``from_dict`` reads it back."""

    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (ValidationReport, EvaluationReport, RunSummary)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.DATA
    FILE = "record.json"

    def save(self, data: Any) -> None:
        with self.artifact_store.open(os.path.join(self.uri, self.FILE), "wb") as handle:
            handle.write(json_bytes(data.to_dict()))

    def load(self, data_type: type[Any]) -> Any:
        with self.artifact_store.open(os.path.join(self.uri, self.FILE), "r") as handle:
            return data_type.from_dict(json.load(handle))
