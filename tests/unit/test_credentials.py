import base64
import json
import os
import stat
import threading
from pathlib import Path

import pytest

from airgap.registry.credentials import Credential, CredentialError, Keychain, store_credentials


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    return tmp_path


def write(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, answer: dict[str, str] | None) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    script = bindir / f"docker-credential-{name}"
    log = tmp_path / f"{name}.log"
    body = ("echo found; exit 0" if answer is None else f"echo '{json.dumps(answer)}'")
    if answer is None:
        body = "echo 'credentials not found in native keychain'; exit 1"
    script.write_text(f"#!/bin/sh\necho \"$1 $(cat)\" >> {log}\nif [ \"$1\" = store ]; then exit 0; fi\n{body}\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return log


def test_docker_config_auths(tmp_path: Path) -> None:
    write(tmp_path / "docker" / "config.json", {"auths": {
        "https://reg.local:5000": {"auth": b64("bob:pw:with:colons")},
        "https://index.docker.io/v1/": {"auth": b64("hub:hubpw")},
        "tok.local": {"identitytoken": "idtok"},
    }})
    kc = Keychain()
    assert kc.lookup("reg.local:5000") == Credential("bob", "pw:with:colons")
    assert kc.lookup("docker.io") == Credential("hub", "hubpw")
    assert kc.lookup("tok.local") == Credential(identity_token="idtok")
    assert kc.lookup("other.local") is None


def test_explicit_wins_and_repr_hides_secret(tmp_path: Path) -> None:
    write(tmp_path / "docker" / "config.json", {"auths": {"reg.local": {"auth": b64("a:b")}}})
    kc = Keychain()
    kc.add("reg.local", Credential("x", "topsecret"))
    assert kc.lookup("reg.local") == Credential("x", "topsecret")
    assert "topsecret" not in repr(kc.lookup("reg.local"))


def test_cred_helpers_and_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = helper(tmp_path, monkeypatch, "fake", {"Username": "helperuser", "Secret": "helperpw"})
    helper(tmp_path, monkeypatch, "none", None)
    write(tmp_path / "docker" / "config.json", {"credHelpers": {"reg.local": "fake"}, "credsStore": "none"})
    kc = Keychain()
    assert kc.lookup("reg.local") == Credential("helperuser", "helperpw")
    assert "get reg.local" in log.read_text()
    assert kc.lookup("elsewhere.local") is None  # credsStore answers "not found"


def test_identity_token_from_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    helper(tmp_path, monkeypatch, "tok", {"Username": "<token>", "Secret": "refresh"})
    write(tmp_path / "docker" / "config.json", {"credsStore": "tok"})
    assert Keychain().lookup("reg.local") == Credential(identity_token="refresh")


def test_missing_helper_is_clear(tmp_path: Path) -> None:
    write(tmp_path / "docker" / "config.json", {"credHelpers": {"reg.local": "doesnotexist"}})
    with pytest.raises(CredentialError, match="docker-credential-doesnotexist"):
        Keychain().lookup("reg.local")


def test_containers_auth_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "run" / "containers" / "auth.json", {"auths": {"reg.local": {"auth": b64("c:d")}}})
    assert Keychain().lookup("reg.local") == Credential("c", "d")
    write(tmp_path / "explicit.json", {"auths": {"reg.local": {"auth": b64("e:f")}}})
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "explicit.json"))
    assert Keychain().lookup("reg.local") == Credential("e", "f")


def test_broken_config_is_clear(tmp_path: Path) -> None:
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / "config.json").write_text("{not json")
    with pytest.raises(CredentialError, match="config.json"):
        Keychain().lookup("reg.local")


