"""Credentials end to end, against the real registry: where `airgap login` stores them, how the other commands
find them, credential helpers, and what a refusal says.

Every failure is ONE ``airgap: error:`` line naming the registry (or the file, or the helper) and saying what
to do, with the exit code of its class in airgap/errors.py, and never a traceback.
"""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path

import pytest
from conftest import RegistryFactory, RunAirgap
from harness import RegistryServer, TokenServer
from test_import_faults import Bundle, assert_complete, assert_error_line, bundle_2m, import_args

__all__ = ["bundle_2m"]

PASSWORD = "s3cret-pass"


def docker_config(env: dict[str, str]) -> Path:
    return Path(env["DOCKER_CONFIG"]) / "config.json"


def write_json(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def counting_helper(tmp_path: Path, answer: dict[str, str]) -> tuple[dict[str, str], Path]:
    """A ``docker-credential-counting`` on PATH that logs each call (``get HOST``) and gives ``answer``: the
    environment to run airgap with, and the log."""
    bindir, log = tmp_path / "bin", tmp_path / "helper-calls.log"
    bindir.mkdir(exist_ok=True)
    script = bindir / "docker-credential-counting"
    script.write_text(f"#!/bin/sh\necho \"$1 $(cat)\" >> {log}\n"
                      f"if [ \"$1\" = get ]; then echo '{json.dumps(answer)}'; fi\n")
    script.chmod(0o755)
    return {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}, log


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


def test_login_writes_registry_auth_file_when_it_is_set(htpasswd_registry: RegistryServer,
                                                       demo_registry: RegistryServer, run_airgap: RunAirgap,
                                                       airgap_env: dict[str, str], tmp_path: Path) -> None:
    """An old entry in REGISTRY_AUTH_FILE (read first by every lookup) shadowed a login written to docker's
    config.json: the copy after it was refused with "run `airgap login`", which did the same again."""
    host = htpasswd_registry.host
    auth_file = tmp_path / "auth.json"
    write_json(auth_file, {"auths": {host: {"auth": b64("alice:an-old-password")}}})
    env = {"REGISTRY_AUTH_FILE": str(auth_file)}
    r = run_airgap("login", host, "-u", "alice", "--password-stdin", input=PASSWORD + "\n", env=env)
    assert r.returncode == 0, r.output
    assert r.stdout.strip() == f"Login succeeded; credentials for {host} stored in {auth_file} (REGISTRY_AUTH_FILE)"
    assert json.loads(auth_file.read_text()) == {"auths": {host: {"auth": b64(f"alice:{PASSWORD}")}}}
    assert not docker_config(airgap_env).exists()
    r = run_airgap("copy", demo_registry.ref("demo/base-a:1.0"), f"{host}/x/base-a", env=env)
    assert r.returncode == 0, r.output


def test_login_replaces_a_stale_entry_under_another_spelling(htpasswd_registry: RegistryServer,
                                                             demo_registry: RegistryServer, run_airgap: RunAirgap,
                                                             airgap_env: dict[str, str]) -> None:
    """A stale ``https://HOST`` key, first in config.json, shadowed a fresh `airgap login HOST` (a new key next to
    it): the copy after the login was refused, and its hint said to log in again."""
    host = htpasswd_registry.host
    config = docker_config(airgap_env)
    write_json(config, {"auths": {f"https://{host}": {"auth": b64("alice:an-old-password")},
                                  f"http://{host}/v2/": {"auth": b64("alice:older")}}})
    r = run_airgap("login", host, "-u", "alice", "--password-stdin", input=PASSWORD + "\n")
    assert r.returncode == 0, r.output
    assert json.loads(config.read_text()) == {"auths": {host: {"auth": b64(f"alice:{PASSWORD}")}}}
    r = run_airgap("copy", demo_registry.ref("demo/base-a:1.0"), f"{host}/x/base-a")
    assert r.returncode == 0, r.output


# --------------------------------------------------------------------------- 2. how lookups find them


@pytest.mark.parametrize("auth", ["htpasswd", "token"])
def test_a_credential_helper_runs_once_per_registry_per_run(auth: str, bundle_2m: Bundle,
                                                             registry_factory: RegistryFactory, run_airgap: RunAirgap,
                                                             airgap_env: dict[str, str], tmp_path: Path) -> None:
    """The session asked the keychain on every request, and the keychain ran the helper (and read the config
    files) each time: a 7-image import ran `docker-credential-X get` 125 times. Once per host per run now, with
    4 threads pushing."""
    target = registry_factory(auth=auth)
    env, log = counting_helper(tmp_path, {"ServerURL": target.host, "Username": "alice", "Secret": PASSWORD})
    write_json(docker_config(airgap_env), {"credsStore": "counting"})
    r = run_airgap(*import_args(bundle_2m, target.host, tmp_path / "state", "--jobs", "4"), env=env)
    assert_complete(target, bundle_2m, run=r, creds=target.creds)
    calls = log.read_text().splitlines()
    print(f"{auth}: import of {len(bundle_2m.manifest.images)} images ran the helper {len(calls)} time(s)")
    assert calls == [f"get {target.host}"]


# --------------------------------------------------------------------------- 3. what a refusal says


def pull_only(user: str | None, scope_type: str, name: str, actions: list[str], server: TokenServer) -> list[str]:
    """A token policy: everyone may pull, nobody may push."""
    return ["pull"] if scope_type == "repository" and "pull" in actions else []


def nothing_on_secret(user: str | None, scope_type: str, name: str, actions: list[str],
                      server: TokenServer) -> list[str]:
    """A token policy: authenticated users get everything, except on repositories under ``secret/``."""
    return [] if user is None or name.startswith("secret/") else list(actions)


def test_insufficient_scope_says_which_permission_is_lacking(demo_registry: RegistryServer, token_server: TokenServer,
                                                             registry_factory: RegistryFactory, run_airgap: RunAirgap,
                                                             tmp_path: Path) -> None:
    """Accepted credentials whose token lacks push (or pull): distribution answers 401 with
    error="insufficient_scope". It was reported as "the registry refused these credentials; check them or run
    `airgap login`", which sent the user to log in again with the same (valid) credentials."""
    target = registry_factory(auth="token", token_server=token_server)
    host = target.host
    r = run_airgap("login", host, "-u", "alice", "--password-stdin", input=PASSWORD + "\n")
    assert r.returncode == 0, r.output

    token_server.policy = pull_only
    r = run_airgap("copy", demo_registry.ref("demo/base-a:1.0"), f"{host}/team/base-a")
    line = assert_error_line(r, f"{host}/team/base-a", "401", "user 'alice'", "lacks push permission",
                             "ask the registry's admin")
    assert "refused these credentials" not in line and "airgap login" not in line, line
    print(line)

    token_server.policy = nothing_on_secret
    r = run_airgap("keygen", str(tmp_path / "k"))
    assert r.returncode == 0, r.output
    r = run_airgap("export", f"{host}/secret/app:1.0", "--output", str(tmp_path / "b"), "--key", str(tmp_path / "k"))
    line = assert_error_line(r, f"{host}/secret/app", "401", "user 'alice'", "lacks pull permission",
                             "ask the registry's admin")
    assert "refused these credentials" not in line and "airgap login" not in line, line
    print(line)


def test_insufficient_scope_for_anonymous_access_asks_for_credentials(demo_registry: RegistryServer,
                                                                      registry_factory: RegistryFactory,
                                                                      run_airgap: RunAirgap) -> None:
    """Without credentials, a push refused for lack of scope needs credentials, not the admin."""
    target = registry_factory(auth="token", anonymous_pull=True)
    r = run_airgap("copy", demo_registry.ref("demo/base-a:1.0"), f"{target.host}/team/base-a")
    line = assert_error_line(r, f"{target.host}/team/base-a", "401", f"airgap login {target.host}")
    assert "lacks" not in line and "admin" not in line, line


def user_options(line: str) -> set[str]:
    """The user-name options a line names (``--username``, ``--src-username``, ``--dest-username``)."""
    return set(re.findall(r"--(?:src-|dest-)?username", line))


def test_401_hints_name_only_the_options_of_the_command(htpasswd_registry: RegistryServer,
                                                        demo_registry: RegistryServer, bundle_2m: Bundle,
                                                        run_airgap: RunAirgap, tmp_path: Path) -> None:
    """A 401 without credentials said "run `airgap login HOST` or pass --username" whatever the command: export
    has no credential option, copy has --src-username / --dest-username."""
    host = htpasswd_registry.host
    key = tmp_path / "k"
    assert run_airgap("keygen", str(key)).returncode == 0
    r = run_airgap("export", f"{host}/team/app:1.0", "--output", str(tmp_path / "b"), "--key", str(key))
    line = assert_error_line(r, f"{host}/team/app", "401", f"run `airgap login {host} -u USER --password-stdin`")
    assert user_options(line) == set(), line
    r = run_airgap("copy", demo_registry.ref("demo/base-a:1.0"), f"{host}/team/base-a")
    line = assert_error_line(r, f"{host}/team/base-a", "401", f"run `airgap login {host} -u USER --password-stdin`",
                             "--dest-username USER (password on --password-stdin or in AIRGAP_DEST_PASSWORD)")
    assert user_options(line) == {"--dest-username"}, line
    r = run_airgap("copy", f"{host}/team/base-a:1.0", f"{demo_registry.host}/team/base-a")
    line = assert_error_line(r, f"{host}/team/base-a", "401", f"run `airgap login {host} -u USER --password-stdin`",
                             "--src-username USER (password on --password-stdin or in AIRGAP_SRC_PASSWORD)")
    assert user_options(line) == {"--src-username"}, line
    r = run_airgap(*import_args(bundle_2m, host, tmp_path / "state"))
    line = assert_error_line(r, host, "401", f"run `airgap login {host} -u USER --password-stdin`",
                             "--username USER (password on --password-stdin or in AIRGAP_PASSWORD)")
    assert user_options(line) == {"--username"}, line
    print(line)


@pytest.mark.parametrize("auth", ["htpasswd", "token"])
def test_a_failed_login_does_not_say_to_log_in(auth: str, registry_factory: RegistryFactory,
                                               run_airgap: RunAirgap) -> None:
    target = registry_factory(auth=auth)
    r = run_airgap("login", target.host, "-u", "alice", "--password-stdin", input="not-the-password\n")
    line = assert_error_line(r, target.host, "refused", "check the user name and password")
    assert "airgap login" not in line and user_options(line) == set(), line
    print(line)


@pytest.mark.parametrize(("command", "option"), [("copy", "--src-username or --dest-username"),
                                                  ("import", "--username"), ("inventory", "--username")])
def test_password_stdin_without_a_user_name_is_refused(command: str, option: str, htpasswd_registry: RegistryServer,
                                                       demo_registry: RegistryServer, bundle_2m: Bundle,
                                                       run_airgap: RunAirgap, tmp_path: Path) -> None:
    """`copy --password-stdin` without a user name read the password and dropped it: the copy then ran with
    whatever else it found (here none: a 401 that said to log in)."""
    host = htpasswd_registry.host
    args = {"copy": ["copy", demo_registry.ref("demo/base-a:1.0"), f"{host}/team/base-a"],
            "import": import_args(bundle_2m, host, tmp_path / "state"),
            "inventory": ["inventory", "--registry", host, "--repo", "team/base-a", "--output",
                          str(tmp_path / "inv.json")]}[command]
    r = run_airgap(*args, "--password-stdin", input=PASSWORD + "\n")
    assert_error_line(r, f"--password-stdin was given without {option}", f"add {option} USER", exit_code=2)
    assert PASSWORD not in r.output
    with htpasswd_registry.client(auth=("alice", PASSWORD)) as client:
        assert client.get("/v2/_catalog").json()["repositories"] == []  # nothing was pushed
    assert not (tmp_path / "inv.json").exists()


def test_airgap_password_is_read_by_import_inventory_and_login(htpasswd_registry: RegistryServer, bundle_2m: Bundle,
                                                               run_airgap: RunAirgap, airgap_env: dict[str, str],
                                                               tmp_path: Path) -> None:
    """What the README says of AIRGAP_PASSWORD: the password of --username (import, inventory) and of login."""
    host, env = htpasswd_registry.host, {"AIRGAP_PASSWORD": PASSWORD}
    r = run_airgap(*import_args(bundle_2m, host, tmp_path / "state", "--username", "alice"), env=env)
    assert_complete(htpasswd_registry, bundle_2m, run=r, creds=htpasswd_registry.creds)
    r = run_airgap("inventory", "--registry", host, "--repo", "demo/base-a", "--output", str(tmp_path / "inv.json"),
                   "--username", "alice", env=env)
    assert r.returncode == 0, r.output
    assert not docker_config(airgap_env).exists()
    r = run_airgap("login", host, "-u", "alice", env=env)
    assert r.returncode == 0, r.output
    assert json.loads(docker_config(airgap_env).read_text()) == {"auths": {host: {"auth": b64(f"alice:{PASSWORD}")}}}
    r = run_airgap("login", host, "-u", "alice")
    assert_error_line(r, "no password given", "--password-stdin", "AIRGAP_PASSWORD", exit_code=2)
