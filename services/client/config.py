"""Where a client connects and how it proves who it is, from arguments or the environment.

Transport settings are the services' own (`NIJA_TLS_CA`, `NIJA_TLS_CERT`, `NIJA_TLS_KEY`,
`NIJA_TLS_CLIENT_AUTH`, `NIJA_ALLOW_PLAINTEXT_REMOTE`, read by `load_security`); the bearer token
is the caller's (`NIJA_TOKEN` or `NIJA_TOKEN_FILE`). A service token that happens to be in the
environment (`NIJA_SERVICE_TOKEN*`) is never picked up: a client speaks for its user, not as a
mesh service.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from services.domain.brokers import DEFAULT_PORTS
from services.runtime.security import Security, load_security, token_from_env

#: Service -> the environment variable naming its target ("host:port").
TARGET_VARIABLES = {"router": "NIJA_ROUTER", "aggregator": "NIJA_AGGREGATOR", "permission": "NIJA_PERMISSION"}


def client_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment without the variables that carry a service's own identity."""
    env = os.environ if environ is None else environ
    return {k: v for k, v in env.items() if not k.startswith("NIJA_SERVICE_TOKEN")}


def client_token(environ: Mapping[str, str] | None = None) -> str:
    """$NIJA_TOKEN, or the contents of $NIJA_TOKEN_FILE; "" when neither is set."""
    return token_from_env(os.environ if environ is None else environ, "NIJA_TOKEN")


def client_security(environ: Mapping[str, str] | None = None, token: str | None = None) -> Security:
    """TLS settings from NIJA_TLS_*, with `token` (default: NIJA_TOKEN / NIJA_TOKEN_FILE)."""
    env = client_environ(environ)
    security = load_security(env)
    return dataclasses.replace(security, token=client_token(env) if token is None else token)


def client_target(service: str, explicit: str | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    """`explicit`, else $NIJA_<SERVICE>, else the router's default local port (the router is
    the front door; the others are optional and stay None unless named)."""
    if explicit:
        return explicit
    env = os.environ if environ is None else environ
    named = env.get(TARGET_VARIABLES[service], "")
    if named:
        return named
    return f"127.0.0.1:{DEFAULT_PORTS['router']}" if service == "router" else None
