"""Inventories and the delta members of a bundle manifest, as untrusted input (and the inventory file's bound)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airgap.errors import InvalidInput
from airgap.inventory import read_inventory
from airgap.model.delta import Base, Inventory, InventoryBlob, InventoryError, InventoryImage, ReliedBlob, parse_delta
from airgap.model.digest import Digest

D1 = Digest.of(b"one")
D2 = Digest.of(b"two")


def inventory() -> Inventory:
    return Inventory("i-0123", "2026-11-28T10:00:00Z", "airgap test", "127.0.0.1:5000", "mirror",
                     (InventoryImage("team/app", "v1", D1, "application/vnd.oci.image.manifest.v1+json"),),
                     (InventoryBlob(D2, 3, ("team/app", "team/other")),), (D1,))


def test_inventory_round_trips() -> None:
    inv = inventory()
    assert Inventory.parse(inv.to_json()) == inv
    assert inv.where == "127.0.0.1:5000/mirror"
    assert inv.base() == Base("inventory", "i-0123", "2026-11-28T10:00:00Z", "127.0.0.1:5000/mirror")


def test_an_inventory_with_a_key_twice_or_nested_without_end_is_refused() -> None:
    data = inventory().to_json()
    with pytest.raises(InventoryError, match="a key twice"):
        Inventory.parse(data.replace(b'"prefix":', b'"prefix": "other", "prefix":', 1))
    with pytest.raises(InventoryError, match="not valid JSON"):
        Inventory.parse(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(InventoryError, match="not UTF-8 text"):
        Inventory.parse(data.decode().encode("utf-16"))
    with pytest.raises(InventoryError, match="not valid JSON"):
        Inventory.parse(b"\xef\xbb\xbf" + data)  # a byte-order mark


def edited(change: dict[str, Any]) -> bytes:
    obj = json.loads(inventory().to_json())
    for path, value in change.items():
        target = obj
        keys = path.split(".")
        for k in keys[:-1]:
            target = target[int(k)] if isinstance(target, list) else target[k]
        target[keys[-1]] = value
    return json.dumps(obj).encode()


@pytest.mark.parametrize(("change", "message"), [
    ({"format": "airgap-bundle"}, "is not an airgap inventory"),
    ({"version": 2}, "unsupported version 2"),
    ({"inventory_id": "../x"}, "inventory_id is malformed"),
    ({"prefix": "UPPER/case"}, "is not a valid repository name"),
    ({"images.0.repository": "../../etc"}, "is not a valid repository name"),
    ({"images.0.tag": "no tags/with slash"}, "is not a valid tag"),
    ({"images.0.digest": "sha256:xyz"}, "is not a digest"),
    ({"blobs.0.size": -1}, "size is not a size"),
    ({"blobs.0.size": True}, "size is not a size"),
    ({"blobs.0.repositories": ["a/../b"]}, "is not a valid repository name"),
    ({"blobs": {"not": "a list"}}, "blobs is not a list of objects"),
    ({"manifests": ["md5:00"]}, "is not a digest"),
])
def test_hostile_inventories_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(InventoryError, match=message):
        Inventory.parse(edited(change), "inv.json")


@pytest.mark.parametrize("data", [b"", b"[]", b"{", "é".encode("latin-1")])
def test_not_json(data: bytes) -> None:
    with pytest.raises(InventoryError):
        Inventory.parse(data)


def delta(bases: Any, relied: Any) -> dict[str, Any]:
    return {"base": bases, "relies_on": relied}


GOOD_BASE = {"kind": "bundle", "id": "b-1", "created": "2026-01-01T00:00:00Z"}
GOOD_RELIED = {"digest": str(D2), "size": 3, "media_type": "x", "base": 0, "repositories": ["team/app"]}


def test_parse_delta() -> None:
    bases, relied = parse_delta(delta([GOOD_BASE], [GOOD_RELIED]), set(), InvalidInput)
    assert bases == (Base("bundle", "b-1", "2026-01-01T00:00:00Z"),)
    assert relied == (ReliedBlob(D2, 3, "x", 0, ("team/app",)),)
    assert parse_delta({}, set(), InvalidInput) == ((), ())
    assert relied[0].to_json() == GOOD_RELIED
    assert bases[0].to_json() == GOOD_BASE


@pytest.mark.parametrize(("bases", "relied", "message"), [
    ([GOOD_BASE], [], "must be given together"),
    ([], [GOOD_RELIED], "must be given together"),
    ([{**GOOD_BASE, "kind": "tape"}], [GOOD_RELIED], "kind is not one of"),
    ([{**GOOD_BASE, "id": "a/b"}], [GOOD_RELIED], "id is not"),
    ([GOOD_BASE], [{**GOOD_RELIED, "base": 1}], "does not name an entry"),
    ([GOOD_BASE], [{**GOOD_RELIED, "base": True}], "does not name an entry"),
    ([GOOD_BASE], [{**GOOD_RELIED, "size": -5}], "size is not a size"),
    ([GOOD_BASE], [{**GOOD_RELIED, "digest": "sha256:0"}], "digest is not a digest"),
    ([GOOD_BASE], [GOOD_RELIED, GOOD_RELIED], "listed twice"),
    ([GOOD_BASE], [{**GOOD_RELIED, "repositories": ["/abs"]}], "not a valid repository name"),
    ("x", [GOOD_RELIED], "base is not a list"),
])
def test_hostile_delta_members(bases: Any, relied: Any, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_delta(delta(bases, relied), set(), InvalidInput)


def test_a_relied_on_blob_cannot_also_be_stored() -> None:
    with pytest.raises(InvalidInput, match="also stored"):
        parse_delta(delta([GOOD_BASE], [GOOD_RELIED]), {D2}, InvalidInput)


def test_exclusions_from_inventories_and_bundles_including_a_delta_of_a_delta() -> None:
    """--since a delta also leaves out what that delta relied on, attributed to that delta's own base."""
    from airgap.delta import Exclusions
    from airgap.model.bundle import BundleImage, BundleManifest
    from airgap.model.manifest import Descriptor

    layer, config, older = Digest.of(b"layer"), Digest.of(b"config"), Digest.of(b"older")
    earlier = Base("bundle", "b-earlier", "2026-01-01T00:00:00Z")
    delta = BundleManifest(
        "b-delta", "2026-02-01T00:00:00Z", "airgap", "k", 1 << 20, 1 << 20, 0, (), (), (),
        (BundleImage("reg", "team/app", "v2", D1, "m", blobs=(config, older)),),
        bases=(earlier,), relies_on=(ReliedBlob(older, 5, "x", 0, ("team/app",)),))
    ex = Exclusions()
    ex.add_inventory(inventory())
    ex.add_bundle(delta)
    assert [b.id for b in ex.bases] == ["i-0123", "b-delta", "b-earlier"]
    assert ex.blobs[D2] == (0, ("mirror/team/app", "mirror/team/other"))  # inventory hints: full paths
    assert ex.blobs[older] == (2, ("team/app",))  # what the delta relied on: its own base
    assert ex.key() == ["inventory:i-0123", "bundle:b-delta", "bundle:b-earlier"]
    hit = ex.relied(Descriptor("application/vnd.oci.image.layer.v1.tar", older, 5))
    assert hit == ReliedBlob(older, 5, "application/vnd.oci.image.layer.v1.tar", 2, ("team/app",))
    assert ex.relied(Descriptor("x", layer, 5)) is None


