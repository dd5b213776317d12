"""`make demo`: the whole job end to end on local registries, with demo images built here.

Connected side: build the demo images (one layer of --large-size bytes) and push them into a source
registry; `airgap keygen`; `airgap export` them into a signed bundle of small chunks. The trip:
`airgap verify` the bundle. Disconnected side: `airgap import` it into a second, empty registry, then
check with skopeo that every image arrived with its original digest, and import again (a no-op).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from scripts.demo_images import build_demo_layout
from scripts.push_layout import push_layout
from tests.harness.registry import start_registry
from tests.harness.skopeo import skopeo_digest

ROOT = Path(__file__).resolve().parent.parent


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=ROOT / "demo-work")
    parser.add_argument("--large-size", type=int, default=256 * 1024 * 1024)
    parser.add_argument("--chunk-size", default="64MiB")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    env = {**os.environ, "AIRGAP_STATE_DIR": str(args.work / "state")}

    def airgap(*argv: str) -> None:
        print("$ airgap " + " ".join(argv), flush=True)
        subprocess.run([str(Path(sys.executable).parent / "airgap"), *argv], check=True, env=env)

    step(f"building demo images (large layer {args.large_size // (1024 * 1024)} MiB)")
    images = build_demo_layout(args.work / "layout", large_layer_size=args.large_size)
    for img in images:
        print(f"  {img.name:24} {img.digest}")

    src = start_registry(args.work / "registries")
    dst = start_registry(args.work / "registries")
    try:
        step(f"connected side: source registry {src.host}")
        push_layout(args.work / "layout", src.host)
        key, bundle = args.work / "keys" / "demo.key", args.work / "bundle"
        airgap("keygen", str(key))
        t0 = time.monotonic()
        airgap("export", *[f"{src.host}/{img.name}" for img in images], "--output", str(bundle),
               "--key", str(key), "--chunk-size", args.chunk_size)
        print(f"  exported in {time.monotonic() - t0:.1f}s")

        step("the trip: check the media")
        airgap("verify", str(bundle), "--pubkey", f"{key}.pub")
        airgap("inspect", str(bundle))

        step(f"disconnected side: import into the empty registry {dst.host}")
        t0 = time.monotonic()
        airgap("import", str(bundle), "--to", dst.host, "--pubkey", f"{key}.pub")
        print(f"  imported in {time.monotonic() - t0:.1f}s")

        step("checking digests with skopeo")
        bad = 0
        for img in images:
            got = skopeo_digest(f"{dst.host}/{img.name}")
            ok = got == img.digest == skopeo_digest(f"{src.host}/{img.name}")
            bad += not ok
            print(f"  {'ok ' if ok else 'BAD'} {img.name:24} {got}")
        step("importing again: nothing to do")
        airgap("import", str(bundle), "--to", dst.host, "--pubkey", f"{key}.pub")
        if bad:
            print(f"\ndemo FAILED: {bad} digests differ", file=sys.stderr)
            return 1
        print("\ndemo OK: every image crossed the gap with its original digest")
        return 0
    finally:
        src.close()
        dst.close()


if __name__ == "__main__":
    sys.exit(main())
