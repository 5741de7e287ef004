"""CUDA C sources of the pre/post-processing kernels, compiled at run time with NVRTC (``_driver``).

Each kernel is a thin ``__global__`` wrapper around ``CSTF_HD`` functions (``__host__ __device__`` under
NVRTC, ``static inline`` under a host C++ compiler), so the code the GPU runs can also be compiled with
``c++`` and checked against the numpy twins on a machine without a GPU (``tests/test_cuda_kernels``: the
helpers directly, and every kernel but ``bitonic_local`` run thread by thread behind a fake cuda-python).

Preprocessing (``PREPROCESS_SOURCE``): one thread per network-input pixel. Inside the resized area it
mirrors ``cv2.resize(INTER_LINEAR)`` on uint8: the host builds cv2's taps (source index pairs and 11-bit
fixed-point weights, :func:`cstf_edge.runtime.cuda.preprocess.resize_taps`), each row is mixed horizontally
into ints, and the two rows are mixed vertically as OpenCV's SIMD path does,
``((((s0 >> 4) * b0) >> 16) + (((s1 >> 4) * b1) >> 16) + 2) >> 2``. Outside it writes the pad value. Then
BGR -> RGB, times ``scale`` in float32, CHW.

Post-processing (``POSTPROCESS_SOURCE``): ``select_keys`` (best class, threshold, 64-bit sort key: score
descending, anchor index ascending), a bitonic sort of the keys (``bitonic_global`` for strides of at least
a shared-memory tile, ``bitonic_local`` within a tile), ``gather_candidates`` (top-k boxes, scores, classes
and float64 polygons) and ``nms_mask`` (one 64-bit word per candidate and column block: bit set where a
later candidate of the same class overlaps with exact polygon IoU above the threshold).
"""
from __future__ import annotations

# Candidates per column block of the NMS mask (one bit each of a 64-bit word), and the mask kernel's block.
NMS_BLOCK = 64
# Keys sorted in shared memory by one block of bitonic_local (2 per thread, 16 KiB of uint64).
SORT_TILE = 2048
# The key of an anchor that is not a candidate: sorts after every candidate.
NO_KEY = 0xFFFFFFFFFFFFFFFF

COMMON_SOURCE = r"""
#if defined(__CUDACC__)
#define CSTF_HD __host__ __device__ __forceinline__
#define CSTF_GLOBAL extern "C" __global__
#else
#include <math.h>
#include <stddef.h>
#include <string.h>
#define CSTF_HD static inline
#define CSTF_GLOBAL extern "C"
#endif
typedef unsigned long long u64;
typedef unsigned int u32;
"""

PREPROCESS_HELPERS = r"""
// cv2 INTER_LINEAR value of channel c at resized pixel (dx, dy); taps: [x0|x1|a0|a1] then [y0|y1|b0|b1].
CSTF_HD int resized_value(const unsigned char* src, int src_w, const int* taps, int new_w, int new_h,
                          int dx, int dy, int c) {
    const int* ty = taps + 4 * new_w;
    int x0 = taps[dx], x1 = taps[new_w + dx], a0 = taps[2 * new_w + dx], a1 = taps[3 * new_w + dx];
    int y0 = ty[dy], y1 = ty[new_h + dy], b0 = ty[2 * new_h + dy], b1 = ty[3 * new_h + dy];
    const unsigned char* r0 = src + (size_t)y0 * src_w * 3;
    const unsigned char* r1 = src + (size_t)y1 * src_w * 3;
    int s0 = r0[x0 * 3 + c] * a0 + r0[x1 * 3 + c] * a1;
    int s1 = r1[x0 * 3 + c] * a0 + r1[x1 * 3 + c] * a1;
    int v = ((((s0 >> 4) * b0) >> 16) + (((s1 >> 4) * b1) >> 16) + 2) >> 2;
    return v < 0 ? 0 : (v > 255 ? 255 : v);
}

// Network-input pixel (x, y): the three source channels (BGR order) or the pad value.
CSTF_HD void letterbox_pixel(const unsigned char* src, int src_w, const int* taps, int new_w, int new_h,
                             int left, int top, int pad_value, int x, int y, int* v) {
    int dx = x - left, dy = y - top;
    int inside = dx >= 0 && dx < new_w && dy >= 0 && dy < new_h;
    for (int c = 0; c < 3; ++c)
        v[c] = inside ? resized_value(src, src_w, taps, new_w, new_h, dx, dy, c) : pad_value;
}

// Writes pixel (x, y) of the float32 CHW output: RGB order when swap_rb, values times scale.
CSTF_HD void letterbox_store(const unsigned char* src, int src_w, const int* taps, int new_w, int new_h,
                             int left, int top, int pad_value, float scale, int swap_rb,
                             float* out, int out_w, int out_h, int x, int y) {
    int v[3];
    letterbox_pixel(src, src_w, taps, new_w, new_h, left, top, pad_value, x, y, v);
    size_t plane = (size_t)out_w * out_h, at = (size_t)y * out_w + x;
    out[at] = (float)v[swap_rb ? 2 : 0] * scale;
    out[plane + at] = (float)v[1] * scale;
    out[2 * plane + at] = (float)v[swap_rb ? 0 : 2] * scale;
}
"""

