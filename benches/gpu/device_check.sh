#!/usr/bin/env bash
# Runs the inference benchmark on a GPU machine that has the NVIDIA driver
# and CUDA 13 libraries (cuBLAS, cuRAND, NVRTC, the runtime) but no Rust:
# the benchmark binary is built elsewhere with the `cuda` feature (README,
# "GPU") and handed over, xz-compressed, in $1 (default .device/inference.xz).
# The full run (overlap, dynamic batching, memory over 10,000 JPEGs), then
# the memory run again: twice with glibc as the binary sets it (two arenas
# on 16 cores; buffers of 256 KB and up returned when freed, once the model
# is on the GPU), once with one arena per core, and, where libraries are
# in $2 (default .device/root/usr/lib/x86_64-linux-gnu), under jemalloc
# and mimalloc, to tell the allocator's retained pages from memory the
# pipeline holds. Output lines go to stdout and, when $OUT is set, to
# $OUT/device.log.
set -u
binary_xz=${1:-.device/inference.xz}
preload=${2:-.device/root/usr/lib/x86_64-linux-gnu}
log=${OUT:-/tmp}/device.log
work=/tmp/quiver-device/target/release/deps
mkdir -p "$work"
exec > >(tee "$log") 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nproc
python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
    "$binary_xz" "$work/inference" && chmod +x "$work/inference" || exit 1
# The CUDA libraries PyTorch's wheels bring, wherever they are.
libs=$(find /opt /usr /root /home \( -name 'libcublasLt.so.13' -o -name 'libcurand.so.10' \
    -o -name 'libnvrtc.so.13' -o -name 'libcudart.so.13' \) -printf '%h\n' 2>/dev/null | sort -u | paste -sd:)
export LD_LIBRARY_PATH=${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
echo "CUDA libraries: $libs"
ldd "$work/inference" | grep -E 'not found|cuda|cublas' || true
export QUIVER_BENCH_DEVICE=cuda QUIVER_BENCH_IMAGES=${QUIVER_BENCH_IMAGES:-2000} QUIVER_BENCH_SHARE=${QUIVER_BENCH_SHARE:-0} \
    QUIVER_BENCH_MAX_WAITS=${QUIVER_BENCH_MAX_WAITS:-100,250,100,250}
started=$(date +%s)
timeout 300 "$work/inference"
echo "full run: $(( $(date +%s) - started )) s"
corpus=/tmp/quiver-device/target/bench-data/small-photos-${QUIVER_BENCH_MEMORY_IMAGES:-10000}
child() {
    echo "memory child, $1:"
    shift
    started=$(date +%s)
    timeout 90 env "$@" QUIVER_BENCH_MEMORY_CORPUS="$corpus" "$work/inference" --memory-child | grep '^child'
    echo "  $(( $(date +%s) - started )) s"
}
child "glibc as the binary sets it" QUIVER_BENCH_AGAIN=1
child "glibc as the binary sets it, again" QUIVER_BENCH_AGAIN=2
child "glibc, one arena per core" MALLOC_ARENA_MAX="$(nproc)"
if [ -e "$preload/libjemalloc.so.2" ]; then
    child "jemalloc" LD_PRELOAD="$preload/libjemalloc.so.2"
fi
if [ -e "$preload/libmimalloc.so.2" ]; then
    child "mimalloc" LD_PRELOAD="$preload/libmimalloc.so.2"
fi
