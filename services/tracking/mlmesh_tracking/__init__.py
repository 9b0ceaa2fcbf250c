"""mlmesh tracking service: search, inspect and compare the runs of an MLflow tracking server."""
