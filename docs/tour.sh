#!/bin/sh
# docs/tour.sh: the README's quick tour, as a script you can run or read.
#
#   ota init ota-quickstart                                   # keys, ota.toml, fleet.toml
#   ota serve --config ota-quickstart/ota.toml                # terminal 1: the bridge
#   ota sim --config ota-quickstart/ota.toml --devices 100    # terminal 2: 100 devices
#   docs/tour.sh ota-quickstart                               # terminal 3: this tour
#
# It signs a firmware image with the release key, uploads it, groups the
# devices by customer, and rolls the release out in three waves until every
# device runs it. CI runs this file word for word (tests/cli_tour.rs), so it
# cannot drift from the code. OTA names the ota binary (default: `ota` on
# PATH; from a source tree: OTA=target/release/ota).
set -eu

DIR=${1:?usage: docs/tour.sh DIR (a setup of `ota init DIR`, with ota serve and ota sim running)}
OTA=${OTA:-ota}
# Every ota command below reads the broker, the operator key and the
# bridge's director key from this file's [operator] section.
export OTA_CONFIG="$DIR/ota.toml"

step() { printf '\n== %s\n' "$*"; }

step "1. The fleet: every simulated device said who it is (arch, versions, labels)"
"$OTA" devices list

step "2. A firmware image, signed with the release key (keep it offline in production)"
# A stand-in for your build: 256 KiB of random bytes.
head -c 262144 /dev/urandom > "$DIR/fw-1.1.0.bin"
"$OTA" artifact sign "$DIR/fw-1.1.0.bin" --kind firmware --component main \
    --version 1.1.0 --arch esp32 --key "$DIR/keys/release.key"
"$OTA" artifact inspect "$DIR/fw-1.1.0.bin.manifest" --trust "$DIR/keys/release.pub"

step "3. Upload it: the bridge checks the signature and serves it in blocks"
"$OTA" artifact push "$DIR/fw-1.1.0.bin"

step "4. Groups by label"
"$OTA" group put acme --selector 'customer=acme'
"$OTA" group put globex --selector 'customer=globex'

step "5. A campaign in waves: a tenth of acme, all of acme, then globex too"
# Each wave widens only while the last one met 95% success; above 5%
# failures it halts by itself.
"$OTA" campaign create --id fw-1.1.0 --release main-1.1.0-esp32 \
    --wave 'acme=10%' --wave 'acme=100%' --wave 'acme=100%,globex=100%' \
    --success-bar 95% --halt-above 5%
"$OTA" campaign start fw-1.1.0
# Live progress; exits 0 once the campaign completes, non-zero if it halts.
"$OTA" campaign watch fw-1.1.0

step "6. Every device on 1.1.0"
"$OTA" devices list

printf '\nNext: the dashboard (the [http] listen address of %s), `ota campaign --help`, docs/operations.md.\n' "$OTA_CONFIG"