PREPROCESS_KERNELS = r"""
CSTF_GLOBAL void letterbox_chw(const unsigned char* __restrict__ src, int src_w, const int* __restrict__ taps,
                               int new_w, int new_h, int left, int top, int pad_value, float scale,
                               int swap_rb, float* __restrict__ out, int out_w, int out_h) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= out_w || y >= out_h) return;
    letterbox_store(src, src_w, taps, new_w, new_h, left, top, pad_value, scale, swap_rb, out, out_w, out_h, x, y);
}
"""

SELECT_HELPERS = r"""
#define NO_KEY 0xFFFFFFFFFFFFFFFFull

CSTF_HD u32 float_bits(float f) {
#if defined(__CUDACC__)
    return __float_as_uint(f);
#else
    u32 u;
    memcpy(&u, &f, sizeof(u));
    return u;
#endif
}

// np.argmax over the class scores (first maximum); -1 when a score is NaN (numpy's argmax then picks
// the NaN, which fails every threshold).
CSTF_HD int best_class(const float* scores, int num_classes, float* best_score) {
    float best = scores[0];
    int cls = 0, nan = best != best;
    for (int c = 1; c < num_classes; ++c) {
        float v = scores[c];
        if (v != v) nan = 1;
        else if (v > best) { best = v; cls = c; }
    }
    *best_score = best;
    return nan ? -1 : cls;
}

// Ascending keys = descending score, then ascending anchor index (-0 ties with +0, as in numpy).
CSTF_HD u64 score_key(float score, u32 index) {
    if (score == 0.0f) score = 0.0f;
    u32 b = float_bits(score);
    b = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
    return ((u64)(~b) << 32) | (u64)index;
}

CSTF_HD u64 candidate_key(const float* row, int num_classes, float conf, const unsigned char* class_ok,
                          int use_class_ok, u32 index) {
    float score;
    int cls = best_class(row + 5, num_classes, &score);
    if (cls < 0 || !(score >= conf) || (use_class_ok && !class_ok[cls])) return NO_KEY;
    return score_key(score, index);
}

// Compare-exchange of pair t of a bitonic step (stride j, stage k); base: index of keys[0] in the array.
CSTF_HD void bitonic_exchange(u64* keys, u32 t, u32 j, u32 k, u32 base) {
    u32 i = ((t & ~(j - 1u)) << 1) | (t & (j - 1u));
    u32 l = i + j;
    int ascending = ((base + i) & k) == 0;
    u64 a = keys[i], b = keys[l];
    if ((a > b) == ascending) { keys[i] = b; keys[l] = a; }
}
"""

