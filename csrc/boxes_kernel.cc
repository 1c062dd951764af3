// Compiled CPU kernel for the WSOL box pass of infocam_jax.boxes (see infocam_jax/_native.py).
//
// One union-find pass over the pixels of a quantised uint8 map in descending value order (a
// component tree) visits every 8-connected component of every level set {q > L}, L = 0..255.
// Whenever a root's state changes (for the IoU passes: only when its box, or the hole pass's
// minimum filled value, changes), its previous state (a "record") is closed: it was the
// component's state for the levels [v_now, v_born - 1]. Records are reduced into a [256 x 256]
// table indexed by (lowest, highest level), of which only the spans written are cleared and
// scanned; a row suffix maximum followed by a column prefix maximum gives, for every level, the
// best record alive at that level. The cost does not depend on the number of thresholds: those
// are a gather on the [256] per-level results, done in JAX.
//
// Speed (the per-pixel work is what counts): pixels are visited level by level from a counting
// sort; each pixel's mask of already-visited neighbours is computed beforehand for all pixels at
// once (vectorised compares, no per-pixel "done" flags); the union-find runs on compact
// component slots rather than on pixels; a component's box is four int16 lanes grown by one
// SSE2 max per pixel; the raster sweeps of the hole filling are SSE2 prefix scans; the hole
// pass is skipped when the map has no hole; hot branches on noisy data are replaced by selects
// where possible.
//
// Two results, both per image and per level L = 0..255:
//  * largest box: the box of the component whose outer contour has the largest area as
//    cv2.contourArea measures it, holes filled (computed on the grayscale hole-filled map, whose
//    level sets are the filled top-level components); ties: the component whose first raster
//    pixel comes last. Box (x0, y0, min(x_max + 1, W - 1), min(y_max + 1, H - 1)); empty level
//    -> (0, 0, 0, 0).
//  * best contour IoU: the max inclusive-pixel IoU with the valid GT boxes over the boxes of
//    every component (outer contour) and every hole (4-connected background region not touching
//    the frame, its contour box grown by one pixel); an empty level scores the box (0,0,0,0).
//
// Exposed twice: plain C entry points (used by the host callback and the self test) and XLA FFI
// handlers (used by jax.ffi.ffi_call under jit / vmap / pmap). Images of a batch run in
// parallel on std::threads. Everything is bounds-checked by construction: the union-find runs on
// a frame-padded grid whose border is never processed; pixels of value 0 in a pass's lane are
// never processed (no level set contains them).
#include <sched.h>
// SSE2 (every x86-64) for the hole filling's sweeps; INFOCAM_NO_SIMD tests the scalar path.
#if defined(__SSE2__) && !defined(INFOCAM_NO_SIMD)
#define INFOCAM_SIMD 1
#include <emmintrin.h>
#else
#define INFOCAM_SIMD 0
#endif

#include <algorithm>
#include <cstdlib>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace {

constexpr int kLevels = 256;
constexpr int kAbiVersion = 3;
// Limits that keep every packed value inside its integer type.
constexpr int64_t kMaxSide = 32767;
constexpr int64_t kMaxPixels = int64_t{1} << 26;

// A component's state (16 bytes). The box is stored as (~x0, ~y0, x1, y1) in int16 (sides
// <= 32767), so that growing it by a pixel (x, y) is one 4-lane max with (~x, ~y, x, y). The
// value at which the current state was created ("born") is kept apart (Workspace::born).
struct Attr {
  int16_t box[4];  // ~x_min, ~y_min, x_max, y_max
  int32_t first;   // first pixel in raster order (padded index: same order)
  int32_t aux;     // Mode::kArea: twice the outer-contour area; kHole: the smallest filled value

  int32_t x0() const { return ~box[0]; }
  int32_t y0() const { return ~box[1]; }
  int32_t x1() const { return box[2]; }
  int32_t y1() const { return box[3]; }
  void SetPixel(int32_t x, int32_t y) {
    box[0] = static_cast<int16_t>(~x);
    box[1] = static_cast<int16_t>(~y);
    box[2] = static_cast<int16_t>(x);
    box[3] = static_cast<int16_t>(y);
  }
};

// The union of two boxes in that encoding (lane-wise max).
inline void BoxUnion(int16_t* acc, const int16_t* other) {
  for (int k = 0; k < 4; ++k) acc[k] = std::max(acc[k], other[k]);
}

struct AreaCell {
  int64_t key;  // s2 << 32 | first, -1: empty
  int32_t box[4];
};

struct Gt {
  const int32_t* boxes;  // [G, 4]
  const bool* valid;     // [G]
  int64_t count;
};

inline float IouWithGt(int32_t x0, int32_t y0, int32_t x1, int32_t y1, const Gt& gt) {
  // As infocam_jax._components._iou: int32 areas, float32 division, invalid GT scores 0.
  float best = 0.0f;
  const int32_t area_a = (x1 - x0 + 1) * (y1 - y0 + 1);
  for (int64_t g = 0; g < gt.count; ++g) {
    if (!gt.valid[g]) continue;
    const int32_t* b = gt.boxes + 4 * g;
    const int32_t iw = std::max(0, std::min(x1, b[2]) - std::max(x0, b[0]) + 1);
    const int32_t ih = std::max(0, std::min(y1, b[3]) - std::max(y0, b[1]) + 1);
    const int32_t inter = iw * ih;
    const int32_t area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1);
    const float iou = static_cast<float>(inter) / static_cast<float>(area_a + area_b - inter);
    if (iou > best || iou != iou) best = iou;
  }
  return best;
}

// A record is one state of one component and the range of levels [lo, hi] it holds for.
// Records are reduced into a [256 x 256] table indexed by (lo, hi); row lo is valid from lo up to
// top[lo] (cells above are empty and never read), so only the rows and spans written are
// cleared and scanned.
template <class T>
struct LevelTable {
  std::vector<T> cells;  // [256 * 256]
  int32_t top[kLevels];
  T empty;

  void Reset(const T& empty_cell) {
    cells.resize(kLevels * kLevels);
    empty = empty_cell;
    for (int32_t lo = 0; lo < kLevels; ++lo) top[lo] = lo - 1;
  }
  T& At(int32_t lo, int32_t hi) {
    T* row = &cells[static_cast<size_t>(lo) * kLevels];
    if (top[lo] < hi) {
      std::fill(row + top[lo] + 1, row + hi + 1, empty);
      top[lo] = hi;
    }
    return row[hi];
  }
  // best[L] = max over cells (lo, hi) with lo <= L <= hi, as `better` orders them.
  template <class Better>
  void Best(T* best, Better&& better) const {
    T col[kLevels];
    std::fill(col, col + kLevels, empty);
    for (int32_t lo = 0; lo < kLevels; ++lo) {
      const T* row = &cells[static_cast<size_t>(lo) * kLevels];
      T run = empty;
      for (int32_t hi = top[lo]; hi >= lo; --hi) {
        if (better(row[hi], run)) run = row[hi];
        if (better(run, col[hi])) col[hi] = run;
      }
      best[lo] = col[lo];
    }
  }
};

