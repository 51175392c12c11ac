#!/usr/bin/env bash
# Builds the enclave images that this machine can build, for `make eif`.
#
# Everywhere: a stand-in EIF built by eif-tool (a placeholder kernel, a boot
# ramdisk with a placeholder init, the real enclave-agent in the application
# ramdisk), its describe output, a key policy for it and the policy's lint.
# The stand-in has real, reproducible PCRs but does not boot.
#
# On a Nitro host with Docker and nitro-cli: the real image from
# eif/Dockerfile, built by nitro-cli, and a rebuild by eif-tool from the
# kernel and the two ramdisks nitro-cli used, which must give the same PCRs.
#
# Environment: EIF_OUT (output directory, default target/eif),
# CARGO_TARGET_DIR (cargo's output folder, default target),
# EIF_PRINCIPAL (principal ARN of the policy), SOURCE_DATE_EPOCH (default 0),
# NITRO_BLOBS (default /usr/share/nitro_enclaves/blobs).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
out=${EIF_OUT:-$target/eif}
principal=${EIF_PRINCIPAL:-arn:aws:iam::111122223333:role/parent-instance}
blobs=${NITRO_BLOBS:-/usr/share/nitro_enclaves/blobs}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-0}

step() { printf '\n== %s\n' "$*"; }

step "build eif-tool and enclave-agent (release)"
cargo build --release --locked --manifest-path "$repo/Cargo.toml" -p eif-tool -p enclave-agent
eif_tool=$target/release/eif-tool
mkdir -p "$out"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

step "stand-in image: $out/stand-in.eif"
mkdir -p "$stage/boot/dev" "$stage/app/rootfs/usr/local/bin"
printf 'placeholder init: this image is for measurement and tests, it does not boot\n' >"$stage/boot/init"
chmod 0755 "$stage/boot/init"
install -m 0755 "$target/release/enclave-agent" "$stage/app/rootfs/usr/local/bin/enclave-agent"
for directory in dev run sys var proc tmp; do mkdir -p "$stage/app/rootfs/$directory"; done
printf '/usr/local/bin/enclave-agent\ngenerate-random\n--number-of-bytes\n32\n' >"$stage/app/cmd"
printf 'RUST_LOG=info\n' >"$stage/app/env"
chmod 0644 "$stage/app/cmd" "$stage/app/env"
printf 'placeholder kernel\n' >"$stage/bzImage"
"$eif_tool" ramdisk "$stage/boot" -o "$out/stand-in-boot.cpio"
"$eif_tool" ramdisk "$stage/app" -o "$out/stand-in-app.cpio"
"$eif_tool" build --kernel "$stage/bzImage" --cmdline "console=ttyS0" \
    --ramdisk "$out/stand-in-boot.cpio" --ramdisk "$out/stand-in-app.cpio" \
    --image-name stand-in -o "$out/stand-in.eif" >/dev/null
"$eif_tool" describe "$out/stand-in.eif" --output text

step "key policy for the stand-in image: $out/stand-in-policy.json"
"$eif_tool" policy --eif "$out/stand-in.eif" --principal "$principal" --pcr 1 --pcr 2 >"$out/stand-in-policy.json"
"$eif_tool" policy-lint "$out/stand-in-policy.json"

step "real enclave image"
if ! command -v nitro-cli >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1 || [ ! -f "$blobs/bzImage" ]; then
    cat <<EOF
SKIPPED: the real enclave image needs a Nitro host: Docker, nitro-cli (the
aws-nitro-enclaves-cli package) and its kernel blobs in $blobs.
On such a host, run \`make eif\` again; docs/enclave-image.md has the steps.
EOF
    exit 0
fi

artifacts=$stage/artifacts
mkdir -p "$artifacts"
docker build -f "$repo/eif/Dockerfile" -t recipient-enclave:latest "$repo"
NITRO_CLI_ARTIFACTS=$artifacts nitro-cli build-enclave --docker-uri recipient-enclave:latest \
    --output-file "$out/enclave.eif" | tee "$out/enclave-build.json"
"$eif_tool" describe "$out/enclave.eif" >"$out/enclave-describe.json"
"$eif_tool" describe "$out/enclave.eif" --output text

step "rebuild with eif-tool from nitro-cli's kernel and ramdisks"
# NOTE: whether nitro-cli strips the trailing newline of blobs/cmdline is not
# verified here, so the rebuild tries the trimmed text, then the exact bytes.
cmdline_exact=$(cat "$blobs/cmdline"; printf x)
cmdline_exact=${cmdline_exact%x}
for cmdline in "$(cat "$blobs/cmdline")" "$cmdline_exact"; do
    "$eif_tool" build --kernel "$blobs/bzImage" --cmdline "$cmdline" \
        --ramdisk "$artifacts/bootstrap-initrd.img" --ramdisk "$artifacts/customer-initrd.img" \
        -o "$out/enclave-rebuilt.eif" >"$out/enclave-rebuilt.json"
    if python3 - "$out/enclave-build.json" "$out/enclave-rebuilt.json" <<'PYTHON'
import json, sys
nitro = json.load(open(sys.argv[1]))["Measurements"]
ours = json.load(open(sys.argv[2]))["Measurements"]
equal = True
for pcr in ("PCR0", "PCR1", "PCR2"):
    verdict = "equal" if nitro[pcr] == ours[pcr] else "DIFFERENT"
    equal = equal and nitro[pcr] == ours[pcr]
    print(f"{pcr}: nitro-cli {nitro[pcr][:16]}... eif-tool {ours[pcr][:16]}... {verdict}")
sys.exit(0 if equal else 1)
PYTHON
    then
        echo "eif-tool reproduces nitro-cli's PCRs"
        exit 0
    fi
done
echo "eif-tool did not reproduce nitro-cli's PCRs; compare $out/enclave-describe.json with nitro-cli describe-eif" >&2
exit 1
