#!/usr/bin/env python3
"""The vendored rumqttd as numbered patches against the published crate.

vendor/rumqttd is rumqttd 0.20.0 from crates.io with our patches
(vendor/rumqttd/OTA-PATCHES.md says what each does and why). This keeps
the exact diff beside it, one numbered patch file per changed file, in
vendor/rumqttd/patches/, so that updating to a new upstream is: apply the
patches to the new release, fix what no longer applies, regenerate.

    python3 tools/rumqttd_patches.py write   # regenerate the patch files
    python3 tools/rumqttd_patches.py check   # CI: they match the vendored tree

The published source is the one cargo fetched into $CARGO_HOME/registry
(fetched here through a throw-away project when missing). Exit 1 when
`check` finds the patch files stale.
"""

import os
import pathlib
import subprocess
import sys
import tempfile

VERSION = "0.20.0"
ROOT = pathlib.Path(__file__).resolve().parent.parent
VENDOR = ROOT / "vendor" / "rumqttd"
PATCHES = VENDOR / "patches"
# Ours, not rumqttd's: never part of the diff.
OURS = {"OTA-PATCHES.md", "patches"}
# cargo's unpacking markers in the registry copy.
CARGO_MARKERS = {".cargo-ok", ".cargo_vcs_info.json"}


def cargo_home() -> pathlib.Path:
    return pathlib.Path(os.environ.get("CARGO_HOME", pathlib.Path.home() / ".cargo"))


def pristine() -> pathlib.Path:
    """The published crate's source, fetched if cargo has not yet."""
    found = sorted((cargo_home() / "registry" / "src").glob(f"*/rumqttd-{VERSION}"))
    if found:
        return found[0]
    with tempfile.TemporaryDirectory() as d:
        p = pathlib.Path(d)
        (p / "src").mkdir()
        (p / "src" / "lib.rs").write_text("")
        (p / "Cargo.toml").write_text(
            '[package]\nname = "fetch-rumqttd"\nversion = "0.0.0"\nedition = "2021"\n'
            f'[dependencies]\nrumqttd = {{ version = "={VERSION}", default-features = false }}\n'
        )
        subprocess.run(["cargo", "fetch", "--quiet"], cwd=p, check=True)
    found = sorted((cargo_home() / "registry" / "src").glob(f"*/rumqttd-{VERSION}"))
    if not found:
        sys.exit(f"cargo fetched rumqttd {VERSION} but its source is not under {cargo_home()}/registry/src")
    return found[0]


def files(base: pathlib.Path, skip: set) -> set:
    out = set()
    for path in base.rglob("*"):
        rel = path.relative_to(base)
        if rel.parts[0] in skip or not path.is_file():
            continue
        out.add(rel.as_posix())
    return out


def diff_one(upstream: pathlib.Path, rel: str) -> str:
    """The unified diff of one file, `a/` upstream to `b/` ours, with no
    timestamps (so it is the same on every machine)."""
    old = upstream / rel
    new = VENDOR / rel
    cmd = [
        "diff", "-u", "-N",
        "--label", f"a/{rel}" if old.exists() else "/dev/null",
        "--label", f"b/{rel}" if new.exists() else "/dev/null",
        str(old) if old.exists() else "/dev/null",
        str(new) if new.exists() else "/dev/null",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode > 1:
        sys.exit(f"diff failed on {rel}: {r.stderr}")
    return r.stdout


def expected() -> dict:
    """Patch file name -> contents, for the tree as it is."""
    upstream = pristine()
    changed = sorted(
        rel
        for rel in files(upstream, CARGO_MARKERS) | files(VENDOR, OURS)
        if diff_one(upstream, rel)
    )
    out = {}
    for n, rel in enumerate(changed, 1):
        slug = rel.replace("/", "-").replace(".", "_")
        out[f"{n:04d}-{slug}.patch"] = diff_one(upstream, rel)
    return out


def main() -> int:
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode not in ("write", "check"):
        print(__doc__.strip().splitlines()[0])
        print("usage: tools/rumqttd_patches.py write|check")
        return 2
    want = expected()
    have = {p.name: p.read_text() for p in PATCHES.glob("*.patch")} if PATCHES.exists() else {}
    if mode == "write":
        PATCHES.mkdir(exist_ok=True)
        for name in set(have) - set(want):
            (PATCHES / name).unlink()
        for name, text in want.items():
            (PATCHES / name).write_text(text)
        print(f"{len(want)} patch files in {PATCHES.relative_to(ROOT)}")
        return 0
    stale = sorted(n for n in set(want) | set(have) if want.get(n) != have.get(n))
    if stale:
        print(f"vendor/rumqttd/patches does not match the vendored tree ({', '.join(stale)}):")
        print("run `python3 tools/rumqttd_patches.py write` and commit the patches")
        return 1
    print(f"{len(want)} patch files match vendor/rumqttd against rumqttd {VERSION}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