// Per-thread scratch memory, sized for one H x W image and reused across the batch. Every
// per-pixel array is frame-padded ([H+2, W+2], index p = (y + 1) (W + 2) + x + 1) with a zero
// border.
struct Workspace {
  int64_t h = 0, w = 0, wp = 0;
  std::vector<uint8_t> qpad;      // the map q
  std::vector<uint8_t> fill;      // the hole-filled map g
  std::vector<uint8_t> lane;      // the hole pass's values (see ContourIouOne)
  const uint8_t* values = nullptr;  // what a component pass runs on (qpad, fill or lane);
                                    // 0: never processed
  std::vector<uint8_t> nbmask;    // per pixel, its neighbours processed before it (see below)
  std::vector<int32_t> label;     // the slot each processed pixel joined
  std::vector<int32_t> par;       // [H W] union-find parent of each slot (component)
  std::vector<Attr> attr;         // [H W] attributes of each root slot
  std::vector<int32_t> born;      // [H W] value at which each root slot's state began
  std::vector<uint64_t> order;    // [H W] pixels by descending value, each p << 32 | y << 16 | x
  std::vector<int32_t> fifo;      // hole filling: the propagation queue
  LevelTable<AreaCell> area_tab;
  LevelTable<float> iou_tab;

  void Resize(int64_t height, int64_t width) {
    h = height;
    w = width;
    wp = width + 2;
    const size_t padded = static_cast<size_t>((height + 2) * wp);
    const size_t n = static_cast<size_t>(height * width);
    qpad.assign(padded, 0);
    fill.assign(padded, 0);
    lane.assign(padded, 0);
    nbmask.assign(padded, 0);
    label.assign(padded, 0);
    par.resize(n);
    attr.resize(n);
    born.resize(n);
    order.resize(n);
  }

  void LoadMap(const uint8_t* q) {
    for (int64_t y = 0; y < h; ++y) std::memcpy(&qpad[(y + 1) * wp + 1], q + y * w, w);
  }

  // Quantises a float32 map into qpad: q = uint8(s * 255) (float32 product, truncation, as
  // np.uint8 and XLA's convert give for s in [0, 1]). Returns max q, or -1 when a value lies
  // outside [0, 1] or is NaN (the map is then unusable).
  int LoadFloatMap(const float* s) {
    bool ok = true;
    uint8_t top = 0;
    for (int64_t y = 0; y < h; ++y) {
      const float* row = s + y * w;
      uint8_t* out = &qpad[(y + 1) * wp + 1];
      int64_t x = 0;
#if INFOCAM_SIMD
      const __m128 zero = _mm_setzero_ps(), one = _mm_set1_ps(1.0f), scale = _mm_set1_ps(255.0f);
      __m128i okv = _mm_set1_epi32(-1), topv = _mm_setzero_si128();
      for (; x + 16 <= w; x += 16) {
        __m128i part[4];
        for (int k = 0; k < 4; ++k) {
          const __m128 v = _mm_loadu_ps(row + x + 4 * k);
          // v >= 0 and v <= 1 (false for NaN)
          okv = _mm_and_si128(okv, _mm_castps_si128(_mm_and_ps(_mm_cmpge_ps(v, zero),
                                                               _mm_cmple_ps(v, one))));
          part[k] = _mm_cvttps_epi32(_mm_mul_ps(v, scale));
        }
        // 0..255 in every lane of a valid map: the saturating packs are exact there.
        const __m128i bytes = _mm_packus_epi16(_mm_packs_epi32(part[0], part[1]),
                                               _mm_packs_epi32(part[2], part[3]));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + x), bytes);
        topv = _mm_max_epu8(topv, bytes);
      }
      ok &= _mm_movemask_epi8(_mm_cmpeq_epi32(okv, _mm_set1_epi32(-1))) == 0xFFFF;
      alignas(16) uint8_t lanes[16];
      _mm_store_si128(reinterpret_cast<__m128i*>(lanes), topv);
      for (uint8_t b : lanes) top = std::max(top, b);
#endif
      for (; x < w; ++x) {
        const float v = row[x];
        ok &= v >= 0.0f && v <= 1.0f;
        const uint8_t b = ok ? static_cast<uint8_t>(static_cast<int32_t>(v * 255.0f)) : 0;
        out[x] = b;
        top = std::max(top, b);
      }
    }
    return ok ? top : -1;
  }
};

// One row of a raster sweep of the hole filling: g[x] = max(q[x], min(a[x], g[x - 1])) along x
// (forward) or g[x] = max(q[x], min(a[x], g[x + 1])) (backward), from the border value 0, for
// x in [0, w). The maps f(v) = max(q, min(a, v)) compose into maps of the same form,
// (Q2, A2) o (Q1, A1) = (max(Q2, min(A2, Q1)), min(A2, A1)), so with SSE2 the row is a prefix
// scan over 16 pixels at a time (4 steps) and a carry between blocks.
#if INFOCAM_SIMD
inline __m128i Broadcast(__m128i v) {  // byte 0 of v in every byte
  v = _mm_unpacklo_epi8(v, v);
  v = _mm_shufflelo_epi16(v, 0);
  return _mm_shuffle_epi32(v, 0);
}

template <bool kForward>
inline __m128i ScanBlock(__m128i q, __m128i a, __m128i carry) {
  // Lane i takes lane i - s (forward) or i + s (backward); the shifted-in identity is
  // (Q, A) = (0, 255).
#define INFOCAM_SCAN_STEP(s)                                                              \
  {                                                                                       \
    const __m128i ones = kForward ? _mm_srli_si128(_mm_set1_epi8(-1), 16 - (s))          \
                                  : _mm_slli_si128(_mm_set1_epi8(-1), 16 - (s));         \
    const __m128i qs = kForward ? _mm_slli_si128(q, s) : _mm_srli_si128(q, s);            \
    const __m128i as = _mm_or_si128(kForward ? _mm_slli_si128(a, s) : _mm_srli_si128(a, s), \
                                    ones);                                                \
    q = _mm_max_epu8(q, _mm_min_epu8(a, qs));                                             \
    a = _mm_min_epu8(a, as);                                                              \
  }
  INFOCAM_SCAN_STEP(1)
  INFOCAM_SCAN_STEP(2)
  INFOCAM_SCAN_STEP(4)
  INFOCAM_SCAN_STEP(8)
#undef INFOCAM_SCAN_STEP
  return _mm_max_epu8(q, _mm_min_epu8(a, carry));
}
#endif

