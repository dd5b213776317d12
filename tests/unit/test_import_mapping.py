"""Which images ``import --image`` selects, and where they land (no registry needed)."""

from __future__ import annotations

import pytest

from airgap.errors import InvalidInput
from airgap.importing import Target, map_images
from airgap.model.bundle import BundleImage, BundleManifest
from airgap.model.digest import Digest

APP, WEB = Digest.of(b"app"), Digest.of(b"web")
M = "application/vnd.oci.image.manifest.v1+json"


def manifest() -> BundleManifest:
    return BundleManifest("b-1", "2026-11-28T00:00:00Z", "airgap", "k", 1 << 20, 1 << 20, 0, (), (), (),
                          (BundleImage("reg.example.com:5000", "team/app", "1.4", APP, M),
                           BundleImage("reg.example.com:5000", "team/web", None, WEB, M),
                           BundleImage("", "local/tool", "v1", WEB, M)))


@pytest.mark.parametrize("name", ["reg.example.com:5000/team/app:1.4", "reg.example.com:5000/team/app", "team/app",
                                  "team/app:1.4", f"team/app@{APP}", f"reg.example.com:5000/team/app@{APP}", str(APP)])
def test_an_image_is_selected_by_any_of_its_names(name: str) -> None:
    mapped = map_images(manifest(), Target("mirror:5000", "dr"), [name])
    assert [str(m.target) for m in mapped] == ["mirror:5000/dr/team/app:1.4"]


def test_a_digest_selects_every_image_of_that_digest_and_an_unknown_name_is_refused() -> None:
    mapped = map_images(manifest(), Target("mirror:5000", ""), [str(WEB)])
    assert [str(m.target) for m in mapped] == [f"mirror:5000/team/web@{WEB}", "mirror:5000/local/tool:v1"]
    for bad in ("reg.example.com:5000/team/app:1.5", "other.example.com/team/app", "team"):
        with pytest.raises(InvalidInput, match="the bundle has no image"):
            map_images(manifest(), Target("mirror:5000", ""), [bad])


def test_a_target_may_be_written_with_a_scheme_and_its_errors_name_the_option() -> None:
    assert Target.parse("https://mirror:5000/dr/") == Target("mirror:5000", "dr")
    assert Target.parse("http://mirror:5000") == Target("mirror:5000", "")
    assert Target.parse("HTTPS://mirror:5000/dr") == Target("mirror:5000", "dr")
    with pytest.raises(InvalidInput, match="invalid registry"):
        Target.parse("https://http://mirror:5000")  # one scheme, once
    with pytest.raises(InvalidInput, match="invalid prefix 'Dr' in --registry") as err:
        Target.parse("mirror:5000/Dr", "--registry")
    with pytest.raises(InvalidInput, match="invalid registry 'ftp://x' for --to") as err:
        Target.parse("ftp://x")
    assert err.value.hint == "write --to REGISTRY[:PORT][/PREFIX]"
