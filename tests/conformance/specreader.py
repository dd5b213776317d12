#!/usr/bin/env python3
"""Independent reader for airgap bundle format version 1, written from docs/bundle-format.md only.

It was written by someone who read the specification and not airgap's code, and it is kept that way:
it imports nothing from airgap (only the standard library, zstandard and pynacl), so that
tests/test_conformance.py checks what airgap writes against the document, not against itself. Where it
is stricter than the specification's MUSTs (unknown members refused at every level, not only the top;
index.json checked against section 2.4 and reported; the tag grammar of the distribution spec; the
end-of-archive marker checked), that is deliberate: a writer change that a second implementation could
trip over should fail the test and be settled in the specification, not in this reader. Where the
specification tells readers to tolerate what writers MUST NOT write (members it does not name inside its
objects, an empty base or relies_on, tar type 7), this reader refuses it, so that the test holds the writer
to the MUST NOT; it is a conformance check of writers, not a model of a lenient importer.

Usage:
  specreader.py BUNDLE --pubkey KEY.pub [--pubkey ...] [--media DIR ...] [--extract OUT]
                [--base-layout DIR ...] [--repair-dir DIR] [--strict-index] [--json]

Exit code 0: accepted; 1: rejected (the reasons are printed); 2: usage error.

Steps (section numbers are those of docs/bundle-format.md):
  1. section 5: manifest.json.sig <= 4 KiB, canonical form, key_id trusted, Ed25519 verifies over the exact
     bytes of manifest.json -- all BEFORE manifest.json is parsed;
  2. section 4/8/9/10: manifest.json parsed strictly (UTF-8, no duplicate keys, no NaN, integers are
     integers) and every field validated (types, ranges, tiling, chunk sizes, parity layout, delta rules);
  3. section 3: each chunk looked up by name in BUNDLE then each --media DIR; first copy whose size and
     sha256 match is used; parity chunks checked the same way; missing/damaged data chunks rebuilt from
     parity (section 9.2) when possible and checked against the manifest's sha256;
  4. section 2: every member decoded frame by frame (exactly one zstd frame per listed length, declared and
     actual decompressed sizes bounded), tar headers checked against the manifest (name, type, size),
     padding and end-of-archive checked, every blob's sha256 and size checked;
  5. consistency of images/referrers with the manifests they carry (closure of configs/layers/children),
     index.json against section 2.4;
  6. with --extract: a plain OCI image layout written to OUT using only names derived from validated
     digests (never from the archive); relied-on blobs (delta) copied from --base-layout dirs if given.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path

import nacl.exceptions
import nacl.signing
import zstandard

KiB, MiB, GiB = 1024, 1024 ** 2, 1024 ** 3
MAX_MANIFEST = 256 * MiB
MAX_SIG = 4 * KiB
MAX_SIZE = 2 ** 50
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}\Z")
HEX64_RE = re.compile(r"[0-9a-f]{64}\Z")
CHUNK_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
REPO_COMP = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPO_RE = re.compile(rf"{REPO_COMP}(?:/{REPO_COMP})*\Z")
# Section 8 writes `[A-Za-z0-9.-:[]]`; read literally as a regex class `.-:` is a range that includes '/'.
# We take the evident intent: letters, digits, '.', '-', ':', '[' and ']'.
REGISTRY_RE = re.compile(r"[A-Za-z0-9.\-:\[\]]{1,255}\Z")
# The spec gives no grammar for tags; we use the distribution grammar (an assumption, reported).
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
CREATED_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z\Z")
KEY_ID_RE = re.compile(r"ed25519:[0-9a-f]{16}\Z")
BASE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")
PLATFORM_RE = re.compile(r"[^/\s]+/[^/\s]+(?:/[^/\s]+)?\Z")
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
REF_NAME = "org.opencontainers.image.ref.name"

TOP_REQUIRED = ["format", "version", "bundle_id", "created", "tool", "key_id", "stream", "chunk_size",
                "chunks", "images", "blobs", "files"]
TOP_OPTIONAL = ["referrers", "parity", "base", "relies_on"]

INDEX_TYPES = {"application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json"}
MANIFEST_TYPES = {"application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json"}


class Reject(Exception):
    pass


def need(cond: bool, msg: str) -> None:
    if not cond:
        raise Reject(msg)


# ----------------------------------------------------------------------------------------- JSON helpers

def strict_json(data: bytes, what: str):
    try:
        text = data.decode("utf-8")  # strict: invalid UTF-8 refused
    except UnicodeDecodeError as e:
        raise Reject(f"{what}: not UTF-8: {e}") from e
    need(not text.startswith("\ufeff"), f"{what}: starts with a BOM")

    def pairs(kv):
        d = {}
        for k, v in kv:
            if k in d:
                raise Reject(f"{what}: duplicate key {k!r}")
            d[k] = v
        return d

    def bad_const(c):
        raise Reject(f"{what}: non-JSON constant {c}")

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=bad_const)
    except RecursionError:
        raise Reject(f"{what}: nested too deeply") from None
    except ValueError as e:
        raise Reject(f"{what}: invalid JSON: {e}") from e


def is_int(v) -> bool:
    return type(v) is int  # bool excluded; 1.0 / 1e0 are floats in Python's json


def want_int(v, lo, hi, what):
    need(is_int(v), f"{what}: not an integer: {v!r}")
    need(lo <= v <= hi, f"{what}: {v} out of range [{lo}, {hi}]")
    return v


def want_str(v, what, maxlen=None, regex=None, allow_empty=True):
    need(isinstance(v, str), f"{what}: not a string: {v!r}")
    need(allow_empty or v != "", f"{what}: empty")
    if maxlen is not None:
        need(len(v) <= maxlen, f"{what}: longer than {maxlen} characters")
    if regex is not None:
        need(bool(regex.match(v)), f"{what}: malformed: {v!r}")
    return v


def want_obj(v, what, required, optional=()):
    need(isinstance(v, dict), f"{what}: not an object")
    keys = set(v)
    missing = [k for k in required if k not in keys]
    need(not missing, f"{what}: missing {missing}")
    extra = keys - set(required) - set(optional)
    # The spec only says so for top-level members; we are strict everywhere and say so in the report.
    need(not extra, f"{what}: unknown members {sorted(extra)}")
    return v


def want_list(v, what, maxlen):
    need(isinstance(v, list), f"{what}: not a list")
    need(len(v) <= maxlen, f"{what}: more than {maxlen} entries")
    return v


# ------------------------------------------------------------------------------------------- signature

def load_pubkey(path: Path) -> tuple[str, bytes]:
    doc = strict_json(path.read_bytes(), f"public key {path}")
    want_obj(doc, f"public key {path}", ["type", "version", "key_id", "public_key"])
    need(doc["type"] == "airgap-ed25519-public-key" and doc["version"] == 1 and is_int(doc["version"]),
         f"public key {path}: wrong type/version")
    raw = base64.b64decode(doc["public_key"], validate=True)
    need(len(raw) == 32, f"public key {path}: not 32 bytes")
    kid = "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]
    need(kid == doc["key_id"], f"public key {path}: key_id {doc['key_id']} does not match the key ({kid})")
    return kid, raw


def check_signature(bundle: Path, manifest_bytes: bytes, trusted: dict[str, bytes]) -> str:
    sig_path = bundle / "manifest.json.sig"
    need(sig_path.is_file(), "manifest.json.sig missing")
    need(sig_path.stat().st_size <= MAX_SIG, "manifest.json.sig over 4 KiB")
    raw = sig_path.read_bytes()
    need(len(raw) <= MAX_SIG, "manifest.json.sig over 4 KiB")
    doc = strict_json(raw, "manifest.json.sig")
    need(isinstance(doc, dict) and list(doc) == ["type", "version", "algorithm", "key_id", "signature"],
         "manifest.json.sig: members are not exactly type, version, algorithm, key_id, signature in order")
    need(doc["type"] == "airgap-signature", "manifest.json.sig: wrong type")
    need(is_int(doc["version"]) and doc["version"] == 1, "manifest.json.sig: wrong version")
    need(doc["algorithm"] == "ed25519", "manifest.json.sig: wrong algorithm")
    need(isinstance(doc["key_id"], str) and isinstance(doc["signature"], str), "manifest.json.sig: bad types")
    canonical = (json.dumps(doc, indent=2) + "\n").encode("utf-8")
    need(canonical == raw, "manifest.json.sig: not in canonical form")
    try:
        sig = base64.b64decode(doc["signature"], validate=True)
    except ValueError:
        raise Reject("manifest.json.sig: signature is not base64") from None
    need(base64.b64encode(sig).decode() == doc["signature"], "manifest.json.sig: non-canonical base64")
    need(len(sig) == 64, "manifest.json.sig: signature is not 64 bytes")
    kid = doc["key_id"]
    need(kid in trusted, f"manifest.json.sig: signed by {kid!r}, not a trusted key")
    try:
        nacl.signing.VerifyKey(trusted[kid]).verify(manifest_bytes, sig)
    except nacl.exceptions.BadSignatureError:
        raise Reject("manifest.json.sig: signature does not verify") from None
    return kid


# -------------------------------------------------------------------------------------- manifest rules

def frames_for(n: int, S: int) -> int:
    return max(1, -(-n // S))


def validate_placed(e, what, S, stream_size, maxsize):
    want_int(e["size"], 0, maxsize, f"{what}.size")
    want_int(e["offset"], 0, MAX_SIZE, f"{what}.offset")
    fr = want_list(e["frames"], f"{what}.frames", 1_000_000_000)
    F = frames_for(e["size"], S)
    need(len(fr) == F, f"{what}.frames: {len(fr)} entries, expected F = {F}")
    for i, f in enumerate(fr):
        want_int(f, 1, 2 * S + 64 * KiB, f"{what}.frames[{i}]")


def validate_manifest(m, sig_key_id: str) -> dict:
    """Every rule of sections 3, 4, 8, 9, 10 that can be checked without the stream."""
    need(isinstance(m, dict), "manifest.json: not an object")
    want_obj(m, "manifest.json", TOP_REQUIRED, TOP_OPTIONAL)
    need(m["format"] == "airgap-bundle", f"format {m['format']!r} unknown")
    need(is_int(m["version"]) and m["version"] == 1, f"version {m['version']!r} unknown")
    want_str(m["bundle_id"], "bundle_id")
    want_str(m["tool"], "tool")
    want_str(m["created"], "created", regex=CREATED_RE)
    want_str(m["key_id"], "key_id", regex=KEY_ID_RE)
    need(m["key_id"] == sig_key_id, f"key_id {m['key_id']} differs from the signature's {sig_key_id}")

    st = want_obj(m["stream"], "stream", ["container", "layout", "compression", "compression_level",
                                          "segment_size", "size"])
    need(st["container"] == "tar" and st["layout"] == "oci-image-layout" and st["compression"] == "zstd",
         "stream: unknown encoding")
    want_int(st["compression_level"], -131072, 22, "stream.compression_level")
    S = want_int(st["segment_size"], 4096, 256 * MiB, "stream.segment_size")
    size = want_int(st["size"], 1, MAX_SIZE, "stream.size")

    cs = want_int(m["chunk_size"], 1, MAX_SIZE, "chunk_size")
    chunks = want_list(m["chunks"], "chunks", 1_000_000)
    need(len(chunks) >= 1, "chunks: empty")
    names = set()
    for i, c in enumerate(chunks):
        want_obj(c, f"chunks[{i}]", ["name", "size", "sha256"])
        n = want_str(c["name"], f"chunks[{i}].name", regex=CHUNK_NAME_RE)
        need(n not in ("manifest.json", "manifest.json.sig"), f"chunks[{i}].name reserved: {n}")
        need(n not in names, f"chunks[{i}].name duplicate: {n}")
        names.add(n)
        want_str(c["sha256"], f"chunks[{i}].sha256", regex=HEX64_RE)
        want_int(c["size"], 1, MAX_SIZE, f"chunks[{i}].size")
        if i < len(chunks) - 1:
            need(c["size"] == cs, f"chunks[{i}].size {c['size']} != chunk_size {cs}")
        else:
            need(1 <= c["size"] <= cs, f"last chunk size {c['size']} not in [1, chunk_size]")
    need(sum(c["size"] for c in chunks) == size, "chunk sizes do not add up to stream.size")
    need(len(chunks) == -(-size // cs), "number of chunks != ceil(stream.size / chunk_size)")

    # blobs and files
    blobs = want_list(m["blobs"], "blobs", 1_000_000)
    by_digest = {}
    for i, b in enumerate(blobs):
        want_obj(b, f"blobs[{i}]", ["digest", "size", "media_type", "offset", "frames"])
        d = want_str(b["digest"], f"blobs[{i}].digest", regex=DIGEST_RE)
        need(d not in by_digest, f"blobs[{i}]: digest {d} listed twice")
        want_str(b["media_type"], f"blobs[{i}].media_type", maxlen=255)
        validate_placed(b, f"blobs[{i}]", S, size, MAX_SIZE)
        by_digest[d] = b
    files = want_list(m["files"], "files", 2)
    fmap = {}
    for i, f in enumerate(files):
        want_obj(f, f"files[{i}]", ["path", "size", "offset", "frames"])
        need(f["path"] in ("oci-layout", "index.json") and f["path"] not in fmap, f"files[{i}].path bad")
        validate_placed(f, f"files[{i}]", S, size, GiB)
        fmap[f["path"]] = f
    need(set(fmap) == {"oci-layout", "index.json"}, "files: must be exactly oci-layout and index.json")

    # tiling (2.3) and member order (2.1): oci-layout first, index.json last
    members = [("oci-layout", fmap["oci-layout"])] + [(f"blobs/sha256/{d[7:]}", b) for d, b in by_digest.items()] \
        + [("index.json", fmap["index.json"])]
    order = sorted(members, key=lambda x: x[1]["offset"])
    pos = 0
    for name, e in order:
        need(e["offset"] == pos, f"tiling: {name} at offset {e['offset']}, expected {pos}")
        pos += sum(e["frames"])
    need(pos == size, f"tiling: members end at {pos}, stream.size is {size}")
    need(order[0][0] == "oci-layout", "oci-layout is not the first member")
    need(order[-1][0] == "index.json", "index.json is not the last member")

    # delta (10)
    relied = {}
    has_base, has_rel = "base" in m, "relies_on" in m
    need(has_base == has_rel, "base and relies_on must be both present or both absent")
    if has_base:
        base = want_list(m["base"], "base", 1000)
        rel = want_list(m["relies_on"], "relies_on", 2_000_000)
        need(base and rel, "base and relies_on must be non-empty")
        for i, b in enumerate(base):
            need(isinstance(b, dict) and b.get("kind") in ("inventory", "bundle"), f"base[{i}].kind bad")
            if b["kind"] == "inventory":
                want_obj(b, f"base[{i}]", ["kind", "id", "created"], ["registry"])
                if "registry" in b:
                    want_str(b["registry"], f"base[{i}].registry", maxlen=1024)
            else:
                want_obj(b, f"base[{i}]", ["kind", "id", "created"])
            want_str(b["id"], f"base[{i}].id", regex=BASE_ID_RE)
            want_str(b["created"], f"base[{i}].created", maxlen=64)
        used = set()
        for i, r in enumerate(rel):
            want_obj(r, f"relies_on[{i}]", ["digest", "size", "media_type", "base", "repositories"])
            d = want_str(r["digest"], f"relies_on[{i}].digest", regex=DIGEST_RE)
            need(d not in relied, f"relies_on: {d} listed twice")
            need(d not in by_digest, f"relies_on: {d} also in blobs")
            want_int(r["size"], 0, MAX_SIZE, f"relies_on[{i}].size")
            want_str(r["media_type"], f"relies_on[{i}].media_type", maxlen=255)
            want_int(r["base"], 0, len(base) - 1, f"relies_on[{i}].base")
            used.add(r["base"])
            reps = want_list(r["repositories"], f"relies_on[{i}].repositories", 1000)
            for j, rp in enumerate(reps):
                want_str(rp, f"relies_on[{i}].repositories[{j}]", maxlen=255, regex=REPO_RE)
            relied[d] = r
        need(used == set(range(len(base))), "base lists a base nothing relies on")

    # images (4.4)
    images = want_list(m["images"], "images", 100_000)
    need(len(images) >= 1, "images: empty")
    repo_manifests: dict[str, set] = {}
    needed = set()
    for i, im in enumerate(images):
        w = f"images[{i}]"
        want_obj(im, w, ["registry", "repository", "tag", "digest", "media_type", "platforms", "manifests",
                         "blobs"], ["source_digest"])
        if im["registry"] != "":
            want_str(im["registry"], f"{w}.registry", regex=REGISTRY_RE)
        want_str(im["repository"], f"{w}.repository", maxlen=255, regex=REPO_RE)
        if im["tag"] is not None:
            want_str(im["tag"], f"{w}.tag", regex=TAG_RE)
        want_str(im["digest"], f"{w}.digest", regex=DIGEST_RE)
        want_str(im["media_type"], f"{w}.media_type", maxlen=255)
        pl = want_list(im["platforms"], f"{w}.platforms", 256)
        for j, p in enumerate(pl):
            want_str(p, f"{w}.platforms[{j}]", maxlen=99, regex=PLATFORM_RE)
        if "source_digest" in im:
            want_str(im["source_digest"], f"{w}.source_digest", regex=DIGEST_RE)
        mans = want_list(im["manifests"], f"{w}.manifests", 1_000_000)
        need(mans and mans[-1] == im["digest"], f"{w}.manifests: the top manifest is not last")
        for d in mans:
            want_str(d, f"{w}.manifests[]", regex=DIGEST_RE)
            need(d in by_digest, f"{w}: manifest {d} not in blobs")
        need(len(set(mans)) == len(mans), f"{w}.manifests: duplicates")
        need(by_digest[im["digest"]]["media_type"] == im["media_type"],
             f"{w}.media_type differs from the blob's media_type")
        bl = want_list(im["blobs"], f"{w}.blobs", 2_000_000)
        for d in bl:
            want_str(d, f"{w}.blobs[]", regex=DIGEST_RE)
            need(d in by_digest or d in relied, f"{w}: blob {d} neither in blobs nor relies_on")
            need(d not in mans, f"{w}: manifest {d} listed in images[].blobs")
        needed |= set(mans) | set(bl)
        repo_manifests.setdefault(im["repository"], set()).update(mans)

    # referrers (4.5)
    refs = want_list(m.get("referrers", []), "referrers", 1_000_000)
    repo_refs: dict[str, set] = {}
    for r in refs:
        if isinstance(r, dict) and isinstance(r.get("repository"), str) and isinstance(r.get("digest"), str):
            repo_refs.setdefault(r["repository"], set()).add(r["digest"])
    seen = set()
    for i, r in enumerate(refs):
        w = f"referrers[{i}]"
        want_obj(r, w, ["repository", "subject", "digest", "media_type", "artifact_type", "tag", "manifests",
                        "blobs"])
        want_str(r["repository"], f"{w}.repository", maxlen=255, regex=REPO_RE)
        want_str(r["subject"], f"{w}.subject", regex=DIGEST_RE)
        want_str(r["digest"], f"{w}.digest", regex=DIGEST_RE)
        want_str(r["media_type"], f"{w}.media_type", maxlen=255)
        if r["artifact_type"] is not None:
            want_str(r["artifact_type"], f"{w}.artifact_type", maxlen=255)
        if r["tag"] is not None:
            want_str(r["tag"], f"{w}.tag", regex=TAG_RE)
            need(r["tag"].startswith(f"sha256-{r['subject'][7:]}."), f"{w}.tag does not name its subject")
        need(r["subject"] in repo_manifests.get(r["repository"], set())
             or (r["subject"] in repo_refs.get(r["repository"], set()) and r["subject"] != r["digest"]),
             f"{w}.subject is neither a manifest of an image of its repository nor a referrer there")
        mans = want_list(r["manifests"], f"{w}.manifests", 1_000_000)
        need(mans and mans[-1] == r["digest"], f"{w}.manifests: own digest is not last")
        for d in mans:
            want_str(d, f"{w}.manifests[]", regex=DIGEST_RE)
            need(d in by_digest, f"{w}: manifest {d} not in blobs")
        for d in want_list(r["blobs"], f"{w}.blobs", 2_000_000):
            want_str(d, f"{w}.blobs[]", regex=DIGEST_RE)
            # 4.5 says "not in blobs" -> refuse; section 10 lets a delta leave out an artifact's
            # non-config blobs. We follow section 10 (reported as a contradiction).
            need(d in by_digest or d in relied, f"{w}: blob {d} not in blobs (nor relies_on)")
        key = (r["repository"], r["subject"], r["digest"], r["tag"])
        need(key not in seen, f"{w}: listed twice")
        seen.add(key)
        needed |= set(mans) | set(r["blobs"])

    # parity (9)
    par = None
    if "parity" in m:
        par = validate_parity(m["parity"], chunks, names)

    return {"S": S, "size": size, "chunk_size": cs, "chunks": chunks, "by_digest": by_digest, "files": fmap,
            "members": order, "relied": relied, "needed": needed, "parity": par}


def validate_parity(p, chunks, data_names):
    want_obj(p, "parity", ["code", "field", "stripes", "stripe_data_chunks", "stripe_parity_chunks", "chunks"])
    need(p["code"] == "reed-solomon-zfec", f"parity.code {p['code']!r} not implemented")
    need(p["field"] == "GF(2^8)", f"parity.field {p['field']!r} not implemented")
    N = len(chunks)
    S = want_int(p["stripes"], 1, N, "parity.stripes")
    K = want_int(p["stripe_data_chunks"], 1, 256, "parity.stripe_data_chunks")
    M = want_int(p["stripe_parity_chunks"], 1, 255, "parity.stripe_parity_chunks")
    need(K == -(-N // S), f"parity: K = {K} != ceil(N / S) = {-(-N // S)}")
    need(K + M <= 256, "parity: K + M > 256")
    pcs = want_list(p["chunks"], "parity.chunks", 1_000_000)
    need(len(pcs) == S * M, f"parity.chunks: {len(pcs)} entries, expected S*M = {S * M}")
    names = set()
    for pos, c in enumerate(pcs):
        w = f"parity.chunks[{pos}]"
        want_obj(c, w, ["name", "size", "sha256", "stripe", "index"])
        n = want_str(c["name"], f"{w}.name", regex=CHUNK_NAME_RE)
        need(n not in ("manifest.json", "manifest.json.sig"), f"{w}.name reserved")
        need(n not in data_names and n not in names, f"{w}.name {n} not unique")
        names.add(n)
        want_str(c["sha256"], f"{w}.sha256", regex=HEX64_RE)
        need(is_int(c["stripe"]) and c["stripe"] == pos // M, f"{w}.stripe != {pos // M}")
        need(is_int(c["index"]) and c["index"] == pos % M, f"{w}.index != {pos % M}")
        s = pos // M
        L = max(chunks[i]["size"] for i in range(s, N, S))
        want_int(c["size"], L, L, f"{w}.size (stripe size L)")
    return {"S": S, "K": K, "M": M, "chunks": pcs}


# ------------------------------------------------------------------------------------ GF(2^8) RS code

EXP = [0] * 512
LOG = [0] * 256
_x = 1
for _e in range(255):
    EXP[_e] = _x
    LOG[_x] = _e
    _x <<= 1
    if _x & 0x100:
        _x ^= 0x11D
for _e in range(255, 512):
    EXP[_e] = EXP[_e - 255]


def gmul(a, b):
    return 0 if a == 0 or b == 0 else EXP[LOG[a] + LOG[b]]


def ginv(a):
    need(a != 0, "GF inverse of 0")
    return EXP[255 - LOG[a]]


def mat_inv(A):
    n = len(A)
    A = [row[:] + [1 if i == j else 0 for j in range(n)] for i, row in enumerate(A)]
    for col in range(n):
        piv = next((r for r in range(col, n) if A[r][col]), None)
        need(piv is not None, "singular matrix")
        A[col], A[piv] = A[piv], A[col]
        iv = ginv(A[col][col])
        A[col] = [gmul(iv, v) for v in A[col]]
        for r in range(n):
            if r != col and A[r][col]:
                f = A[r][col]
                A[r] = [a ^ gmul(f, b) for a, b in zip(A[r], A[col], strict=True)]
    return [row[n:] for row in A]


def mat_mul(A, B):
    return [[_dot(row, [B[k][j] for k in range(len(B))]) for j in range(len(B[0]))] for row in A]


def _dot(a, b):
    s = 0
    for x, y in zip(a, b, strict=True):
        s ^= gmul(x, y)
    return s


def generator(K, M):
    V = [[1 if c == 0 else 0 for c in range(K)]]
    for r in range(1, K + M):
        V.append([EXP[((r - 1) * c) % 255] for c in range(K)])
    return mat_mul(V, mat_inv(V[:K]))


_TABLES: dict[int, bytes] = {}


def _scale(c, data: bytes) -> int:
    if c == 0:
        return 0
    t = _TABLES.get(c)
    if t is None:
        t = _TABLES[c] = bytes(gmul(c, v) for v in range(256))
    return int.from_bytes(data.translate(t), "little")


def combine(coeffs, shares, L):
    acc = 0
    for c, sh in zip(coeffs, shares, strict=True):
        acc ^= _scale(c, sh)
    return acc.to_bytes(L, "little")


# ------------------------------------------------------------------------------------ chunk lookup

class Chunks:
    def __init__(self, dirs, info, problems):
        self.dirs, self.info, self.problems = dirs, info, problems
        self.paths: dict[str, Path | bytes] = {}

    def find(self, c) -> Path | None:
        """First copy, directory by directory, whose size and sha256 match."""
        for d in self.dirs:
            p = d / c["name"]
            try:
                if not p.is_file() or p.stat().st_size != c["size"]:
                    if p.exists():
                        self.problems.append(f"{p}: wrong size or not a regular file")
                    continue
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    for blk in iter(lambda: f.read(MiB), b""):
                        h.update(blk)
                if h.hexdigest() == c["sha256"]:
                    return p
                self.problems.append(f"{p}: sha256 mismatch")
            except OSError as e:
                self.problems.append(f"{p}: {e}")
        return None


def rebuild(info, par, have: dict[str, Path], data_missing, parity_missing, repair_dir: Path | None, notes):
    """Rebuild missing data chunks (in memory / repair_dir) stripe by stripe. Returns name->bytes."""
    chunks = info["chunks"]
    N = len(chunks)
    S, K, M = par["S"], par["K"], par["M"]
    G = generator(K, M)
    out = {}
    for s in range(S):
        members = list(range(s, N, S))  # data chunk indexes; share i div S
        lost = [i for i in members if chunks[i]["name"] in data_missing]
        if not lost:
            continue
        L = max(chunks[i]["size"] for i in members)
        avail = []  # (share number, bytes)
        for sh in range(K):
            i = s + sh * S
            if i >= N:
                avail.append((sh, bytes(L)))  # zero share
            elif chunks[i]["name"] not in data_missing:
                avail.append((sh, have[chunks[i]["name"]].read_bytes().ljust(L, b"\0")))
        for j in range(M):
            pc = par["chunks"][s * M + j]
            if pc["name"] not in parity_missing and len(avail) < K:
                avail.append((K + j, have[pc["name"]].read_bytes()))
        need(len(avail) >= K, f"stripe {s}: {K - len(avail)} too few shares to rebuild {len(lost)} chunk(s)")
        avail = avail[:K]
        inv = mat_inv([G[sh] for sh, _ in avail])
        for i in lost:
            sh = (i - s) // S
            data = combine(inv[sh], [b for _, b in avail], L)[:chunks[i]["size"]]
            need(hashlib.sha256(data).hexdigest() == chunks[i]["sha256"],
                 f"rebuilt {chunks[i]['name']}: sha256 does not match the manifest")
            notes.append(f"rebuilt {chunks[i]['name']} from parity (stripe {s})")
            out[chunks[i]["name"]] = data
            if repair_dir:
                repair_dir.mkdir(parents=True, exist_ok=True)
                tmp = repair_dir / (".tmp-" + chunks[i]["name"])
                tmp.write_bytes(data)
                os.replace(tmp, repair_dir / chunks[i]["name"])
    return out


# ------------------------------------------------------------------------------------- stream reading

class Stream:
    """Reads the concatenated chunks sequentially, re-hashing each chunk as it is consumed."""

    def __init__(self, info, sources):
        self.chunks, self.sources = info["chunks"], sources
        self.idx, self.buf, self.bufpos, self.h, self.pos = -1, b"", 0, None, 0

    def _next(self):
        if self.h is not None:
            need(self.h.hexdigest() == self.chunks[self.idx]["sha256"],
                 f"{self.chunks[self.idx]['name']} changed while read")
        self.idx += 1
        need(self.idx < len(self.chunks), "stream ends early")
        src = self.sources[self.chunks[self.idx]["name"]]
        self.buf = src if isinstance(src, bytes) else src.read_bytes()
        need(len(self.buf) == self.chunks[self.idx]["size"], "chunk size changed")
        self.h = hashlib.sha256(self.buf)
        self.bufpos = 0

    def read(self, n) -> bytes:
        parts = []
        while n:
            if self.bufpos == len(self.buf):
                self._next()
            take = min(n, len(self.buf) - self.bufpos)
            parts.append(self.buf[self.bufpos:self.bufpos + take])
            self.bufpos += take
            n -= take
            self.pos += take
        return b"".join(parts)

    def finish(self):
        need(self.idx == len(self.chunks) - 1 and self.bufpos == len(self.buf), "stream not fully consumed")
        need(self.h.hexdigest() == self.chunks[self.idx]["sha256"], "last chunk changed while read")


def decode_frame(comp: bytes, max_out: int, what: str) -> bytes:
    need(comp[:4] == ZSTD_MAGIC, f"{what}: not a zstd frame (magic {comp[:4].hex()})")
    try:
        fp = zstandard.get_frame_parameters(comp)
    except zstandard.ZstdError as e:
        raise Reject(f"{what}: bad frame header: {e}") from e
    if fp.content_size not in (zstandard.CONTENTSIZE_UNKNOWN, zstandard.CONTENTSIZE_ERROR):
        need(fp.content_size <= max_out, f"{what}: frame header claims {fp.content_size} bytes > {max_out}")
    d = zstandard.ZstdDecompressor().decompressobj()
    try:
        out = d.decompress(comp)
    except zstandard.ZstdError as e:
        raise Reject(f"{what}: zstd error: {e}") from e
    need(d.eof, f"{what}: frame incomplete")
    need(d.unused_data == b"", f"{what}: listed length holds more than one frame")
    need(len(out) <= max_out, f"{what}: decompresses to {len(out)} bytes > {max_out}")
    if fp.content_size not in (zstandard.CONTENTSIZE_UNKNOWN, zstandard.CONTENTSIZE_ERROR):
        need(fp.content_size == len(out), f"{what}: frame content size lies")
    return out


def _octal(field: bytes, what) -> int:
    if field and field[0] & 0x80:  # GNU base-256
        v = int.from_bytes(field, "big") & ~(0x80 << 8 * (len(field) - 1))
        return v
    s = field.replace(b"\0", b" ").strip()
    try:
        return int(s, 8) if s else 0
    except ValueError:
        raise Reject(f"{what}: bad octal field {field!r}") from None


def parse_tar_headers(buf: bytes, what: str) -> tuple[str, str, int, int]:
    """Parse header blocks at the start of buf. Returns (name, type, size, header length).
    Lenient like airgap says it is (pax 'x' and GNU 'L' accepted), strict on what is checked."""
    pos, pax, longname = 0, {}, None
    while True:
        need(pos + 512 <= len(buf), f"{what}: tar header truncated")
        need(pos + 512 <= 4 * KiB, f"{what}: tar headers over 4 KiB")
        h = buf[pos:pos + 512]
        need(h != bytes(512), f"{what}: end-of-archive where a member was expected")
        chk = _octal(h[148:156], what)
        need(chk == sum(h[:148]) + 8 * 32 + sum(h[156:]), f"{what}: tar header checksum wrong")
        typ = h[156:157]
        size = _octal(h[124:136], what)
        if typ in (b"x", b"L"):
            need(size <= 4 * KiB, f"{what}: extended header too long")
            body = buf[pos + 512:pos + 512 + size]
            need(len(body) == size, f"{what}: extended header truncated")
            if typ == b"L":
                longname = body.rstrip(b"\0").decode("utf-8", "replace")
            else:
                i = 0
                while i < len(body):
                    sp = body.index(b" ", i)
                    ln = int(body[i:sp])
                    k, _, v = body[i + len(body[i:sp]) + 1:i + ln - 1].partition(b"=")
                    pax[k.decode()] = v.decode("utf-8", "replace")
                    i += ln
            pos += 512 + -(-size // 512) * 512
            continue
        name = h[0:100].split(b"\0", 1)[0]
        if h[257:263] == b"ustar\0":
            prefix = h[345:500].split(b"\0", 1)[0]
            if prefix:
                name = prefix + b"/" + name
        name = name.decode("utf-8", "replace")
        if longname is not None:
            name = longname
        if "path" in pax:
            name = pax["path"]
        if "size" in pax:
            size = int(pax["size"])
        pos += 512
        return name, typ.decode("latin-1"), size, pos


def read_member(stream: Stream, path: str, e, S, sink, what):
    """Decode one member frame by frame; feed content to sink(bytes). Returns the member's sha256."""
    n = e["size"]
    F = len(e["frames"])
    h = hashlib.sha256()
    got = 0
    need(stream.pos == e["offset"], f"{what}: stream position {stream.pos} != offset {e['offset']}")
    for k, flen in enumerate(e["frames"]):
        comp = stream.read(flen)
        out = decode_frame(comp, S + 6 * KiB, f"{what} frame {k}")
        if k == 0:
            name, typ, tsize, hl = parse_tar_headers(out, what)
            need(name == path, f"{what}: tar name {name!r} != {path!r}")
            need(typ in ("0", "\0"), f"{what}: tar type {typ!r} is not a regular file")
            need(tsize == n, f"{what}: tar size {tsize} != manifest size {n}")
            out = out[hl:]
        want = min((k + 1) * S, n) - k * S if n else 0
        content, rest = out[:want], out[want:]
        need(len(content) == want, f"{what} frame {k}: {len(content)} content bytes, expected {want}")
        if k < F - 1:
            need(rest == b"", f"{what} frame {k}: {len(rest)} bytes beyond its segment")
        else:
            pad = (-n) % 512
            need(rest[:pad] == bytes(pad) and len(rest) >= pad, f"{what}: tar padding wrong")
            tail = rest[pad:]
            if path == "index.json":
                need(len(tail) >= 1024 and len(tail) % 512 == 0 and tail == bytes(len(tail)),
                     f"{what}: end-of-archive marker missing or not zero")
            else:
                need(tail == b"", f"{what}: {len(tail)} stray bytes after the padding")
        h.update(content)
        got += len(content)
        sink(content)
    need(got == n, f"{what}: {got} bytes, manifest says {n}")
    return h.hexdigest()