// Forward: a[x] = up[x] (kMinG: min(g[x], up[x])); backward: a[x] = min(g[x], down[x]).
// Writes g.
template <bool kForward, bool kMinG = !kForward>
void SweepRow(const uint8_t* q, const uint8_t* other, uint8_t* g, int64_t w) {
  int64_t done = 0;  // pixels swept so far (from the row's start or end)
  uint8_t run = 0;
#if INFOCAM_SIMD
  __m128i carry = _mm_setzero_si128();
  for (; done + 16 <= w; done += 16) {
    const int64_t x = kForward ? done : w - done - 16;
    const __m128i qv = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q + x));
    __m128i av = _mm_loadu_si128(reinterpret_cast<const __m128i*>(other + x));
    if (kMinG) av = _mm_min_epu8(av, _mm_loadu_si128(reinterpret_cast<const __m128i*>(g + x)));
    const __m128i out = ScanBlock<kForward>(qv, av, carry);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(g + x), out);
    carry = Broadcast(kForward ? _mm_srli_si128(out, 15) : out);
  }
  run = static_cast<uint8_t>(_mm_cvtsi128_si32(carry));
#endif
  for (; done < w; ++done) {
    const int64_t x = kForward ? done : w - 1 - done;
    const uint8_t a = kMinG ? std::min(g[x], other[x]) : other[x];
    run = std::max(q[x], std::min(a, run));
    g[x] = run;
  }
}

// Grayscale hole filling of ws.qpad into ws.fill: g(p) = min over 4-connected paths from
// outside the image (value 0) to p of the largest value on the path (reconstruction by erosion
// from the frame), by Vincent's hybrid algorithm on the padded grid (border: g = q = 0): a
// forward and a backward raster sweep of g = max(q, min(g, neighbours already swept)) (the
// first forward sweep starts from the marker g = 255 inside, so its min(g, .) drops out), done
// twice, then a FIFO propagation from the pixels the sweeps left unsettled.
void FillHoles(Workspace& ws) {
  const int64_t h = ws.h, w = ws.w, wp = ws.wp;
  const uint8_t* qp = ws.qpad.data();
  uint8_t* g = ws.fill.data();  // border stays 0
  for (int64_t y = 1; y <= h; ++y) {
    SweepRow<true>(qp + y * wp + 1, g + (y - 1) * wp + 1, g + y * wp + 1, w);
  }
  for (int64_t y = h; y >= 1; --y) {
    SweepRow<false>(qp + y * wp + 1, g + (y + 1) * wp + 1, g + y * wp + 1, w);
  }
  // After a forward and a backward sweep the only unsettled pairs are (p, its S or E
  // neighbour q) with g(q) > max(q(q), g(p)): those p seed the FIFO. Returns their count.
  std::vector<int32_t>& fifo = ws.fifo;
  if (fifo.size() < static_cast<size_t>(h * w + 8)) fifo.resize(static_cast<size_t>(h * w + 8));
  auto seeds = [&]() {
    size_t tail = 0;
    for (int64_t y = 1; y <= h; ++y) {
      int64_t x = 1;
      const int64_t row = y * wp;
#if INFOCAM_SIMD
      for (; x + 15 <= w; x += 16) {
        const int64_t p = row + x;
        auto load = [](const uint8_t* ptr) {
          return _mm_loadu_si128(reinterpret_cast<const __m128i*>(ptr));
        };
        const __m128i gp = load(g + p), gs = load(g + p + wp), ge = load(g + p + 1);
        // a > b and a > c  <=>  min(a -sat b, a -sat c) != 0
        const __m128i south = _mm_min_epu8(_mm_subs_epu8(gs, gp), _mm_subs_epu8(gs, load(qp + p + wp)));
        const __m128i east = _mm_min_epu8(_mm_subs_epu8(ge, gp), _mm_subs_epu8(ge, load(qp + p + 1)));
        const __m128i zero = _mm_cmpeq_epi8(_mm_max_epu8(south, east), _mm_setzero_si128());
        for (uint32_t bits = ~static_cast<uint32_t>(_mm_movemask_epi8(zero)) & 0xFFFFu; bits;
             bits &= bits - 1) {
          fifo[tail++] = static_cast<int32_t>(p + __builtin_ctz(bits));
        }
      }
#endif
      for (; x <= w; ++x) {
        const int64_t p = row + x;
        const uint8_t run = g[p], south = g[p + wp], east = g[p + 1];
        fifo[tail] = static_cast<int32_t>(p);
        tail += ((south > run) & (south > qp[p + wp])) | ((east > run) & (east > qp[p + 1]));
      }
    }
    return tail;
  };
  size_t tail = seeds();
  // Many seeds (noisy maps): a second pair of sweeps (vectorised, cheap) settles most of what
  // the FIFO would otherwise propagate pixel by pixel (a third pair no longer pays). Few seeds
  // (smooth maps): the FIFO is cheaper. Either way the result is the same reconstruction.
  if (tail > static_cast<size_t>(h * w / 64)) {
    for (int64_t y = 1; y <= h; ++y) {
      SweepRow<true, true>(qp + y * wp + 1, g + (y - 1) * wp + 1, g + y * wp + 1, w);
    }
    for (int64_t y = h; y >= 1; --y) {
      SweepRow<false>(qp + y * wp + 1, g + (y + 1) * wp + 1, g + y * wp + 1, w);
    }
    tail = seeds();
  }
  const int32_t offs[4] = {static_cast<int32_t>(-wp), -1, 1, static_cast<int32_t>(wp)};
  for (size_t head = 0; head < tail; ++head) {
    if (fifo.size() < tail + 8) fifo.resize(2 * fifo.size());  // a pixel may enter again
    const int32_t p = fifo[head];
    const uint8_t gp = g[p];
    for (int32_t off : offs) {
      const int32_t nb = p + off;
      const uint8_t gn = g[nb], qn = qp[nb];
      const bool lower = (gn > gp) & (gn != qn);
      const uint8_t down = std::max(gp, qn);  // <= gn when lower: a branch-free select
      g[nb] = static_cast<uint8_t>(gn - ((gn - down) & -static_cast<int32_t>(lower)));
      fifo[tail] = nb;
      tail += lower;
    }
  }
}