GEOMETRY_HELPERS = r"""
// Areas at or below this are zero (the devkit's tolerance, as cstf_edge.geometry.iou.CROSS_EPS).
#define CROSS_EPS 1e-8
#define MAX_VERTICES 16

// Corners of a rotated box (cx, cy, w, h, angle) as cstf_edge.geometry.rbox_to_poly writes them.
CSTF_HD void rbox_polygon(const float* box, double* p) {
    double cx = box[0], cy = box[1], w = box[2], h = box[3], angle = box[4];
    double c = cos(angle), s = sin(angle);
    const double su[4] = {-0.5, 0.5, 0.5, -0.5}, sv[4] = {-0.5, -0.5, 0.5, 0.5};
    for (int q = 0; q < 4; ++q) {
        double u = su[q] * w, v = sv[q] * h;
        p[2 * q] = cx + u * c - v * s;
        p[2 * q + 1] = cy + u * s + v * c;
    }
}

CSTF_HD double shoelace(const double* p, int n) {
    double twice = 0.0;
    for (int q = 0; q < n; ++q) {
        int r = (q + 1) % n;
        twice += p[2 * q] * p[2 * r + 1] - p[2 * q + 1] * p[2 * r];
    }
    return 0.5 * twice;
}

// Corners relative to (ox, oy), turned positively (positive shoelace area); returns the |area|.
CSTF_HD double local_polygon(const double* p, double ox, double oy, double* out) {
    for (int q = 0; q < 4; ++q) { out[2 * q] = p[2 * q] - ox; out[2 * q + 1] = p[2 * q + 1] - oy; }
    double area = shoelace(out, 4);
    if (area < 0) {
        for (int q = 0; q < 2; ++q) {
            int r = 3 - q;
            double tx = out[2 * q], ty = out[2 * q + 1];
            out[2 * q] = out[2 * r]; out[2 * q + 1] = out[2 * r + 1];
            out[2 * r] = tx; out[2 * r + 1] = ty;
        }
    }
    return fabs(area);
}

// Sutherland-Hodgman: area of convex a (4 corners) clipped by the 4 edge half-planes of convex b.
CSTF_HD double convex_intersection(const double* a, const double* b) {
    double buf0[2 * MAX_VERTICES], buf1[2 * MAX_VERTICES];
    double* in = buf0;
    double* out = buf1;
    int n = 4;
    for (int q = 0; q < 8; ++q) in[q] = a[q];
    for (int e = 0; e < 4 && n > 0; ++e) {
        double ex = b[2 * e], ey = b[2 * e + 1];
        double dx = b[2 * ((e + 1) % 4)] - ex, dy = b[2 * ((e + 1) % 4) + 1] - ey;
        int m = 0;
        for (int q = 0; q < n; ++q) {
            int r = (q + 1) % n;
            double px = in[2 * q], py = in[2 * q + 1], qx = in[2 * r], qy = in[2 * r + 1];
            double sp = dx * (py - ey) - dy * (px - ex), sq = dx * (qy - ey) - dy * (qx - ex);
            if (sp >= 0 && m < MAX_VERTICES) { out[2 * m] = px; out[2 * m + 1] = py; ++m; }
            if ((sp >= 0) != (sq >= 0) && m < MAX_VERTICES) {
                double t = sp / (sp - sq);
                out[2 * m] = px + t * (qx - px); out[2 * m + 1] = py + t * (qy - py); ++m;
            }
        }
        double* swap = in; in = out; out = swap;
        n = m;
    }
    return n >= 3 ? fabs(shoelace(in, n)) : 0.0;
}

// Exact IoU of two convex quadrilaterals (absolute corners), in the frame of a's first corner.
CSTF_HD double polygon_iou(const double* pa, const double* pb) {
    double a[8], b[8];
    double area_a = local_polygon(pa, pa[0], pa[1], a);
    double area_b = local_polygon(pb, pa[0], pa[1], b);
    double inter = (area_a > CROSS_EPS && area_b > CROSS_EPS) ? convex_intersection(a, b) : 0.0;
    double uni = area_a + area_b - inter;
    return uni > 0 ? inter / uni : 0.0;
}

// Bits c of column block col_block: candidate col_block * 64 + c comes after i, has i's class (unless
// agnostic) and overlaps it with IoU > thr.
CSTF_HD u64 nms_mask_word(int i, int col_block, int count, const double* polys, const int* classes,
                          int agnostic, double thr) {
    u64 bits = 0;
    for (int c = 0; c < 64; ++c) {
        int j = col_block * 64 + c;
        if (j >= count) break;
        if (j <= i || (!agnostic && classes[i] != classes[j])) continue;
        if (polygon_iou(polys + 8 * (size_t)i, polys + 8 * (size_t)j) > thr) bits |= 1ull << c;
    }
    return bits;
}
"""

