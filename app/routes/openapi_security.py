"""The OpenAPI document's security as the server enforces it: a bearer scheme is declared only when its key is set,
and only on the operations that check it.

FastAPI declares `API_KEY`'s scheme on every route that depends on `require_api_key`, whether or not the server
has a key, so a client (or a fuzzer) reading the document of an open server would expect a 401 it never gets.
`ACT_API_KEY` is checked by hand on the hot path (POST /act and the inference routes), so those operations name
its scheme themselves (`NEEDS_ACT_KEY` in their `openapi_extra`). Every time the document is served, each scheme
whose key is not set is taken out of it, and the schemes whose key is set are described in its components.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from app.routes.deps import API_KEY_SCHEME
from app.settings import Settings

ACT_KEY_SCHEME = "ActApiKey"
NEEDS_ACT_KEY: dict[str, Any] = {"security": [{ACT_KEY_SCHEME: []}]}
_ACT_KEY_DOC = {
    "type": "http",
    "scheme": "bearer",
    "description": "`Authorization: Bearer <ACT_API_KEY>`: POST /act and the inference routes.",
}


def install_openapi_security(app: FastAPI, settings: Settings) -> None:
    """Make `app.openapi()` (served at /openapi.json) declare exactly the keys `settings` set."""
    generate = app.openapi
    keys_set = {
        scheme
        for scheme, key in ((API_KEY_SCHEME, settings.api_key), (ACT_KEY_SCHEME, settings.act_api_key))
        if key is not None
    }

    def openapi() -> dict[str, Any]:
        # FastAPI caches the document and regenerates it when routes change; this edit is idempotent either way.
        document = generate()
        declare_security(document, keys_set)
        return document

    # FastAPI's documented way to customise the document: replace the method on the instance.
    app.openapi = openapi  # type: ignore[method-assign]


def declare_security(document: dict[str, Any], keys_set: set[str]) -> None:
    """Drop every security requirement (and scheme) whose key is not in `keys_set`; describe those that are."""
    for item in document.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict) or "security" not in operation:
                continue
            kept = [requirement for requirement in operation["security"] if set(requirement) <= keys_set]
            if kept:
                operation["security"] = kept
            else:
                del operation["security"]
    components = document.setdefault("components", {})
    schemes = components.get("securitySchemes", {})
    if ACT_KEY_SCHEME in keys_set:
        schemes[ACT_KEY_SCHEME] = _ACT_KEY_DOC
    schemes = {name: scheme for name, scheme in schemes.items() if name in keys_set}
    if schemes:
        components["securitySchemes"] = schemes
    else:
        components.pop("securitySchemes", None)