// The processed neighbours of a pixel that are already connected to one another (8-adjacent, or
// for 4-connectivity joined through a processed corner such as N - NE - E) belong to one
// component. The table gives, per 8-bit mask of processed neighbours (bits NW, N, NE, W, E, SW,
// S, SE), one representative neighbour per such group (at most 4; for 4-connectivity only the
// edge neighbours N, W, E, S count, as only they touch the pixel), so that most pixels need a
// single find. ds2 is twice the contour-area gain: each 2x2 cell around the pixel whose other
// three pixels hold at least two processed ones gains half a unit square (3 of 4 pixels) or the
// other half (4 of 4).
struct NeighbourTable {
  uint8_t count[256];
  uint8_t rep[256][4];
  uint8_t ds2[256];
  explicit NeighbourTable(bool eight) {
    const int dy[8] = {-1, -1, -1, 0, 0, 1, 1, 1}, dx[8] = {-1, 0, 1, -1, 1, -1, 0, 1};
    const uint32_t cells[4] = {0b00001011u, 0b00010110u, 0b01101000u, 0b11010000u};
    for (uint32_t m = 0; m < 256; ++m) {
      int group[8];
      for (int k = 0; k < 8; ++k) group[k] = k;
      for (int changed = 1; changed;) {  // label propagation on at most 8 nodes
        changed = 0;
        for (int a = 0; a < 8; ++a) {
          for (int b = 0; b < 8; ++b) {
            const int ady = std::abs(dy[a] - dy[b]), adx = std::abs(dx[a] - dx[b]);
            const bool adjacent = eight ? (ady <= 1 && adx <= 1) : (ady + adx == 1);
            if ((m >> a & 1) && (m >> b & 1) && adjacent && group[b] < group[a]) {
              group[a] = group[b];
              changed = 1;
            }
          }
        }
      }
      int n = 0;
      bool taken[8] = {false};
      for (int k = 0; k < 8; ++k) {
        const bool touches = eight || dy[k] == 0 || dx[k] == 0;
        if ((m >> k & 1) && touches && !taken[group[k]]) {
          taken[group[k]] = true;
          rep[m][n++] = static_cast<uint8_t>(k);
        }
      }
      count[m] = static_cast<uint8_t>(n);
      int d = 0;
      for (uint32_t c : cells) d += __builtin_popcount(m & c) >= 2;
      ds2[m] = static_cast<uint8_t>(d);
    }
  }
};
const NeighbourTable kNeighbours8(true), kNeighbours4(false);

// ws.nbmask[p]: bit k set when neighbour k (NW, N, NE, W, E, SW, S, SE) is processed before p.
// Pixels are processed by descending lane value and in raster order within a value, so a
// neighbour that comes earlier in raster order (NW, N, NE, W) is processed first when its value
// is >= p's, a later one when it is > p's. Pixels of value 0 (and the border) are never
// processed, and no processed pixel has value 0, so they never satisfy either comparison.
void NeighbourMasks(Workspace& ws) {
  const int64_t h = ws.h, w = ws.w, wp = ws.wp;
  const uint8_t* v = ws.values;
  for (int64_t y = 1; y <= h; ++y) {
    const uint8_t* a = v + (y - 1) * wp;
    const uint8_t* b = v + y * wp;
    const uint8_t* c = v + (y + 1) * wp;
    uint8_t* out = ws.nbmask.data() + y * wp;
    for (int64_t x = 1; x <= w; ++x) {
      const uint8_t t = b[x];
      out[x] = static_cast<uint8_t>((a[x - 1] >= t) | (a[x] >= t) << 1 | (a[x + 1] >= t) << 2 |
                                    (b[x - 1] >= t) << 3 | (b[x + 1] > t) << 4 |
                                    (c[x - 1] > t) << 5 | (c[x] > t) << 6 | (c[x + 1] > t) << 7);
    }
  }
}

// Counting sort of the pixels by descending value, raster order within a value; the processed
// ones (lane value >= 1) come first. begin[v] .. begin[v - 1] is the range of value v
// (begin[255] = 0); pixels of value 0 fill the rest, so the scatter has no branch. Each entry
// is p << 32 | y << 16 | x (p: the padded index), so the union-find pass needs no index
// arithmetic. Returns the number of processed pixels.
//
// Smooth maps have runs of equal values, and a run's pixels would update one counter (one
// bucket pointer) one after the other, each waiting for the previous store. So the rows are
// split into kBlocks contiguous blocks, each with its own histogram and bucket pointers (block
// b's pixels of value v follow block b - 1's: raster order holds), and the blocks are swept in
// lock-step, one pixel of each in turn.
constexpr int kBlocks = 4;

int64_t SortPixels(Workspace& ws, int64_t begin[kLevels]) {
  const int64_t h = ws.h, w = ws.w, wp = ws.wp;
  const uint8_t* v = ws.values;
  // Block b holds the rows [first_row[b], first_row[b + 1]) (1-based padded rows).
  int64_t first_row[kBlocks + 1];
  for (int b = 0; b <= kBlocks; ++b) first_row[b] = 1 + h * b / kBlocks;
  const int64_t lockstep = h / kBlocks;  // rows every block has
  uint32_t count[kBlocks][kLevels] = {{0}};
  for (int64_t r = 0; r < lockstep; ++r) {
    const uint8_t* row[kBlocks];
    for (int b = 0; b < kBlocks; ++b) row[b] = v + (first_row[b] + r) * wp + 1;
    for (int64_t x = 0; x < w; ++x) {
      for (int b = 0; b < kBlocks; ++b) ++count[b][row[b][x]];
    }
  }
  for (int b = 0; b < kBlocks; ++b) {
    for (int64_t y = first_row[b] + lockstep; y < first_row[b + 1]; ++y) {
      const uint8_t* row = v + y * wp + 1;
      for (int64_t x = 0; x < w; ++x) ++count[b][row[x]];
    }
  }
  uint64_t* order = ws.order.data();
  uint64_t* next[kBlocks][kLevels];
  int64_t at = 0;
  for (int k = kLevels - 1; k >= 0; --k) {
    begin[k] = at;
    for (int b = 0; b < kBlocks; ++b) {
      next[b][k] = order + at;
      at += count[b][k];
    }
  }
  const int64_t n = begin[0];  // the processed pixels end where value 0 starts
  constexpr uint64_t kStep = (uint64_t{1} << 32) | 1u;  // one pixel right: p + 1, x + 1
  auto row_entry = [wp](int64_t y) {
    return static_cast<uint64_t>(y * wp + 1) << 32 | static_cast<uint64_t>(y - 1) << 16;
  };
  for (int64_t r = 0; r < lockstep; ++r) {
    const uint8_t* row[kBlocks];
    uint64_t entry[kBlocks];
    for (int b = 0; b < kBlocks; ++b) {
      row[b] = v + (first_row[b] + r) * wp + 1;
      entry[b] = row_entry(first_row[b] + r);
    }
    for (int64_t x = 0; x < w; ++x) {
      for (int b = 0; b < kBlocks; ++b) {
        *next[b][row[b][x]]++ = entry[b];
        entry[b] += kStep;
      }
    }
  }
  for (int b = 0; b < kBlocks; ++b) {
    for (int64_t y = first_row[b] + lockstep; y < first_row[b + 1]; ++y) {
      const uint8_t* row = v + y * wp + 1;
      uint64_t entry = row_entry(y);
      for (int64_t x = 0; x < w; ++x, entry += kStep) *next[b][row[x]]++ = entry;
    }
  }
  return n;
}

