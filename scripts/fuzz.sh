#!/usr/bin/env bash
# Fuzzes the wire parsers (fuzz/fuzz_targets/) for a bounded time each. A separate
# command, not part of CI or scripts/test.sh.
#
#   bash scripts/fuzz.sh                 # every target, 60 s each
#   bash scripts/fuzz.sh 300             # every target, 300 s each (or FUZZ_SECONDS=300)
#   bash scripts/fuzz.sh 120 event       # only the named targets
#
# cargo-fuzz needs nightly compiler flags (-Z sanitizer, sancov passes); only stable
# Rust is installed here, so RUSTC_BOOTSTRAP=1 lets the stable compiler accept them.
# AddressSanitizer (cargo-fuzz's default) works this way with stable 1.95 on x86_64
# Linux; where it does not, `cargo fuzz run -s none ...` builds without it (panics and,
# since cargo-fuzz builds with debug assertions, overflows are still caught).
#
# New inputs libFuzzer finds are added to fuzz/corpus/<target>/ (git ignores all but
# the seed-* files); a crash leaves its input in fuzz/artifacts/<target>/ and the
# command to reproduce it in the output, and makes this script fail.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-${FUZZ_SECONDS:-60}}"
if [ $# -gt 0 ]; then shift; fi
case "$seconds" in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2; exit 2 ;;
esac

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

failed=()
for target in "${targets[@]}"; do
  echo "==> fuzzing $target for ${seconds}s"
  extra=()
  # A dictionary of the contract's keys and values helps reach the deeper checks.
  if [ -f "fuzz/dicts/$target.dict" ]; then extra+=("-dict=fuzz/dicts/$target.dict"); fi
  if ! cargo fuzz run "$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 "${extra[@]}"; then
    failed+=("$target")
  fi
  echo "    corpus: $(find "fuzz/corpus/$target" -type f | wc -l) inputs in fuzz/corpus/$target"
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "==> FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "==> no crash in ${#targets[@]} target(s), ${seconds}s each"
