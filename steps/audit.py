from typing import Annotated

from zenml import step

from fedmm import workflow
from fedmm.audit.report import AuditReport
from fedmm.config import Config
from fedmm.data.federated import FederatedData
from fedmm.data.prepare import PreparedData
from fedmm.fl.result import TrainResult
from fedmm.progress import RoundProgress
from fedmm.report import print_audit
from fedmm.summary import RunSummary
from steps.materializers import FolderArtifactMaterializer


@step(output_materializers=FolderArtifactMaterializer)
def audit_contributions(
    config: Config, prepared: PreparedData, federated: FederatedData, result: TrainResult, show: bool = True
) -> Annotated[AuditReport, "contribution_audit"]:
    """Shapley values of every client in every stored round, with flags and detection quality; ``show`` prints
    the per-client table with its intervals."""
    with RoundProgress(len(result.history), "audit") as progress:
        report = workflow.audit_contributions(config, prepared, federated, result, progress.step)
    if show:
        print_audit(report)
    return report


@step(enable_cache=False)
def log_audit(run_id: str, report: AuditReport) -> None:
    """The audit's tables, JSON and plots into the pipeline run's MLflow run."""
    workflow.record_audit(run_id, report)


@step(enable_cache=False)
def attach_audit(report: AuditReport, run_summary: RunSummary) -> None:
    """Log an audit of a past run to that run's MLflow run and tag its model version."""
    workflow.attach_audit(report, run_summary)