enum class Mode {
  kPlain,  // boxes only
  kArea,   // and the outer-contour area (aux) and the first pixel
  kHole,   // and the smallest filled value g over the pixels (aux; ws.fill holds g)
};

template <Mode kMode>
inline bool SameState(const Attr& a, const Attr& b) {
  return std::memcmp(a.box, b.box, sizeof(a.box)) == 0 &&
         (kMode == Mode::kPlain || a.aux == b.aux) && (kMode != Mode::kArea || a.first == b.first);
}

// Two hops unconditionally (most chains are that short, and a data-dependent loop exit would be
// mispredicted), then path halving for the rare longer chain.
inline int32_t Find(int32_t* par, int32_t r) {
  r = par[par[r]];
  while (__builtin_expect(par[r] != r, 0)) {
    par[r] = par[par[r]];
    r = par[r];
  }
  return r;
}

// a's box grown by the pixel whose code is y << 16 | x, into `grown`; returns whether it changed.
inline bool GrownBox(const Attr& a, uint32_t code, int16_t grown[4]) {
#if INFOCAM_SIMD
  // int16 lanes (x, y, x, y), then (~x, ~y, x, y).
  __m128i pix = _mm_shufflelo_epi16(_mm_cvtsi32_si128(static_cast<int32_t>(code)), 0x44);
  pix = _mm_xor_si128(pix, _mm_set_epi32(0, 0, 0, -1));
  const __m128i old = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(a.box));
  const __m128i out = _mm_max_epi16(old, pix);
  _mm_storel_epi64(reinterpret_cast<__m128i*>(grown), out);
  return (_mm_movemask_epi8(_mm_cmpeq_epi16(out, old)) & 0xFF) != 0xFF;
#else
  const int32_t x = static_cast<int32_t>(code & 0xFFFFu), y = static_cast<int32_t>(code >> 16);
  const int16_t pix[4] = {static_cast<int16_t>(~x), static_cast<int16_t>(~y),
                          static_cast<int16_t>(x), static_cast<int16_t>(y)};
  bool change = false;
  for (int k = 0; k < 4; ++k) {
    change |= pix[k] > a.box[k];
    grown[k] = std::max(a.box[k], pix[k]);
  }
  return change;
#endif
}

// Per 8-bit neighbour mask: the offset of the first group's representative, the group count
// and the contour-area gain (see NeighbourTable), in one 8-byte entry (one load base).
struct MaskInfo {
  int32_t off;
  uint16_t groups;
  uint16_t ds2;
};

// What the union-find pass works on (pointers into the workspace).
struct PassState {
  const uint64_t* order;
  const uint8_t* nbmask;
  const uint8_t* fill;
  int32_t* label;
  int32_t* par;
  Attr* attr;
  int32_t* born;
  int32_t slots;
};

// Records leave the hot loop through an out-of-line call (rare: a state ends at most once per
// component and level on smooth maps), so the loop keeps its values in registers.
template <class Emit>
[[gnu::noinline]] void EmitRecord(Emit& emit, int32_t lo, int32_t hi, const Attr& a) {
  emit(lo, hi, a);
}

// A pixel with no processed neighbour (a new component) or with two or more neighbour groups
// (a merge).
template <bool kEight, Mode kMode, class Emit>
[[gnu::always_inline]] inline void SlowPixel(PassState& st, const NeighbourTable& table, const int32_t* off8,
                                 uint64_t entry, int32_t val, Emit& emit) {
  constexpr bool kArea = kMode == Mode::kArea, kHole = kMode == Mode::kHole;
  const uint32_t code = static_cast<uint32_t>(entry);
  const int32_t x = static_cast<int32_t>(code & 0xFFFFu);
  const int32_t y = static_cast<int32_t>(code >> 16);
  const int32_t p = static_cast<int32_t>(entry >> 32);
  const uint32_t mask = st.nbmask[p];
  const int groups = table.count[mask];
  const int32_t aux = kArea ? table.ds2[mask] : kHole ? st.fill[p] : 0;  // the pixel's own
  int32_t* par = st.par;
  Attr* attr = st.attr;
  int32_t* born = st.born;
  if (groups == 0) {
    const int32_t slot = st.slots++;
    par[slot] = slot;
    Attr& a = attr[slot];
    a.SetPixel(x, y);
    a.first = p;
    a.aux = aux;
    born[slot] = val;
    st.label[p] = slot;
    return;
  }
  int32_t roots[4];
  int nroots = 0;
  for (int j = 0; j < groups; ++j) {
    const int32_t r = Find(par, st.label[p + off8[table.rep[mask][j]]]);
    bool dup = false;
    for (int k = 0; k < nroots; ++k) dup |= roots[k] == r;
    if (!dup) roots[nroots++] = r;
  }
  Attr merged;
  merged.SetPixel(x, y);
  merged.first = p;
  merged.aux = aux;
  int32_t merged_born = val;
  // The merged component lives on in the oldest slot (often the largest component; which slot
  // it is does not change any record).
  int32_t keep = roots[0];
  for (int j = 0; j < nroots; ++j) {
    const Attr& a = attr[roots[j]];
    merged.first = std::min(merged.first, a.first);
    BoxUnion(merged.box, a.box);
    merged.aux = kHole ? std::min(merged.aux, a.aux) : merged.aux + a.aux;
    keep = std::min(keep, roots[j]);
  }
  // A part whose state the merged component keeps continues it; the others end.
  int cont = -1;
  for (int j = 0; j < nroots && cont < 0; ++j) {
    if (SameState<kMode>(attr[roots[j]], merged)) cont = j;
  }
  for (int j = 0; j < nroots; ++j) {
    const int32_t r = roots[j];
    if (j != cont && val < born[r]) emit(val, born[r] - 1, attr[r]);
  }
  if (cont >= 0) merged_born = born[roots[cont]];
  attr[keep] = merged;
  born[keep] = merged_born;
  for (int j = 0; j < nroots; ++j) par[roots[j]] = keep;
  st.label[p] = keep;
}

// The same out of line: the largest-box pass (smooth maps: few such pixels) keeps its hot loop
// small this way; the IoU passes (many such pixels on noisy maps) inline it.
template <bool kEight, Mode kMode, class Emit>
[[gnu::noinline]] void SlowPixelOutOfLine(PassState& st, const NeighbourTable& table,
                                          const int32_t* off8, uint64_t entry, int32_t val,
                                          Emit& emit) {
  SlowPixel<kEight, kMode>(st, table, off8, entry, val, emit);
}