def test_store_is_private_and_keeps_other_entries(tmp_path: Path) -> None:
    path = tmp_path / "docker" / "config.json"
    write(path, {"auths": {"other.local": {"auth": b64("o:p")}}, "experimental": "x"})
    store_credentials("reg.local:5000", Credential("u", "pw"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    obj = json.loads(path.read_text())
    assert obj["experimental"] == "x" and "other.local" in obj["auths"]
    assert Keychain().lookup("reg.local:5000") == Credential("u", "pw")
    store_credentials("docker.io", Credential("h", "q"))
    assert "https://index.docker.io/v1/" in json.loads(path.read_text())["auths"]


def test_store_via_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = helper(tmp_path, monkeypatch, "fake", {"Username": "x", "Secret": "y"})
    write(tmp_path / "docker" / "config.json", {"credsStore": "fake"})
    stored = store_credentials("reg.local", Credential("u", "pw-in-helper"))
    assert stored.helper == "fake" and str(stored) == f"docker-credential-fake (named in {stored.path})"
    assert "pw-in-helper" not in stored.path.read_text()
    assert '"Secret": "pw-in-helper"' in log.read_text()


@pytest.mark.parametrize("config", [{"credsStore": "missing"}, {"credHelpers": {"reg.local": "missing"}}])
def test_store_via_a_helper_that_is_not_installed_is_clear(tmp_path: Path, config: dict[str, object]) -> None:
    """It was a FileNotFoundError (an internal error, exit 70): the lookup's message, exit 2."""
    write(tmp_path / "docker" / "config.json", config)
    with pytest.raises(CredentialError) as info:
        store_credentials("reg.local", Credential("u", "pw"))
    assert info.value.exit_code == 2
    assert str(info.value) == ("credential helper docker-credential-missing (configured for reg.local) is not "
                               "installed: install it, or remove it from your docker config.json")
    assert json.loads((tmp_path / "docker" / "config.json").read_text()) == config  # left as it was


def test_a_helper_that_cannot_be_run_is_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    helper(tmp_path, monkeypatch, "noexec", {"Username": "x", "Secret": "y"})
    (tmp_path / "bin" / "docker-credential-noexec").chmod(0o644)
    write(tmp_path / "docker" / "config.json", {"credsStore": "noexec"})
    for call in (lambda: store_credentials("reg.local", Credential("u", "pw")), lambda: Keychain().lookup("reg.local")):
        with pytest.raises(CredentialError, match="cannot run credential helper docker-credential-noexec"):
            call()


def test_store_in_registry_auth_file_when_it_is_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lookups read REGISTRY_AUTH_FILE first: login must write there (as podman and skopeo do), or an old entry
    in it shadows the new login. docker's helpers are not used for it; docker's config.json is not touched."""
    log = helper(tmp_path, monkeypatch, "fake", {"Username": "x", "Secret": "y"})
    docker = tmp_path / "docker" / "config.json"
    write(docker, {"credsStore": "fake", "auths": {"reg.local": {"auth": b64("docker:old")}}})
    auth_file = tmp_path / "containers" / "auth.json"
    write(auth_file, {"auths": {"reg.local": {"auth": b64("old:stale")}, "other.local": {"auth": b64("o:p")}}})
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth_file))
    stored = store_credentials("reg.local", Credential("u", "new"))
    assert stored.path == auth_file and stored.helper is None
    assert str(stored) == f"{auth_file} (REGISTRY_AUTH_FILE)"
    assert stat.S_IMODE(auth_file.stat().st_mode) == 0o600
    assert json.loads(auth_file.read_text())["auths"] == {"reg.local": {"auth": b64("u:new")},
                                                          "other.local": {"auth": b64("o:p")}}
    assert Keychain().lookup("reg.local") == Credential("u", "new")
    assert json.loads(docker.read_text())["auths"] == {"reg.local": {"auth": b64("docker:old")}}
    assert not log.exists()  # the helper was not asked
    # a file that does not exist yet is created (private), Docker Hub under podman's key
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "new" / "auth.json"))
    store_credentials("index.docker.io", Credential("h", "q"))
    assert json.loads((tmp_path / "new" / "auth.json").read_text()) == {"auths": {"docker.io": {"auth": b64("h:q")}}}
    assert Keychain().lookup("docker.io") == Credential("h", "q")


@pytest.mark.parametrize("via", ["config.json", "helper", "REGISTRY_AUTH_FILE"])
def test_login_replaces_every_spelling_of_the_host(via: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stale ``https://HOST`` (or ``http://HOST/v2/``) entry shadowed a fresh login: the login added a key and
    the lookup took the first match."""
    stale = {"https://reg.local:5000": {"auth": b64("old:one")}, "http://reg.local:5000/v2/": {"auth": b64("old:two")},
             "reg.local:5001": {"auth": b64("other:port")}, "https://other.local": {"auth": b64("o:p")}}
    path = tmp_path / "docker" / "config.json"
    config: dict[str, object] = {"auths": stale}
    if via == "helper":
        helper(tmp_path, monkeypatch, "fake", {"Username": "u", "Secret": "new"})
        config["credsStore"] = "fake"
    if via == "REGISTRY_AUTH_FILE":
        path = tmp_path / "auth.json"
        monkeypatch.setenv("REGISTRY_AUTH_FILE", str(path))
    write(path, config)
    store_credentials("reg.local:5000", Credential("u", "new"))
    auths = json.loads(path.read_text())["auths"]
    assert set(auths) == {"reg.local:5001", "https://other.local", "reg.local:5000"}
    assert auths["reg.local:5000"] == ({} if via == "helper" else {"auth": b64("u:new")})
    assert Keychain().lookup("reg.local:5000") == Credential("u", "new")
    assert Keychain().lookup("reg.local:5001") == Credential("other", "port")


def test_lookup_prefers_the_exact_key(tmp_path: Path) -> None:
    write(tmp_path / "docker" / "config.json", {"auths": {
        "https://reg.local": {"auth": b64("stale:1")}, "reg.local": {"auth": b64("fresh:2")},
        "registry-1.docker.io": {"auth": b64("stale:3")}, "https://index.docker.io/v1/": {"auth": b64("fresh:4")},
        "https://only.local/v2/": {"auth": b64("only:5")}}})
    assert Keychain().lookup("reg.local") == Credential("fresh", "2")
    assert Keychain().lookup("only.local") == Credential("only", "5")  # another spelling still counts
    assert Keychain().lookup("docker.io") == Credential("fresh", "4")  # docker login's key for Docker Hub


def test_each_host_is_looked_up_once_per_keychain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every registry request asks for its host's credential: a helper ran on each (125 times in a 7-image import),
    and the config files were read again. Now once per host, however many threads ask at once."""
    log = helper(tmp_path, monkeypatch, "slow", {"Username": "u", "Secret": "pw"})
    script = tmp_path / "bin" / "docker-credential-slow"
    script.write_text(script.read_text().replace("#!/bin/sh\n", "#!/bin/sh\nsleep 0.3\n"))
    none_log = helper(tmp_path, monkeypatch, "none", None)
    write(tmp_path / "docker" / "config.json", {"credHelpers": {"reg.local": "slow", "empty.local": "none"}})
    kc = Keychain()
    got: list[Credential | None] = []

    def ask(host: str) -> None:
        got.append(kc.lookup(host))

    threads = [threading.Thread(target=ask, args=(h,)) for h in ["reg.local", "https://reg.local/v2/"] * 8]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [Credential("u", "pw")] * 16
    assert [kc.lookup("empty.local") for _ in range(5)] == [None] * 5  # "not found" is kept too
    (tmp_path / "docker" / "config.json").write_text("{broken")  # read once: not read again
    assert kc.lookup("reg.local") == Credential("u", "pw")
    assert log.read_text().splitlines() == ["get reg.local"]
    assert none_log.read_text().splitlines() == ["get empty.local"]
    kc.add("empty.local", Credential("x", "y"))  # explicit ones still win
    assert kc.lookup("empty.local") == Credential("x", "y")
    with pytest.raises(CredentialError, match="config.json"):  # another keychain (another run) reads again
        Keychain().lookup("reg.local")


def test_a_broken_helper_is_reported_on_every_lookup_but_run_once(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    log = helper(tmp_path, monkeypatch, "bad", {"Username": "u", "Secret": "pw"})
    script = tmp_path / "bin" / "docker-credential-bad"
    script.write_text(script.read_text().replace("#!/bin/sh\n", "#!/bin/sh\necho \"$1 $(cat)\" >> " + str(log)
                                                 + "\nexit 3\n"))
    write(tmp_path / "docker" / "config.json", {"credsStore": "bad"})
    kc = Keychain()
    for _ in range(3):
        with pytest.raises(CredentialError, match="credential helper docker-credential-bad failed for reg.local"):
            kc.lookup("reg.local")
    assert log.read_text().splitlines() == ["get reg.local"]
