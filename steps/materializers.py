"""One ZenML materializer for every fedmm artifact: each saves to and loads from a folder."""

from __future__ import annotations

import os
from typing import Any, ClassVar

from zenml.enums import ArtifactType
from zenml.materializers.base_materializer import BaseMaterializer
from zenml.utils import io_utils

from fedmm.audit.report import AuditReport
from fedmm.data.federated import FederatedData
from fedmm.data.prepare import PreparedData
from fedmm.fl.result import TrainResult
from fedmm.impute.report import ImputationReport
from fedmm.kg.artifacts import Federation, TrainedKG


class FolderArtifactMaterializer(BaseMaterializer):
    """Stores an object through its own ``save(folder)`` / ``load(folder)`` (pickle-free)."""

    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (
        PreparedData, FederatedData, TrainResult, AuditReport, ImputationReport, Federation, TrainedKG)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.DATA

    def save(self, data: Any) -> None:
        with self.get_temporary_directory(delete_at_exit=True) as tmp:
            data.save(tmp)
            io_utils.copy_dir(tmp, self.uri, overwrite=True)

    def load(self, data_type: type[Any]) -> Any:
        with self.get_temporary_directory(delete_at_exit=False) as tmp:
            io_utils.copy_dir(self.uri, tmp)
            return data_type.load(os.path.join(tmp))