// The union-find pass over ws.values (value 0: not processed). kEight: 8- (else 4-)
// connectivity. Components are numbered (slots) as they appear; each processed pixel keeps the
// slot it joined (ws.label), and the slots form the union-find forest. A root's attributes hold
// its current state and `born`, the value at which that state began (states that differ only in
// what the mode ignores are one state), so emit(lo, hi, attr) receives every state for the
// levels [lo, hi] it holds for: when it changes, or merges, and at the end.
//
// The common pixel (on smooth maps almost all) has one group of processed neighbours: it joins
// that component. It runs in a tight loop; the others go to SlowPixel.
template <bool kEight, Mode kMode, class Emit>
void ComponentPass(Workspace& ws, Emit&& emit) {
  constexpr bool kArea = kMode == Mode::kArea, kHole = kMode == Mode::kHole;
  NeighbourMasks(ws);
  int64_t begin[kLevels];
  SortPixels(ws, begin);
  PassState st{ws.order.data(), ws.nbmask.data(), ws.fill.data(), ws.label.data(),
               ws.par.data(), ws.attr.data(), ws.born.data(), 0};
  const int32_t w32 = static_cast<int32_t>(ws.wp);
  // Neighbour order NW, N, NE, W, E, SW, S, SE.
  const int32_t off8[8] = {-w32 - 1, -w32, -w32 + 1, -1, 1, w32 - 1, w32, w32 + 1};
  const NeighbourTable& table = kEight ? kNeighbours8 : kNeighbours4;
  MaskInfo info[256];
  for (int m = 0; m < 256; ++m) {
    info[m] = MaskInfo{table.count[m] ? off8[table.rep[m][0]] : 0, table.count[m],
                       table.ds2[m]};
  }
  const uint8_t* const nbmask = st.nbmask;
  const uint8_t* const fill = st.fill;
  // Unsigned 32-bit indices: zero-extension is free on x86-64, and p + off (off < 0) wraps to
  // the right index.
  uint32_t* const label = reinterpret_cast<uint32_t*>(st.label);
  uint32_t* const par = reinterpret_cast<uint32_t*>(st.par);
  Attr* const attr = st.attr;
  int32_t* const born = st.born;
  for (int32_t val = kLevels - 1; val >= 1; --val) {
    const uint64_t* const stop = st.order + begin[val - 1];
    for (const uint64_t* it = st.order + begin[val]; it != stop; ++it) {
      const uint64_t entry = *it;
      const uint32_t p = static_cast<uint32_t>(entry >> 32);
      const MaskInfo mi = info[nbmask[p]];
      if (__builtin_expect(mi.groups != 1, 0)) {
        if (kArea) {
          SlowPixelOutOfLine<kEight, kMode>(st, table, off8, entry, val, emit);
        } else {
          SlowPixel<kEight, kMode>(st, table, off8, entry, val, emit);
        }
        continue;
      }
      const uint32_t nb = p + static_cast<uint32_t>(mi.off);
      uint32_t r = par[par[label[nb]]];
      if (__builtin_expect(par[r] != r, 0)) r = static_cast<uint32_t>(Find(st.par, r));
      label[nb] = r;
      label[p] = r;
      Attr& a = attr[r];
      if (kArea) {
        // The area grows with every pixel: every pixel changes the state.
        if (val < born[r]) {
          EmitRecord(emit, val, born[r] - 1, a);  // the state ends here
          born[r] = val;
        }
        int16_t grown[4];
        GrownBox(a, static_cast<uint32_t>(entry), grown);
        std::memcpy(a.box, grown, sizeof(grown));
        a.first = std::min(a.first, static_cast<int32_t>(p));
        a.aux += mi.ds2;
        continue;
      }
      int16_t grown[4];
      bool change = GrownBox(a, static_cast<uint32_t>(entry), grown);
      int32_t aux = 0;
      if (kHole) {
        aux = fill[p];
        change |= aux < a.aux;
      }
      if (change) {
        if (val < born[r]) EmitRecord(emit, val, born[r] - 1, a);  // the state ends here
        std::memcpy(a.box, grown, sizeof(grown));
        born[r] = val;
        if (kHole) a.aux = std::min(a.aux, aux);
      }
    }
  }
  // Every remaining root's state holds for levels [0, born - 1] (born >= 1).
  for (int32_t s = 0; s < st.slots; ++s) {
    if (par[s] == static_cast<uint32_t>(s)) emit(0, born[s] - 1, attr[s]);
  }
}

// Per-level largest boxes [256, 4] of the map loaded into ws.qpad.
__attribute__((always_inline)) inline void LargestBoxesLoaded(Workspace& ws, int32_t* out) {
  FillHoles(ws);
  ws.values = ws.fill.data();  // g = 0 only where q = 0 off any hole: never in a level set
  LevelTable<AreaCell>& tab = ws.area_tab;
  tab.Reset(AreaCell{-1, {0, 0, 0, 0}});
  ComponentPass<true, Mode::kArea>(ws, [&tab](int lo, int hi, const Attr& a) {
    AreaCell& cell = tab.At(lo, hi);
    const int64_t key = (static_cast<int64_t>(a.aux) << 32) | a.first;
    if (key > cell.key) cell = AreaCell{key, {a.x0(), a.y0(), a.x1(), a.y1()}};
  });
  AreaCell best[kLevels];
  tab.Best(best, [](const AreaCell& a, const AreaCell& b) { return a.key > b.key; });
  const int32_t wmax = static_cast<int32_t>(ws.w - 1), hmax = static_cast<int32_t>(ws.h - 1);
  for (int level = 0; level < kLevels; ++level) {
    int32_t* o = out + 4 * level;
    if (best[level].key < 0) {
      o[0] = o[1] = o[2] = o[3] = 0;
    } else {
      const int32_t* b = best[level].box;
      o[0] = b[0];
      o[1] = b[1];
      o[2] = std::min(b[2] + 1, wmax);
      o[3] = std::min(b[3] + 1, hmax);
    }
  }
}

