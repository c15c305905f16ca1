"""Bearer-key checks. Constant-time comparison; the key itself is never logged or echoed."""

from __future__ import annotations

import hmac

from pydantic import SecretStr

from app.infra.errors import ApiError


def check_bearer(authorization: str | None, expected: SecretStr | None) -> None:
    """Raise 401 unless `Authorization: Bearer <expected>` (no-op when no key is configured)."""
    if expected is None:
        return
    scheme, _, token = (authorization or "").partition(" ")
    # compare_digest on bytes: its time does not depend on where the first differing byte is.
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), expected.get_secret_value().encode()
    ):
        raise ApiError(
            401,
            "unauthorized",
            "missing or invalid API key (Authorization: Bearer <key>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