# ---------------------------------------------------------------------------- content consistency

def check_content(m, info, blobdata, index_json, notes, strict_index):
    """Images'/referrers' lists against the manifests carried; index.json against 2.4."""
    by = info["by_digest"]
    relied = info["relied"]

    def load(d):
        return strict_json_loose(blobdata(d), d)

    def walk(d, mt, mans, blobs):
        doc = load(d)
        if mt in INDEX_TYPES or "manifests" in doc:
            for c in doc.get("manifests", []):
                walk(c["digest"], c.get("mediaType"), mans, blobs)
        else:
            for dd in [doc.get("config")] + doc.get("layers", []) + doc.get("blobs", []):
                if dd:
                    blobs.add(dd["digest"])
                    where = by.get(dd["digest"]) or relied.get(dd["digest"])
                    need(where is not None, f"{d}: names {dd['digest']}, which the bundle neither holds "
                                            f"nor relies on")
                    need(where["size"] == dd["size"], f"{d}: descriptor size of {dd['digest']} != manifest")
            if doc.get("config"):
                need(doc["config"]["digest"] not in relied, f"{d}: config {doc['config']['digest']} left out "
                                                             f"of a delta (section 10 forbids)")
        mans.append(d)

    for i, im in enumerate(m["images"]):
        mans, blobs = [], set()
        walk(im["digest"], im["media_type"], mans, blobs)
        need(set(mans) == set(im["manifests"]), f"images[{i}].manifests != the manifests its index lists")
        need(blobs == set(im["blobs"]), f"images[{i}].blobs != configs+layers its manifests name "
                                        f"(extra {sorted(set(im['blobs']) - blobs)[:3]}, "
                                        f"missing {sorted(blobs - set(im['blobs']))[:3]})")
        pos = {d: j for j, d in enumerate(im["manifests"])}
        for d in im["manifests"]:
            doc = load(d)
            for c in doc.get("manifests", []):
                need(pos.get(c["digest"], 1e9) < pos[d], f"images[{i}]: {c['digest']} not pushed before {d}")
    for i, r in enumerate(m.get("referrers", [])):
        mans, blobs = [], set()
        walk(r["digest"], r["media_type"], mans, blobs)
        need(set(mans) == set(r["manifests"]), f"referrers[{i}].manifests mismatch")
        need(blobs == set(r["blobs"]), f"referrers[{i}].blobs mismatch")
    # relied-on blobs must be needed by something
    needed = set()
    for x in m["images"] + m.get("referrers", []):
        needed |= set(x["blobs"])
    extra = set(relied) - needed
    need(not extra, f"relies_on lists blobs nothing needs: {sorted(extra)[:3]}")
    # index.json (2.4) -- airgap does not read it; we check it and report
    problems = []
    try:
        idx = strict_json(index_json, "index.json")
        ents = idx.get("manifests", [])
        if len(ents) != len(m["images"]):
            problems.append(f"index.json has {len(ents)} entries for {len(m['images'])} images")
        for im, ent in zip(m["images"], ents, strict=False):
            ref = (im["registry"] + "/" if im["registry"] else "") + im["repository"] + \
                (":" + im["tag"] if im["tag"] is not None else "@" + im["digest"])
            got = (ent.get("mediaType"), ent.get("digest"), ent.get("size"),
                   ent.get("annotations", {}).get(REF_NAME))
            exp = (im["media_type"], im["digest"], by[im["digest"]]["size"], ref)
            if got != exp:
                problems.append(f"index.json entry {got} != expected {exp}")
    except Reject as e:
        problems.append(str(e))
    for p in problems:
        (notes.append if not strict_index else (lambda s: (_ for _ in ()).throw(Reject(s))))("index.json: " + p)


