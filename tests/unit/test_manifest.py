import json

import pytest

from airgap.errors import InvalidInput, UnsupportedManifest
from airgap.model.digest import Digest
from airgap.model.manifest import (
    DOCKER_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    Manifest,
    filter_index,
)
from airgap.model.platform import Platform

CFG = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "1" * 64, "size": 10}
LAYER = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + "2" * 64, "size": 20}


def image_bytes(**extra: object) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": CFG, "layers": [LAYER], **extra},
                      indent=3).encode()


def index_bytes() -> bytes:
    entries = [
        {"mediaType": OCI_MANIFEST, "digest": "sha256:" + c * 64, "size": 5,
         "platform": {"os": "linux", "architecture": a, **({"variant": v} if v else {})}}
        for c, a, v in (("3", "amd64", None), ("4", "arm64", "v8"), ("5", "arm", "v7"))
    ]
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries,
                       "annotations": {"x": "y"}}).encode()


def test_parse_keeps_exact_bytes() -> None:
    data = image_bytes()
    m = Manifest.parse(data, "application/vnd.oci.image.manifest.v1+json; charset=utf-8")
    assert m.data == data and m.digest == Digest.of(data) and m.media_type == OCI_MANIFEST
    assert [str(d.digest) for d in m.blobs()] == [CFG["digest"], LAYER["digest"]]
    assert not m.is_index


def test_media_type_from_body_when_header_is_generic() -> None:
    assert Manifest.parse(index_bytes(), "application/json").media_type == OCI_INDEX


def test_schema1_refused() -> None:
    with pytest.raises(UnsupportedManifest, match="schema1"):
        Manifest.parse(json.dumps({"schemaVersion": 1, "name": "x", "fsLayers": []}).encode(), None)


@pytest.mark.parametrize("data", [b"not json", b"[]", json.dumps({"mediaType": OCI_MANIFEST}).encode(),
                                  json.dumps({"mediaType": OCI_MANIFEST, "config": CFG,
                                              "layers": [{"digest": "x", "size": 1, "mediaType": "m"}]}).encode(),
                                  json.dumps({"mediaType": OCI_MANIFEST, "config": {**CFG, "size": -1}}).encode(),
                                  image_bytes(layers=[{**LAYER, "mediaType": "application/x\r\nX-Injected: 1"}]),
                                  image_bytes(layers=[{**LAYER, "mediaType": "x" * 256}])])
def test_malformed(data: bytes) -> None:
    with pytest.raises(InvalidInput):
        Manifest.parse(data, OCI_MANIFEST)


def test_unknown_type() -> None:
    with pytest.raises(UnsupportedManifest):
        Manifest.parse(b"{}", "text/plain")


def test_subject_and_artifact_type() -> None:
    subj = {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "9" * 64, "size": 3}
    m = Manifest.parse(image_bytes(subject=subj, artifactType="application/x.sig"), None)
    assert m.subject is not None and str(m.subject.digest) == subj["digest"]
    assert m.artifact_type == "application/x.sig"
    # a malformed artifactType only selects referrers: ignored, the manifest's bytes stay as they are
    m = Manifest.parse(image_bytes(subject=subj, artifactType="application/x\nsig"), None)
    assert m.artifact_type is None and m.subject is not None
    # an empty or non-ASCII media type, as registries take them, is carried
    m = Manifest.parse(image_bytes(layers=[{**LAYER, "mediaType": ""}], artifactType="application/t\u00e4r"), None)
    assert m.layers[0].media_type == "" and m.artifact_type == "application/t\u00e4r"


def test_filter_index() -> None:
    idx = Manifest.parse(index_bytes(), None)
    assert idx.is_index and [str(d.platform) for d in idx.manifests] == ["linux/amd64", "linux/arm64/v8",
                                                                          "linux/arm/v7"]
    same = filter_index(idx, list(idx.manifests))
    assert same is idx
    sub = filter_index(idx, [idx.manifests[1]])
    assert sub.digest != idx.digest and len(sub.manifests) == 1
    assert json.loads(sub.data)["annotations"] == {"x": "y"}
    assert sub.media_type == OCI_INDEX
    docker = Manifest.parse(index_bytes().replace(OCI_INDEX.encode(), DOCKER_LIST.encode()), None)
    assert docker.media_type == DOCKER_LIST


def test_platform() -> None:
    assert Platform.parse("linux/arm64").matches(Platform("linux", "arm64", "v8"))
    assert not Platform.parse("linux/arm64/v7").matches(Platform("linux", "arm64", "v8"))
    assert str(Platform.parse("linux/arm/v7")) == "linux/arm/v7"
    # an entry without a variant has its architecture's default; case and the usual aliases are accepted
    assert Platform.parse("linux/arm64/v8").matches(Platform("linux", "arm64"))
    assert not Platform.parse("linux/arm64/v9").matches(Platform("linux", "arm64"))
    assert Platform.parse("LINUX/AMD64").matches(Platform("linux", "amd64"))
    assert Platform.parse("linux/x86_64") == Platform("linux", "amd64")
    assert Platform.parse("linux/aarch64").matches(Platform("linux", "arm64", "v8"))
    assert Platform.parse("linux/armhf") == Platform("linux", "arm", "v7")
    assert not Platform.parse("linux/armhf").matches(Platform("linux", "arm", "v6"))
    for bad in ("linux", "a/b/c/d", "/amd64", ""):
        with pytest.raises(InvalidInput):
            Platform.parse(bad)
