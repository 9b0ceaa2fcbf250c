"""Alembic environment of the training service's database (see mlmesh_common.db)."""

from mlmesh_common.db import run_alembic_env
from mlmesh_training.config import TrainingSettings
from mlmesh_training.storage.migrate import VERSION_TABLE
from mlmesh_training.storage.models import Base

run_alembic_env(Base.metadata, lambda: TrainingSettings().database_url, VERSION_TABLE)
