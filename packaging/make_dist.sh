#!/usr/bin/env bash
# Builds the release archive: dist/h2o-<version>-linux-x86_64[-cuda].tar.gz and its .sha256.
# Usage: packaging/make_dist.sh cpu|cuda BINARY ORT_LIB_DIR MODEL_DIR TEXT SEED_CSV
#   BINARY       the release binary (target/release/h2o, or the cuda build's)
#   ORT_LIB_DIR  an onnxruntime wheel's onnxruntime/ folder (capi/ with the libraries, LICENSE,
#                ThirdPartyNotices.txt)
#   MODEL_DIR    the exported default model (model.onnx, manifest.json, tokenizer.json)
#   TEXT         WikiText-2 raw test (wiki.test.raw)
#   SEED_CSV     the seed's results CSV (pytorch-results.csv)
# Unpacked anywhere, ./h2o finds lib/, model/ and data/ beside itself (src/locate.rs).
set -euo pipefail
kind=$1 bin=$2 ort=$3 model=$4 text=$5 seed=$6
root=$(cd "$(dirname "$0")/.." && pwd)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
name="h2o-$version-linux-x86_64"
[ "$kind" = cuda ] && name="$name-cuda"
for f in "$bin" "$ort/capi" "$ort/LICENSE" "$ort/ThirdPartyNotices.txt" "$model/manifest.json" \
         "$model/model.onnx" "$model/tokenizer.json" "$text" "$seed"; do
    [ -e "$f" ] || { echo "make_dist: missing $f" >&2; exit 2; }
done
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
out="$stage/$name"
mkdir -p "$out/lib" "$out/model" "$out/data" "$out/seed"
# the binary without its debug info (paths of the build machine live only there)
objcopy --strip-debug "$bin" "$out/h2o" 2>/dev/null || cp "$bin" "$out/h2o"
chmod 755 "$out/h2o"
# ONNX Runtime: the CPU library, or every provider library of onnxruntime-gpu
cp "$ort"/capi/libonnxruntime.so.* "$out/lib/"
if [ "$kind" = cuda ]; then
    cp "$ort"/capi/libonnxruntime_providers_*.so "$out/lib/"
fi
cp "$ort/LICENSE" "$out/lib/ONNXRUNTIME-LICENSE"
cp "$ort/ThirdPartyNotices.txt" "$out/lib/ONNXRUNTIME-ThirdPartyNotices.txt"
cp "$model"/model.onnx "$model"/manifest.json "$model"/tokenizer.json "$out/model/"
[ -e "$model/model.onnx.data" ] && cp "$model/model.onnx.data" "$out/model/"
cp "$text" "$out/data/wiki.test.raw"
cp "$root/packaging/WIKITEXT-NOTICE.txt" "$out/data/NOTICE.txt"
cp "$seed" "$out/seed/pytorch-results.csv"
sed -e "s/@VERSION@/$version/g" -e "s/@NAME@/$name/g" "$root/packaging/README.dist.md" > "$out/README.md"
if [ "$kind" = cuda ]; then
    # what the CUDA provider needs beyond the C runtime, as its ELF header says
    needed=$(readelf -d "$out/lib/libonnxruntime_providers_cuda.so" | sed -n 's/.*NEEDED.*\[\(.*\)\]/\1/p' \
        | grep -Ev '^(libc|libm|libdl|librt|libpthread|libgcc_s|libstdc\+\+)\.so|^ld-linux' | tr '\n' ' ')
    sed "s/@NEEDED@/$needed/" "$root/packaging/README.cuda.md" >> "$out/README.md"
fi
mkdir -p "$root/dist"
tar -C "$stage" -czf "$root/dist/$name.tar.gz.tmp" "$name"
mv "$root/dist/$name.tar.gz.tmp" "$root/dist/$name.tar.gz"
(cd "$root/dist" && sha256sum "$name.tar.gz" > "$name.tar.gz.sha256")
echo "dist/$name.tar.gz ($(du -h "$root/dist/$name.tar.gz" | cut -f1)), sha256 in dist/$name.tar.gz.sha256"