def strict_json_loose(data: bytes, what):
    try:
        return json.loads(data)
    except ValueError as e:
        raise Reject(f"{what}: manifest is not JSON: {e}") from e


# -------------------------------------------------------------------------------------------- main

def run(args) -> dict:
    bundle = Path(args.bundle)
    notes: list[str] = []
    trusted = dict(load_pubkey(Path(p)) for p in args.pubkey)
    mpath = bundle / "manifest.json"
    need(mpath.is_file(), "manifest.json missing")
    need(mpath.stat().st_size <= MAX_MANIFEST, "manifest.json over 256 MiB")
    mbytes = mpath.read_bytes()
    need(len(mbytes) <= MAX_MANIFEST, "manifest.json over 256 MiB")
    kid = check_signature(bundle, mbytes, trusted)           # BEFORE parsing manifest.json
    m = strict_json(mbytes, "manifest.json")
    info = validate_manifest(m, kid)

    # unlisted files: the spec says nothing; we report them
    listed = {c["name"] for c in info["chunks"]} | {"manifest.json", "manifest.json.sig"}
    if info["parity"]:
        listed |= {c["name"] for c in info["parity"]["chunks"]}
    for p in sorted(bundle.iterdir()):
        if not p.name.startswith(".") and p.name not in listed:
            notes.append(f"unlisted file ignored: {p.name}")

    dirs = [bundle] + [Path(d) for d in args.media]
    problems: list[str] = []
    finder = Chunks(dirs, info, problems)
    have, data_missing, parity_missing = {}, set(), set()
    for c in info["chunks"]:
        p = finder.find(c)
        if p:
            have[c["name"]] = p
        else:
            data_missing.add(c["name"])
    if info["parity"]:
        for c in info["parity"]["chunks"]:
            p = finder.find(c)
            if p:
                have[c["name"]] = p
            else:
                parity_missing.add(c["name"])
    notes += problems
    sources: dict = dict(have)
    if data_missing:
        need(info["parity"] is not None, f"missing or damaged chunks: {sorted(data_missing)}")
        sources.update(rebuild(info, info["parity"], have, data_missing, parity_missing,
                               Path(args.repair_dir) if args.repair_dir else None, notes))
    if parity_missing:
        notes.append(f"parity chunks missing or damaged (not needed): {sorted(parity_missing)}")

    # decode the stream, in stream order
    out = Path(args.extract) if args.extract else None
    tmpdir = None
    if out:
        need(not out.exists() or not any(out.iterdir()), f"{out} exists and is not empty")
        (out / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    else:
        import tempfile
        tmpdir = Path(tempfile.mkdtemp(prefix="specreader-"))
        (tmpdir / "blobs" / "sha256").mkdir(parents=True)
        out = tmpdir
    S = info["S"]
    stream = Stream(info, sources)
    small: dict[str, bytes] = {}
    try:
        for path, e in info["members"]:
            if path.startswith("blobs/"):
                digest = "sha256:" + path[len("blobs/sha256/"):]
                hexd = digest[7:]
                assert HEX64_RE.match(hexd)  # validated above; the path is built from it, never from tar
                dest = out / "blobs" / "sha256" / hexd
                tmp = out / "blobs" / "sha256" / (".tmp-" + hexd)
                with open(tmp, "wb") as f:
                    got = read_member(stream, path, e, S, f.write, path)
                need("sha256:" + got == digest, f"{path}: content sha256 is sha256:{got}")
                os.replace(tmp, dest)
            else:
                buf = bytearray()
                read_member(stream, path, e, S, buf.extend, path)
                small[path] = bytes(buf)
        stream.finish()
        need(small["oci-layout"] == OCI_LAYOUT, "oci-layout content is not " + OCI_LAYOUT.decode())
        check_content(m, info, lambda d: (out / "blobs" / "sha256" / d[7:]).read_bytes()
                      if d in info["by_digest"] else b"{}", small["index.json"], notes, args.strict_index)
        # delta: relied-on blobs
        missing_rel = []
        for d, r in info["relied"].items():
            found = None
            for bl in args.base_layout:
                p = Path(bl) / "blobs" / "sha256" / d[7:]
                if p.is_file() and p.stat().st_size == r["size"]:
                    hh = hashlib.sha256(p.read_bytes()).hexdigest()
                    if "sha256:" + hh == d:
                        found = p
                        break
            if found and args.extract:
                shutil.copyfile(found, out / "blobs" / "sha256" / d[7:])
            elif not found:
                missing_rel.append(d)
        if info["relied"]:
            notes.append(f"delta: relies on {len(info['relied'])} blob(s); {len(missing_rel)} not found in "
                         f"--base-layout (the extracted layout is incomplete without them)")
        if args.extract:
            (out / "oci-layout").write_bytes(small["oci-layout"])
            (out / "index.json").write_bytes(small["index.json"])
    finally:
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
    return {"accepted": True, "key_id": kid, "bundle_id": m["bundle_id"], "images": len(m["images"]),
            "blobs": len(info["by_digest"]), "relies_on": len(info["relied"]), "chunks": len(info["chunks"]),
            "parity_chunks": len(info["parity"]["chunks"]) if info["parity"] else 0, "notes": notes}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("--pubkey", action="append", required=True)
    ap.add_argument("--media", action="append", default=[])
    ap.add_argument("--extract")
    ap.add_argument("--base-layout", action="append", default=[])
    ap.add_argument("--repair-dir")
    ap.add_argument("--strict-index", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        res = run(args)
    except Reject as e:
        res = {"accepted": False, "error": str(e)}
    except (OSError, RecursionError) as e:
        res = {"accepted": False, "error": f"{type(e).__name__}: {e}"}
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        print(("ACCEPT " if res["accepted"] else "REJECT ") + (res.get("error") or
              f"{res['images']} images, {res['blobs']} blobs, {res['chunks']} chunks, key {res['key_id']}"))
        for n in res.get("notes", []):
            print("  note:", n)
    return 0 if res["accepted"] else 1


if __name__ == "__main__":
    sys.exit(main())
