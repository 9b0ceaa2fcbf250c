"""Shared bootstrap for the mlmesh services: server, configuration, errors, tenancy, logging."""
