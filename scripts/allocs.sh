#!/usr/bin/env bash
# Heap allocations per call (issue #11): N sequential 1 KiB GETs (default 2,000, after 200
# warm-up calls) over one keep-alive HTTP/1.1 connection through the proxy (the library, in the
# example's process), and the same N directly to the backend; prints allocations and bytes per
# call for both and the difference (the proxy's share), for a phone-like request (ten 100-byte
# headers) and a bare GET. Everything on 127.0.0.1.
#
# The crate forbids unsafe code (examples included), so the example can't have a counting
# #[global_allocator]: this script builds a small LD_PRELOAD library that counts malloc, calloc,
# realloc and memalign calls (one per GlobalAlloc call of std's System allocator) and the bytes
# asked, into a file it maps shared; the example reads that file around each run.
#   scripts/allocs.sh          # N = 2000
#   scripts/allocs.sh 10000
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:-2000}
out=target/allocs
mkdir -p "$out"
cargo build --release --locked --example allocs
cat > "$out/count.c" <<'C'
/* Counts heap allocations of the process it is preloaded in: [0] calls, [1] bytes asked,
 * [2] frees, as u64 in the file named by ALLOCS_COUNTERS (mapped shared, so a read() of the file
 * sees them). Calls through to glibc's own entry points. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
extern void __libc_free(void *);

static uint64_t *counters;

static inline void count(size_t n) {
  uint64_t *c = __atomic_load_n(&counters, __ATOMIC_ACQUIRE);
  if (c) {
    __atomic_fetch_add(&c[0], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&c[1], (uint64_t)n, __ATOMIC_RELAXED);
  }
}

__attribute__((constructor)) static void count_init(void) {
  const char *path = getenv("ALLOCS_COUNTERS");
  if (!path) return;
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) return;
  if (ftruncate(fd, 4096) != 0) { close(fd); return; }
  void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (p != MAP_FAILED) __atomic_store_n(&counters, (uint64_t *)p, __ATOMIC_RELEASE);
}

void *malloc(size_t n) { count(n); return __libc_malloc(n); }
void *calloc(size_t k, size_t n) { count(k * n); return __libc_calloc(k, n); }
void *realloc(void *p, size_t n) { count(n); return __libc_realloc(p, n); }
void *memalign(size_t a, size_t n) { count(n); return __libc_memalign(a, n); }
void *aligned_alloc(size_t a, size_t n) { count(n); return __libc_memalign(a, n); }
int posix_memalign(void **out, size_t a, size_t n) {
  if (a < sizeof(void *) || (a & (a - 1)) != 0) return EINVAL;
  count(n);
  void *p = __libc_memalign(a, n);
  if (!p) return ENOMEM;
  *out = p;
  return 0;
}
void free(void *p) {
  uint64_t *c = __atomic_load_n(&counters, __ATOMIC_ACQUIRE);
  if (p && c) __atomic_fetch_add(&c[2], 1, __ATOMIC_RELAXED);
  __libc_free(p);
}
C
cc -O2 -shared -fPIC -o "$out/libcount.so" "$out/count.c"
ALLOCS_COUNTERS="$out/counters" LD_PRELOAD="$PWD/$out/libcount.so" \
  target/release/examples/allocs --calls "$calls"
