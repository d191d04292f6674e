#!/usr/bin/env bash
# Builds the Greengrass component from release binaries: one artifact zip per architecture
# (edgewarden-<arch>.zip holding the `edgewarden` binary) and a copy of the recipe with each
# artifact's SHA-256 digest filled in, laid out for
#   greengrass-cli deployment create --recipeDir OUT/recipes --artifactDir OUT/artifacts \
#       --merge com.edgewarden.Agent=VERSION
# or for upload to S3 (--bucket NAME rewrites the artifact URIs).
#
# Binaries are taken from TARGET_DIR/<triple>/release/edgewarden (musl or gnu triples), and
# for the host's architecture also from TARGET_DIR/release/edgewarden. Architectures without a
# binary are left out of the output recipe (their manifests would fail a deployment), and the
# script says so. Build them first, e.g.
#   cargo build --release --locked -p edgewarden --target aarch64-unknown-linux-musl
#
# Usage: build-artifacts.sh [--target-dir DIR] [--out DIR] [--bucket NAME]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
target_dir=${CARGO_TARGET_DIR:-$root/target}
out=$root/dist/greengrass
bucket=""
while [ $# -gt 0 ]; do
    case "$1" in
        --target-dir) target_dir=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --bucket) bucket=$2; shift 2 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
command -v python3 >/dev/null 2>&1 || { echo "error: python3 is needed" >&2; exit 2; }

exec python3 - "$here/recipe.json" "$root/Cargo.toml" "$target_dir" "$out" "$bucket" "$(uname -m)" <<'PY'
import base64, copy, hashlib, json, os, re, sys, zipfile

recipe_path, cargo_toml, target_dir, out, bucket, host = sys.argv[1:7]
recipe = json.load(open(recipe_path))
name, version = recipe["ComponentName"], recipe["ComponentVersion"]
m = re.search(r'^\[workspace\.package\][^\[]*?^version\s*=\s*"([^"]+)"', open(cargo_toml).read(), re.M | re.S)
if not m or m.group(1) != version:
    sys.exit(f"error: {recipe_path}: ComponentVersion {version} differs from the crate version {m and m.group(1)}")

# artifact name -> (candidate target triples, ELF e_machine, host `uname -m` values)
ARCHS = {
    "x86_64": (["x86_64-unknown-linux-musl", "x86_64-unknown-linux-gnu"], 62, ["x86_64"]),
    "aarch64": (["aarch64-unknown-linux-musl", "aarch64-unknown-linux-gnu"], 183, ["aarch64"]),
    "armv7": (["armv7-unknown-linux-musleabihf", "armv7-unknown-linux-gnueabihf"], 40, ["armv7l"]),
    "armv6": (["arm-unknown-linux-musleabihf", "arm-unknown-linux-gnueabihf"], 40, ["armv6l"]),
}

def elf_machine(path):
    with open(path, "rb") as f:
        head = f.read(20)
    if head[:4] != b"\x7fELF":
        return None
    order = "little" if head[5] == 1 else "big"
    return int.from_bytes(head[18:20], order)

art_dir = os.path.join(out, "artifacts", name, version)
rec_dir = os.path.join(out, "recipes")
os.makedirs(art_dir, exist_ok=True)
os.makedirs(rec_dir, exist_ok=True)
out_recipe = copy.deepcopy(recipe)
kept, built = [], []
for manifest in out_recipe["Manifests"]:
    artifact = manifest["Artifacts"][0]
    zip_name = artifact["URI"].rsplit("/", 1)[1]
    arch = zip_name[len("edgewarden-"):-len(".zip")]
    triples, machine, hosts = ARCHS[arch]
    candidates = [os.path.join(target_dir, t, "release", "edgewarden") for t in triples]
    if host in hosts:
        candidates.append(os.path.join(target_dir, "release", "edgewarden"))
    binary = next((c for c in candidates if os.path.isfile(c)), None)
    if binary is None:
        print(f"SKIPPED {arch}: no release binary (looked for {', '.join(candidates)})")
        continue
    if elf_machine(binary) != machine:
        sys.exit(f"error: {binary} is not an ELF binary for {arch} (e_machine {elf_machine(binary)}, expected {machine})")
    zip_path = os.path.join(art_dir, zip_name)
    info = zipfile.ZipInfo("edgewarden", date_time=(2020, 1, 1, 0, 0, 0))
    info.external_attr = (0o100755 << 16)
    info.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(zip_path, "w") as z, open(binary, "rb") as b:
        z.writestr(info, b.read())
    data = open(zip_path, "rb").read()
    artifact["Digest"] = base64.b64encode(hashlib.sha256(data).digest()).decode()
    artifact["Algorithm"] = "SHA-256"
    if bucket:
        artifact["URI"] = artifact["URI"].replace("s3://BUCKET/", f"s3://{bucket}/", 1)
    kept.append(manifest)
    built.append(arch)
    print(f"{arch}: {zip_path} ({len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}) from {binary}")
if not kept:
    sys.exit("error: no release binary found for any architecture; build one first (cargo build --release --locked -p edgewarden)")
out_recipe["Manifests"] = kept
path = os.path.join(rec_dir, f"{name}-{version}.json")
with open(path, "w") as f:
    json.dump(out_recipe, f, indent=2)
    f.write("\n")
print(f"recipe: {path} (manifests: {', '.join(built)})")
PY
