"""The training service's use cases wired over one store: the catalog of models and datasets
(`catalog.py`), the train/tune/AutoML jobs (`jobs.py`) and the background tasks they run in
(`tasks.py`). Transport calls these parts; none of them sees a proto."""

from __future__ import annotations

from collections.abc import Callable

from mlmesh_common.artifacts import ArtifactStore
from mlmesh_common.resources import now_ms
from mlmesh_training.catalog import Catalog
from mlmesh_training.jobs import Jobs
from mlmesh_training.lineage import ExperimentsRecorder, MlflowRecorder
from mlmesh_training.storage.base import TrainingStore
from mlmesh_training.tasks import Leases, TaskRunner
from mlmesh_training.tuning import Tuner


class TrainingService:
    def __init__(
        self,
        store: TrainingStore,
        artifacts: ArtifactStore,
        mlflow: MlflowRecorder,
        experiments: ExperimentsRecorder,
        git_commit: str,
        tuner: Tuner,
        clock: Callable[[], int] = now_ms,
        leases: Leases | None = None,
    ) -> None:
        self.tasks = TaskRunner(store, clock, leases)
        self.catalog = Catalog(store, artifacts, clock)
        self.jobs = Jobs(
            store,
            self.catalog,
            artifacts,
            mlflow,
            experiments,
            git_commit,
            tuner,
            self.tasks,
            clock,
        )
