#!/usr/bin/env bash
# The measurements of issues 3 and 4 against stock peers, on this machine, loopback only.
# Builds the LD_PRELOAD shim of ../shared/bench (the peers' best case), installs what
# is missing (dcmtk, Orthanc, dicom-rs's dicom-storescu), then runs the benches.
#
#   benches/cstore_vs_peers.sh            # C-STORE senders vs peers, end to end, peak RSS
#   benches/cstore_vs_peers.sh ingest     # our ingest SCP vs storescp, fsync rate, deletion
#   benches/cstore_vs_peers.sh all        # both
#
# Environment (see the benches' docs): BENCH_INSTANCES, BENCH_RUNS, BENCH_SKIP_STOCK,
# BENCH_RECEIVERS (ignore,writing,orthanc), BENCH_REVERSE, BENCH_SKIP_E2E, BENCH_SKIP_RSS,
# BENCH_RSS_INSTANCES, BENCH_SKIP_DELETE. Results: $CARGO_TARGET_DIR/bench-results/*.md
# (or target/bench-results/).
set -euo pipefail
cd "$(dirname "$0")/.."

what="${1:-cstore}"
case "$what" in
  cstore | ingest | all) ;;
  *) echo "usage: $0 [cstore|ingest|all]" >&2; exit 2 ;;
esac

need_apt=()
command -v storescp >/dev/null 2>&1 || need_apt+=(dcmtk)
[ -x /usr/sbin/Orthanc ] || need_apt+=(orthanc)
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target"
shim_src=../shared/bench/quickack.c
if [ -f "$shim_src" ]; then
  gcc -O2 -shared -fPIC -o "$target/quickack.so" "$shim_src" -ldl
  QUICKACK_SO="$(cd "$target" && pwd)/quickack.so"
  export QUICKACK_SO
else
  echo "note: $shim_src not found: no shim rows" >&2
fi

if ! command -v dicom-storescu >/dev/null 2>&1 && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/dicom-storescu" ]; then
  cargo install --locked dicom-storescu
fi

if [ "$what" = cstore ] || [ "$what" = all ]; then
  cargo bench --bench cstore_vs_peers
fi
if [ "$what" = ingest ] || [ "$what" = all ]; then
  cargo bench --bench ingest_vs_storescp
fi