// Per-level best contour IoUs [256] of the map loaded into ws.qpad.
__attribute__((always_inline)) inline void ContourIouLoaded(const Gt& gt, Workspace& ws, float* out) {
  const int32_t wmax = static_cast<int32_t>(ws.w - 1), hmax = static_cast<int32_t>(ws.h - 1);
  LevelTable<float>& tab = ws.iou_tab;
  auto better = [](float a, float b) { return a > b; };
  float comp[kLevels], hole[kLevels];
  FillHoles(ws);  // ws.fill: g, for the hole pass
  // Outer contours: 8-connected components of {q > L}.
  tab.Reset(-1.0f);
  ws.values = ws.qpad.data();
  ComponentPass<true, Mode::kPlain>(ws, [&](int lo, int hi, const Attr& a) {
    const float u = IouWithGt(a.x0(), a.y0(), std::min(a.x1() + 1, wmax), std::min(a.y1() + 1, hmax), gt);
    float& cell = tab.At(lo, hi);
    if (u > cell) cell = u;
  });
  tab.Best(comp, better);
  // Hole contours at level L: the 4-connected components of {q <= L} off the frame, which are
  // those of {q <= L < g} (a pixel is in a hole exactly while L < g, and all pixels of one hole
  // share g). So the pass runs on the pixels with g > q only, in the lane v = 255 - q (lane
  // level L' = 254 - L; v >= 1 as q < g <= 255), and a record counts while L < min g over its
  // pixels, that is for lane levels L' >= 255 - min g. Such pixels never lie on the frame.
  // No hole anywhere (g == q, common on smooth maps): the pass would record nothing.
  tab.Reset(-1.0f);
  bool any_hole = false;
  {
    const uint8_t* qp = ws.qpad.data();
    const uint8_t* g = ws.fill.data();
    uint8_t* lane = ws.lane.data();
    for (size_t p = 0, end = ws.lane.size(); p < end; ++p) {
      const bool in_hole = g[p] > qp[p];
      lane[p] = in_hole ? static_cast<uint8_t>(255 - qp[p]) : 0;
      any_hole |= in_hole;
    }
  }
  ws.values = ws.lane.data();
  if (any_hole) ComponentPass<false, Mode::kHole>(ws, [&](int lo, int hi, const Attr& a) {
    lo = std::max(lo, 255 - a.aux);
    if (lo > hi) return;
    const float u = IouWithGt(a.x0() - 1, a.y0() - 1, std::min(a.x1() + 2, wmax),
                              std::min(a.y1() + 2, hmax), gt);
    float& cell = tab.At(lo, hi);
    if (u > cell) cell = u;
  });
  tab.Best(hole, better);
  const float empty = IouWithGt(0, 0, 0, 0, gt);
  for (int level = 0; level < kLevels; ++level) {
    float u = comp[level];
    if (level <= kLevels - 2) u = std::max(u, hole[kLevels - 2 - level]);
    out[level] = u < 0.0f ? empty : u;
  }
}

// The CPUs this process may run on (the affinity mask, which containers narrow), at least 1.
int64_t DefaultThreads() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max<int64_t>(1, std::thread::hardware_concurrency());
}

// Workspaces outlive a call, so that the next call on maps of the same size skips the
// allocation, zeroing and page faults (a few percent of a call on 224 x 224 maps). At most
// kPoolSize are kept, each only while its maps have at most kPoolPixels pixels.
constexpr size_t kPoolSize = 8;
constexpr int64_t kPoolPixels = int64_t{1} << 20;
std::mutex pool_mutex;
std::vector<std::unique_ptr<Workspace>>& WorkspacePool() {
  static auto* pool = new std::vector<std::unique_ptr<Workspace>>();  // never destroyed
  return *pool;
}

std::unique_ptr<Workspace> AcquireWorkspace(int64_t h, int64_t w) {
  std::unique_ptr<Workspace> ws;
  {
    std::lock_guard<std::mutex> lock(pool_mutex);
    auto& pool = WorkspacePool();
    for (size_t k = 0; k < pool.size(); ++k) {
      if (pool[k]->h == h && pool[k]->w == w) {
        ws = std::move(pool[k]);
        pool.erase(pool.begin() + static_cast<std::ptrdiff_t>(k));
        return ws;
      }
    }
  }
  ws = std::make_unique<Workspace>();
  ws->Resize(h, w);
  return ws;
}

void ReleaseWorkspace(std::unique_ptr<Workspace> ws) {
  if (ws->h * ws->w > kPoolPixels) return;
  std::lock_guard<std::mutex> lock(pool_mutex);
  auto& pool = WorkspacePool();
  if (pool.size() >= kPoolSize) pool.erase(pool.begin());  // the oldest goes
  pool.push_back(std::move(ws));
}

// Runs body(i, workspace) for i in [0, n) on up to `threads` threads (<= 0: all cores).
// Returns false if memory or threads ran out (no exception leaves the kernel).
template <class Body>
bool ParallelFor(int64_t n, int64_t h, int64_t w, int threads, Body&& body) {
  if (n <= 0) return true;
  int64_t count = threads > 0 ? threads : DefaultThreads();
  count = std::max<int64_t>(1, std::min<int64_t>(count, n));
  std::atomic<int64_t> next{0};
  std::atomic<bool> failed{false};
  auto worker = [&]() noexcept {
    try {
      std::unique_ptr<Workspace> ws = AcquireWorkspace(h, w);
      for (int64_t i = next++; i < n && !failed; i = next++) body(i, *ws);
      ReleaseWorkspace(std::move(ws));
    } catch (...) {
      failed = true;
    }
  };
  std::vector<std::thread> pool;
  try {
    pool.reserve(static_cast<size_t>(count - 1));
    for (int64_t t = 0; t + 1 < count; ++t) pool.emplace_back(worker);
  } catch (...) {
    // Fewer threads than asked for: the ones started and this one share the work.
  }
  worker();
  for (auto& t : pool) t.join();
  return !failed;
}

const char* CheckShape(int64_t n, int64_t h, int64_t w) {
  if (n < 0 || h < 1 || w < 1) return "maps must have shape [..., H, W] with H, W >= 1";
  if (h > kMaxSide || w > kMaxSide || h * w > kMaxPixels) {
    return "maps too large for the native box kernel (H, W <= 32767, H * W <= 2**26)";
  }
  return nullptr;
}

bool LargestBoxes(const uint8_t* q, int64_t n, int64_t h, int64_t w, int32_t* out,
                  int threads) {
  return ParallelFor(n, h, w, threads, [&](int64_t i, Workspace& ws) {
    ws.LoadMap(q + i * h * w);
    LargestBoxesLoaded(ws, out + i * kLevels * 4);
  });
}

bool ContourIou(const uint8_t* q, const int32_t* gt_boxes, const bool* gt_valid, int64_t n,
                int64_t h, int64_t w, int64_t g, float* out, int threads) {
  return ParallelFor(n, h, w, threads, [&](int64_t i, Workspace& ws) {
    ws.LoadMap(q + i * h * w);
    ContourIouLoaded(Gt{gt_boxes + i * g * 4, gt_valid + i * g, g}, ws, out + i * kLevels);
  });
}

// The float32 entry points: quantise each map in the kernel, then gather the per-level results
// at the thresholds' levels, table[k, max q] (table: int32 [T, 256], entries in [0, 255]).
const char* CheckTable(const int32_t* table, int64_t t) {
  if (t < 1) return "the level table must have T >= 1 rows";
  for (int64_t k = 0; k < t * kLevels; ++k) {
    if (table[k] < 0 || table[k] >= kLevels) return "level table entries must lie in [0, 255]";
  }
  return nullptr;
}