def test_oversized_inventory_file_is_refused_by_its_size(tmp_path: Path) -> None:
    """An inventory file beyond the limit (a sparse file here) is refused before it is read into memory."""
    path = tmp_path / "inventory.json"
    with path.open("wb") as f:
        f.truncate(257 * 1024 * 1024)
    with pytest.raises(InventoryError, match="larger than 256 MiB"):
        read_inventory(path)


def test_a_base_layer_in_thousands_of_repositories_gives_a_delta_the_reader_accepts() -> None:
    """Hints are capped where they are written (an export of a registry with 3,000 repositories failed on its
    own manifest: the reader takes at most MAX_HINTS per blob)."""
    from airgap.delta import Exclusions
    from airgap.model.bundle import BundleImage, BundleManifest, Span, StoredBlob
    from airgap.model.delta import MAX_HINTS
    from airgap.model.manifest import Descriptor

    base = Digest.of(b"base layer")
    repos = tuple(f"team/app{n:04d}" for n in range(MAX_HINTS + 500))
    inv = Inventory("i-big", "2026-11-28T10:00:00Z", "airgap test", "127.0.0.1:5000", "",
                    (), (InventoryBlob(base, 7, repos),), ())
    bundle = BundleManifest(
        "b-big", "2026-02-01T00:00:00Z", "airgap", "k", 1 << 20, 1 << 20, 0, (), (),
        (StoredBlob(base, 7, "x", Span(0, (7,))),),
        tuple(BundleImage("reg", r, "v1", D1, "m", blobs=(base,)) for r in repos))
    for add in (lambda ex: ex.add_inventory(inv), lambda ex: ex.add_bundle(bundle)):
        ex = Exclusions()
        add(ex)
        assert list(ex.blobs) == [base]
        for digest in ex.blobs:
            hit = ex.relied(Descriptor("application/vnd.oci.image.layer.v1.tar", digest, 7))
            assert hit is not None and len(hit.repositories) == MAX_HINTS
            assert hit.repositories == hit.repositories[:1] + tuple(sorted(hit.repositories[1:]))  # the first ones
            back = parse_delta(delta([GOOD_BASE], [{**hit.to_json(), "base": 0}]), set(), InvalidInput)[1]
            assert back[0].repositories == hit.repositories


def test_a_delta_relying_on_more_bases_than_a_reader_takes_is_refused_before_it_is_written() -> None:
    """A --since chain adds a base a night: after ~1,000 nights the export wrote a bundle its own reader (and
    its own resume) refused. Now it is refused at planning, with the way out."""
    from airgap.delta import Exclusions
    from airgap.export import delta_members
    from airgap.model.delta import MAX_BASES, ReliedBlob

    def relied(n: int) -> tuple[Exclusions, dict[Digest, ReliedBlob]]:
        bases = [Base("bundle", f"b-{i:032x}") for i in range(n)]
        blobs = {Digest.parse(f"sha256:{i:064x}"): ReliedBlob(Digest.parse(f"sha256:{i:064x}"), 1, "m", i)
                 for i in range(n)}
        return Exclusions(bases=bases), blobs

    got_bases, got_relied = delta_members(*relied(MAX_BASES))
    assert len(got_bases) == MAX_BASES and len(got_relied) == MAX_BASES
    with pytest.raises(InvalidInput, match=r"1001 earlier bundles.*export a full bundle .*--exclude-inventory"):
        delta_members(*relied(MAX_BASES + 1))
