"""`python -m gateway [ENVOY_ARGS...]`: renders the Envoy config from this environment's
settings (`GatewaySettings`: MLMESH_GATEWAY_*, MLMESH_AUTH, MLMESH_JWT_*, MLMESH_CORS_ORIGINS)
and the descriptor set beside it, then becomes Envoy. The gateway image's entry point: the
gateway reads its configuration from the environment at start, as every service does."""

from __future__ import annotations

import os
import sys

from gateway.envoy_config import GatewaySettings, write_config


def main(argv: list[str] | None = None) -> None:
    settings = GatewaySettings()
    config = write_config(settings, settings.config_path)
    args = sys.argv[1:] if argv is None else argv
    os.execvp(settings.envoy_bin, [settings.envoy_bin, "-c", str(config), *args])


if __name__ == "__main__":
    main()
