"""Credentials end to end, against the real registry: where `airgap login` stores them, how the other commands
find them, credential helpers, and what a refusal says.

Every failure is ONE ``airgap: error:`` line naming the registry (or the file, or the helper) and saying what
to do, with the exit code of its class in airgap/errors.py, and never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import RunAirgap
from harness import RegistryServer
from test_import_faults import assert_error_line

PASSWORD = "s3cret-pass"


def docker_config(env: dict[str, str]) -> Path:
    return Path(env["DOCKER_CONFIG"]) / "config.json"


def write_json(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


# --------------------------------------------------------------------------- 1. where login stores


def test_login_with_a_creds_store_that_is_not_installed(htpasswd_registry: RegistryServer, run_airgap: RunAirgap,
                                                        airgap_env: dict[str, str]) -> None:
    """The store's helper is missing: the lookup's clear line, exit 2 (it was an internal error, exit 70)."""
    config = docker_config(airgap_env)
    write_json(config, {"credsStore": "missing"})
    r = run_airgap("login", htpasswd_registry.host, "-u", "alice", "--password-stdin", input=PASSWORD + "\n")
    line = assert_error_line(r, "credential helper docker-credential-missing", htpasswd_registry.host,
                             "is not installed: install it, or remove it from your docker config.json", exit_code=2)
    assert "internal error" not in line and PASSWORD not in r.output
    assert json.loads(config.read_text()) == {"credsStore": "missing"}