POSTPROCESS_KERNELS = r"""
CSTF_GLOBAL void select_keys(const float* __restrict__ raw, int n, int stride, int num_classes, float conf,
                             const unsigned char* __restrict__ class_ok, int use_class_ok,
                             u64* __restrict__ keys, int n_padded, u32* __restrict__ count) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_padded) return;
    u64 key = NO_KEY;
    if (i < n) key = candidate_key(raw + (size_t)i * stride, num_classes, conf, class_ok, use_class_ok, (u32)i);
    keys[i] = key;
    if (key != NO_KEY) atomicAdd(count, 1u);
}

CSTF_GLOBAL void bitonic_global(u64* keys, u32 n, u32 j, u32 k) {
    u32 t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t < n / 2) bitonic_exchange(keys, t, j, k, 0);
}

CSTF_GLOBAL void gather_candidates(const u64* __restrict__ keys, int count, const float* __restrict__ raw,
                                   int stride, int num_classes, float* __restrict__ boxes,
                                   float* __restrict__ scores, int* __restrict__ classes,
                                   double* __restrict__ polys) {
    int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= count) return;
    const float* row = raw + (size_t)(keys[r] & 0xFFFFFFFFull) * stride;
    float score;
    classes[r] = best_class(row + 5, num_classes, &score);
    scores[r] = score;
    for (int q = 0; q < 5; ++q) boxes[5 * r + q] = row[q];
    rbox_polygon(row, polys + 8 * (size_t)r);
}

CSTF_GLOBAL void nms_mask(int count, int col_blocks, const double* __restrict__ polys,
                          const int* __restrict__ classes, int agnostic, double thr, u64* __restrict__ mask) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    int col_block = blockIdx.y;
    if (i >= count) return;
    u64 word = col_block < i / 64 ? 0ull : nms_mask_word(i, col_block, count, polys, classes, agnostic, thr);
    mask[(size_t)i * col_blocks + col_block] = word;
}
"""

# The one kernel with shared memory and barriers (so not host-compilable as it stands).
BITONIC_LOCAL_KERNEL = r"""
// Stages k = k_first .. k_last (doubling) for the strides below the tile of 2 * blockDim.x keys.
CSTF_GLOBAL void bitonic_local(u64* keys, u32 k_first, u32 k_last) {
    extern __shared__ u64 tile[];
    u32 half = blockDim.x, t = threadIdx.x, base = blockIdx.x * 2 * half;
    tile[t] = keys[base + t];
    tile[t + half] = keys[base + t + half];
    for (u32 k = k_first; k <= k_last; k <<= 1) {
        for (u32 j = (k >> 1) < half ? (k >> 1) : half; j > 0; j >>= 1) {
            __syncthreads();
            bitonic_exchange(tile, t, j, k, base);
        }
    }
    __syncthreads();
    keys[base + t] = tile[t];
    keys[base + t + half] = tile[t + half];
}
"""

PREPROCESS_SOURCE = COMMON_SOURCE + PREPROCESS_HELPERS + PREPROCESS_KERNELS
POSTPROCESS_SOURCE = COMMON_SOURCE + SELECT_HELPERS + GEOMETRY_HELPERS + POSTPROCESS_KERNELS + BITONIC_LOCAL_KERNEL
# What a host C++ compiler builds as well (the tests add blockIdx / threadIdx / atomicAdd stand-ins and run
# the kernels thread by thread): everything except BITONIC_LOCAL_KERNEL.
HOST_HELPERS = COMMON_SOURCE + PREPROCESS_HELPERS + SELECT_HELPERS + GEOMETRY_HELPERS
HOST_KERNELS = PREPROCESS_KERNELS + POSTPROCESS_KERNELS

PREPROCESS_KERNEL_NAMES = ("letterbox_chw",)
POSTPROCESS_KERNEL_NAMES = ("select_keys", "bitonic_global", "bitonic_local", "gather_candidates", "nms_mask")
