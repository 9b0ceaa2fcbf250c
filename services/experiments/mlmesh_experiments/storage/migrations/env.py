"""Alembic environment of the experiments service's database (see mlmesh_common.db)."""

from mlmesh_common.db import run_alembic_env
from mlmesh_experiments.config import ExperimentsSettings
from mlmesh_experiments.storage.models import Base

run_alembic_env(Base.metadata, lambda: ExperimentsSettings().database_url)
