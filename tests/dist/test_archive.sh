#!/usr/bin/env bash
# The release archive end to end (issue 30), run by `make test-dist` after `make dist`: unpacked
# into an empty folder, ./h2o runs bench and compare with an empty PATH (no cargo, rustc or
# python reachable), no HOME and no other variable; the binary and the ONNX Runtime library need
# only the C runtime of an ordinary glibc system; no path of the build machine is in the binary.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
name="h2o-$version-linux-x86_64"
archive="$root/dist/$name.tar.gz"
passed=0 failed=0
check() { # check NAME COMMAND...: runs the command, counts it
    local what=$1; shift
    if "$@"; then passed=$((passed + 1)); echo "ok   $what"
    else failed=$((failed + 1)); echo "FAIL $what"; fi
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
empty="$work/empty-bin"
mkdir -p "$empty" "$work/unpacked"

check "the archive's sha256 matches" bash -c "cd '$root/dist' && sha256sum -c --quiet '$name.tar.gz.sha256'"
tar -xzf "$archive" -C "$work/unpacked" || { echo "FAIL cannot unpack $archive"; exit 1; }
dir="$work/unpacked/$name"
cd "$dir" || exit 1
run() { env -i PATH="$empty" ./h2o "$@"; }

check "no cargo, rustc or python on the PATH the runs get" \
    bash -c "! env -i PATH='$empty' /bin/sh -c 'command -v cargo || command -v rustc || command -v python3 || command -v python'"
check "the archive holds its parts" test -x h2o -a -f model/model.onnx -a -f model/manifest.json \
    -a -f model/tokenizer.json -a -f data/wiki.test.raw -a -f data/NOTICE.txt \
    -a -f seed/pytorch-results.csv -a -f lib/ONNXRUNTIME-LICENSE -a -f lib/ONNXRUNTIME-ThirdPartyNotices.txt -a -f README.md
check "the text is WikiText-2 raw test, byte for byte" \
    bash -c "echo '173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08  data/wiki.test.raw' | sha256sum -c --quiet"
v=$(run --version)
echo "     $v"
check "--version names the version, the commit and the ONNX Runtime expected" \
    bash -c "[[ '$v' == 'h2o $version (commit '* && '$v' != *'commit unknown'* && '$v' == *'ONNX Runtime 1.'*' expected'* ]]"
info=$(run info 2>&1)
check "info finds the library, model and text beside the binary" \
    bash -c "grep -q 'onnxruntime .*($dir/lib/libonnxruntime.so' <<<'$info' && grep -q '$dir/model (used)' <<<'$info' && grep -q '$dir/data/wiki.test.raw (used)' <<<'$info'"

# Only the C runtime: every needed library is one of glibc's, libgcc_s or libstdc++.
c_runtime='^(linux-vdso\.so\.1|libc\.so\.6|libm\.so\.6|libdl\.so\.2|libpthread\.so\.0|librt\.so\.1|libgcc_s\.so\.1|libstdc\+\+\.so\.6|/lib64/ld-linux-x86-64\.so\.2|ld-linux-x86-64\.so\.2)$'
needs_only_c_runtime() {
    local extra
    extra=$(readelf -d "$1" | sed -n 's/.*NEEDED.*\[\(.*\)\]/\1/p' | grep -Ev "$c_runtime")
    [ -z "$extra" ] || { echo "     $1 needs: $extra"; return 1; }
    ! ldd "$1" | grep -q 'not found'
}
check "h2o needs only the C runtime" needs_only_c_runtime h2o
for lib in lib/libonnxruntime.so.*; do
    check "$lib needs only the C runtime" needs_only_c_runtime "$lib"
done
check "no path of the build machine in the binary ($root)" bash -c "! grep -aq '$root' h2o"

start=$(date +%s)
run bench --exp full,h2o:192+64 --ppl-tokens 256 --gen 32 --name archive > "$work/bench.out" 2>&1
rc=$?
echo "     bench took $(( $(date +%s) - start )) s"
check "bench runs from the archive (exit 0)" test "$rc" -eq 0 || cat "$work/bench.out"
check "bench wrote its CSV and JSON, both experiments ok" \
    bash -c "test -f results/archive.json && [ \$(grep -c ',ok,' results/archive.csv) -eq 2 ]"
run compare results/archive.csv seed/pytorch-results.csv > "$work/compare.out" 2>&1
rc=$?
check "compare against the seed's CSV runs from the archive (exit 0)" test "$rc" -eq 0 || cat "$work/compare.out"
check "compare lines up the full cache with the seed's Baseline" grep -q 'Baseline' "$work/compare.out"

echo "dist: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