// Returns 0, -2 (out of memory) or -3 (a map value outside [0, 1] or NaN).
int LargestBoxesF32(const float* s, int64_t n, int64_t h, int64_t w, const int32_t* table,
                    int64_t t, int32_t* out, int threads) {
  std::atomic<bool> bad{false};
  const bool done = ParallelFor(n, h, w, threads, [&](int64_t i, Workspace& ws) {
    const int top = ws.LoadFloatMap(s + i * h * w);
    if (top < 0) {
      bad = true;
      return;
    }
    int32_t per_level[kLevels * 4];
    LargestBoxesLoaded(ws, per_level);
    int32_t* o = out + i * t * 4;
    for (int64_t k = 0; k < t; ++k) std::memcpy(o + 4 * k, per_level + 4 * table[k * kLevels + top], 16);
  });
  return !done ? -2 : bad ? -3 : 0;
}

int ContourIouF32(const float* s, const int32_t* table, int64_t t, const int32_t* gt_boxes,
                  const bool* gt_valid, int64_t n, int64_t h, int64_t w, int64_t g, float* out,
                  int threads) {
  std::atomic<bool> bad{false};
  const bool done = ParallelFor(n, h, w, threads, [&](int64_t i, Workspace& ws) {
    const int top = ws.LoadFloatMap(s + i * h * w);
    if (top < 0) {
      bad = true;
      return;
    }
    float per_level[kLevels];
    ContourIouLoaded(Gt{gt_boxes + i * g * 4, gt_valid + i * g, g}, ws, per_level);
    float* o = out + i * t;
    for (int64_t k = 0; k < t; ++k) o[k] = per_level[table[k * kLevels + top]];
  });
  return !done ? -2 : bad ? -3 : 0;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Plain C entry points. Return 0 on success, -1 for a bad shape, -2 when out of memory.
// ---------------------------------------------------------------------------------------------
extern "C" {

int infocam_boxes_abi_version() { return kAbiVersion; }

int infocam_largest_boxes(const uint8_t* q, int64_t n, int64_t h, int64_t w, int32_t* out,
                          int threads) {
  if (CheckShape(n, h, w) != nullptr) return -1;
  return LargestBoxes(q, n, h, w, out, threads) ? 0 : -2;
}

int infocam_contour_iou(const uint8_t* q, const int32_t* gt_boxes, const bool* gt_valid,
                        int64_t n, int64_t h, int64_t w, int64_t g, float* out, int threads) {
  if (CheckShape(n, h, w) != nullptr || g < 0) return -1;
  return ContourIou(q, gt_boxes, gt_valid, n, h, w, g, out, threads) ? 0 : -2;
}

// Float32 maps [n, h, w] in [0, 1], quantised here; table int32 [t, 256] (boxes.level_table).
// out: int32 [n, t, 4] / float32 [n, t]. Return -3 when a map value is outside [0, 1] or NaN.
int infocam_largest_boxes_f32(const float* s, int64_t n, int64_t h, int64_t w,
                              const int32_t* table, int64_t t, int32_t* out, int threads) {
  if (CheckShape(n, h, w) != nullptr || CheckTable(table, t) != nullptr) return -1;
  return LargestBoxesF32(s, n, h, w, table, t, out, threads);
}

int infocam_contour_iou_f32(const float* s, const int32_t* table, int64_t t,
                            const int32_t* gt_boxes, const bool* gt_valid, int64_t n, int64_t h,
                            int64_t w, int64_t g, float* out, int threads) {
  if (CheckShape(n, h, w) != nullptr || CheckTable(table, t) != nullptr || g < 0) return -1;
  return ContourIouF32(s, table, t, gt_boxes, gt_valid, n, h, w, g, out, threads);
}

}  // extern "C"

// ---------------------------------------------------------------------------------------------
// XLA FFI handlers. Leading dimensions are batch (vmap_method="broadcast_all" adds them).
// ---------------------------------------------------------------------------------------------
namespace ffi = xla::ffi;

namespace {

// `threads`: worker threads for this call (<= 0: every CPU of the process).
ffi::Error LargestBoxesFfi(ffi::Buffer<ffi::U8> q, ffi::ResultBuffer<ffi::S32> out,
                           int32_t threads) {
  const auto dims = q.dimensions();
  if (dims.size() < 2) return ffi::Error::InvalidArgument("maps must have rank >= 2");
  const int64_t h = dims[dims.size() - 2], w = dims[dims.size() - 1];
  const int64_t n = h * w > 0 ? static_cast<int64_t>(q.element_count()) / (h * w) : 0;
  if (const char* err = CheckShape(n, h, w)) return ffi::Error::InvalidArgument(err);
  if (static_cast<int64_t>(out->element_count()) != n * kLevels * 4) {
    return ffi::Error::InvalidArgument("largest boxes: output must have shape [..., 256, 4]");
  }
  if (!LargestBoxes(q.typed_data(), n, h, w, out->typed_data(), threads)) {
    return ffi::Error(ffi::ErrorCode::kResourceExhausted, "native box kernel: out of memory");
  }
  return ffi::Error::Success();
}

ffi::Error ContourIouFfi(ffi::Buffer<ffi::U8> q, ffi::Buffer<ffi::S32> gt_boxes,
                         ffi::Buffer<ffi::PRED> gt_valid, ffi::ResultBuffer<ffi::F32> out,
                         int32_t threads) {
  const auto dims = q.dimensions();
  const auto gdims = gt_boxes.dimensions();
  if (dims.size() < 2 || gdims.size() < 2 || gdims[gdims.size() - 1] != 4) {
    return ffi::Error::InvalidArgument("contour IoU: maps [..., H, W], gt_boxes [..., G, 4]");
  }
  const int64_t h = dims[dims.size() - 2], w = dims[dims.size() - 1];
  const int64_t g = gdims[gdims.size() - 2];
  const int64_t n = h * w > 0 ? static_cast<int64_t>(q.element_count()) / (h * w) : 0;
  if (const char* err = CheckShape(n, h, w)) return ffi::Error::InvalidArgument(err);
  if (static_cast<int64_t>(gt_boxes.element_count()) != n * g * 4 ||
      static_cast<int64_t>(gt_valid.element_count()) != n * g ||
      static_cast<int64_t>(out->element_count()) != n * kLevels) {
    return ffi::Error::InvalidArgument("contour IoU: batch sizes of maps, gt and output differ");
  }
  if (!ContourIou(q.typed_data(), gt_boxes.typed_data(), gt_valid.typed_data(), n, h, w, g,
                  out->typed_data(), threads)) {
    return ffi::Error(ffi::ErrorCode::kResourceExhausted, "native box kernel: out of memory");
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(InfocamLargestBoxes, LargestBoxesFfi,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::U8>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Attr<int32_t>("threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(InfocamContourIou, ContourIouFfi,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::U8>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int32_t>("threads"));
