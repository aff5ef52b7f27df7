#!/usr/bin/env bash
# Checks the CUDA archive (`make dist-cuda`, issue 30) without a GPU: its parts are there, the
# binary has the CUDA provider compiled in (asking for CUDA gets past the feature check), it runs
# on the CPU provider with nothing else installed, and its README names what the machine needs.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
name="h2o-$version-linux-x86_64-cuda"
passed=0 failed=0
check() {
    local what=$1; shift
    if "$@"; then passed=$((passed + 1)); echo "ok   $what"
    else failed=$((failed + 1)); echo "FAIL $what"; fi
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/empty-bin"
tar -xzf "$root/dist/$name.tar.gz" -C "$work" || { echo "FAIL cannot unpack"; exit 1; }
cd "$work/$name" || exit 1
run() { env -i PATH="$work/empty-bin" ./h2o "$@"; }
check "the CUDA provider's libraries are in lib/" test -f lib/libonnxruntime_providers_cuda.so \
    -a -f lib/libonnxruntime_providers_shared.so -a -f lib/ONNXRUNTIME-LICENSE
ls lib/libonnxruntime.so.* > /dev/null 2>&1; check "the runtime library is in lib/" test $? -eq 0
check "the README names the CUDA libraries the provider links against" grep -q 'libcudart.so' README.md
out=$(run info --provider cuda 2>&1)
check "the binary has the CUDA provider compiled in" bash -c "! grep -q 'without the .cuda. feature' <<<'$out'"
check "it runs on the CPU provider with nothing else installed" run info --provider cpu
echo "archive: $(du -h "$root/dist/$name.tar.gz" | cut -f1); unpacked: $(du -sh . | cut -f1)"
echo "dist-cuda: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
