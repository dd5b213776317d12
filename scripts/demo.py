"""`make demo`: the whole job end to end on local registries, with demo images built here.

Today: build the demo images (one layer of --large-size bytes) into an OCI layout, push them into a
source registry with airgap's own client, `airgap copy` every image into a second registry, and check
with skopeo that every digest in the target equals the source's.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

from scripts.demo_images import build_demo_layout
from scripts.push_layout import push_layout
from tests.harness.registry import start_registry

ROOT = Path(__file__).resolve().parent.parent


def skopeo_digest(ref: str) -> str:
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                         check=True, capture_output=True, timeout=120).stdout
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=ROOT / "demo-work")
    parser.add_argument("--large-size", type=int, default=256 * 1024 * 1024)
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    airgap = [str(Path(sys.executable).parent / "airgap")]

    step(f"building demo images (large layer {args.large_size // (1024 * 1024)} MiB)")
    images = build_demo_layout(args.work / "layout", large_layer_size=args.large_size)
    for img in images:
        print(f"  {img.name:24} {img.digest}")

    src = start_registry(args.work / "registries")
    dst = start_registry(args.work / "registries")
    try:
        step(f"source registry {src.host}, target registry {dst.host}; pushing the demo images to the source")
        push_layout(args.work / "layout", src.host)

        step("airgap copy, source -> target")
        t0 = time.monotonic()
        for img in images:
            subprocess.run(airgap + ["copy", f"{src.host}/{img.name}", f"{dst.host}/{img.name}"], check=True)
        print(f"  copied {len(images)} images in {time.monotonic() - t0:.1f}s")

        step("checking digests with skopeo")
        bad = 0
        for img in images:
            want, got = skopeo_digest(f"{src.host}/{img.name}"), skopeo_digest(f"{dst.host}/{img.name}")
            ok = want == got == img.digest
            bad += not ok
            print(f"  {'ok ' if ok else 'BAD'} {img.name:24} {got}")
        if bad:
            print(f"\ndemo FAILED: {bad} digests differ", file=sys.stderr)
            return 1
        print("\ndemo OK: every image arrived with its original digest")
        return 0
    finally:
        src.close()
        dst.close()


if __name__ == "__main__":
    sys.exit(main())
