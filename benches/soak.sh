#!/usr/bin/env bash
# Soak run (issue 14; not a CI test): the appliance for a while under node outages and
# backend link drops, then the figures (the driver: examples/soak.rs).
#
#   benches/soak.sh            # 30 minutes
#   benches/soak.sh 300        # 5 minutes
#
# Environment: SOAK_DISPATCH_EVERY_S (10), SOAK_FLAP_EVERY_S (120: node_b is stopped this
# often), SOAK_DOWN_S (45: for this long), SOAK_LINK_EVERY_S (75: the backend closes the
# link), SOAK_INSTANCES (30 per study). Uses the test build (the C-ECHO period is shortened to 5 s through its test knob).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v storescp >/dev/null 2>&1 || { echo "storescp (dcmtk) is needed" >&2; exit 2; }
export SOAK_SECS="${1:-${SOAK_SECS:-1800}}"
cargo build --all-features --bin laminate-proxy --example soak
target="${CARGO_TARGET_DIR:-target}"
# Ctrl-C or a timeout stops the driver and what it started (appliance, storescp).
trap 'kill 0' INT TERM
SOAK_BIN="$target/debug/laminate-proxy" "$target/debug/examples/soak" &
wait $!
