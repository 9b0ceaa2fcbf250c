"""A REST client for the gateway, as one tenant over one keep-alive session (like a frontend)."""

from __future__ import annotations

import requests


class Client:
    def __init__(self, base_url: str, tenant: str, timeout_s: float = 300) -> None:
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.session = requests.Session()
        self.session.headers["x-tenant-id"] = tenant

    def __call__(self, method: str, path: str, **kwargs) -> requests.Response:
        return self.session.request(method, self.base_url + path, timeout=self.timeout_s, **kwargs)
