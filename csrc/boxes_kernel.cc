// Compiled CPU kernel for the WSOL box pass of infocam_jax.boxes (see infocam_jax/_native.py).
//
// One union-find pass over the pixels of a quantised uint8 map in descending value order (a
// component tree) visits every 8-connected component of every level set {q > L}, L = 0..255.
// Whenever a root changes, its previous state (a "record") is closed: it was the component's
// state for the levels [v_now, v_born - 1]. Records are reduced into a [256 x 256] table
// indexed by (lowest, highest level); a row suffix maximum followed by a column prefix maximum
// gives, for every level, the best record alive at that level. The cost does not depend on the
// number of thresholds: those are a gather on the [256] per-level results, done in JAX.
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
// a frame-padded grid whose border is never processed.
#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace {

constexpr int kLevels = 256;
constexpr int kAbiVersion = 2;
// Limits that keep every packed value inside its integer type.
constexpr int64_t kMaxSide = 32767;
constexpr int64_t kMaxPixels = int64_t{1} << 26;

struct Attr {
  int32_t size;   // pixel count (union by size)
  int32_t first;  // first pixel in raster order (padded index: same order)
  int32_t x0, y0, x1, y1;
  int32_t aux;    // Mode::kArea: twice the outer-contour area; kHole: the smallest filled value
  int32_t born;   // value at which the current state was created
};

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

// Per-thread scratch memory, sized for one H x W image and reused across the batch.
struct Workspace {
  int64_t h = 0, w = 0, wp = 0;
  std::vector<int32_t> par;       // [(H+2)(W+2)] union-find parent (of processed pixels)
  std::vector<uint8_t> done;      // [(H+2)(W+2)] processed (the border never)
  std::vector<Attr> attr;         // [(H+2)(W+2)] attributes of roots
  std::vector<uint32_t> order;    // [H W] pixels (y << 16 | x) by descending value
  std::vector<uint8_t> values;    // [H W] the lane's values (hole-filled or inverted map)
  std::vector<uint8_t> qpad;      // [(H+2)(W+2)] hole filling: the map, padded
  std::vector<uint8_t> fill;      // [(H+2)(W+2)] hole filling: the filled map
  std::vector<int32_t> fifo;      // hole filling: the propagation queue
  std::vector<AreaCell> area_tab; // [256 * 256]
  std::vector<float> iou_tab;     // [256 * 256]

  void Resize(int64_t height, int64_t width) {
    h = height;
    w = width;
    wp = width + 2;
    const size_t padded = static_cast<size_t>((height + 2) * wp);
    const size_t n = static_cast<size_t>(height * width);
    par.assign(padded, -1);
    done.assign(padded, 0);
    attr.resize(padded);
    order.resize(n);
    values.resize(n);
    qpad.assign(padded, 0);
    fill.resize(padded);
  }
};

// Grayscale hole filling: g(p) = min over 4-connected paths from outside the image (value 0) to
// p of the largest value on the path (reconstruction by erosion from the frame), by Vincent's
// hybrid algorithm on the padded grid (border: g = q = 0): a forward and a backward raster sweep
// of g = max(q, min(g, neighbours already swept)), then a FIFO propagation from the pixels the
// sweeps left unsettled.
void FillHoles(const uint8_t* q, Workspace& ws) {
  const int64_t h = ws.h, w = ws.w, wp = ws.wp;
  uint8_t* qp = ws.qpad.data();  // border stays 0
  uint8_t* g = ws.fill.data();
  for (int64_t y = 0; y < h; ++y) std::memcpy(qp + (y + 1) * wp + 1, q + y * w, w);
  std::fill(ws.fill.begin(), ws.fill.end(), 0);
  for (int64_t y = 1; y <= h; ++y) {  // marker: the largest value inside, 0 on the border
    std::memset(g + y * wp + 1, 255, static_cast<size_t>(w));
  }
  // Branch-free queue writes (the conditions are data-dependent coin flips on noisy maps): a
  // candidate is always written at the tail, and the tail advances only when it counts.
  std::vector<int32_t>& fifo = ws.fifo;
  if (fifo.size() < static_cast<size_t>(h * w + 8)) fifo.resize(static_cast<size_t>(h * w + 8));
  size_t tail = 0;
  // The running value along a row stays in a register: the row's serial dependency is then a
  // min and a max per pixel, not a store-to-load round trip.
  for (int64_t y = 1; y <= h; ++y) {
    uint8_t run = 0;  // the border
    for (int64_t p = y * wp + 1, end = y * wp + w; p <= end; ++p) {
      run = std::max(qp[p], std::min(std::min(g[p], g[p - wp]), run));
      g[p] = run;
    }
  }
  // After the backward sweep the only unsettled pairs are (p, its S or E neighbour q) with
  // g(q) > max(q(q), g(p)): those p seed the FIFO.
  for (int64_t y = h; y >= 1; --y) {
    uint8_t run = 0;
    for (int64_t p = y * wp + w, end = y * wp + 1; p >= end; --p) {
      const uint8_t east = run;
      run = std::max(qp[p], std::min(std::min(g[p], g[p + wp]), east));
      g[p] = run;
      fifo[tail] = static_cast<int32_t>(p);
      const uint8_t south = g[p + wp];
      tail += ((south > run) & (south > qp[p + wp])) | ((east > run) & (east > qp[p + 1]));
    }
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
      g[nb] = lower ? std::max(gp, qn) : gn;
      fifo[tail] = nb;
      tail += lower;
    }
  }
  uint8_t* out = ws.values.data();
  for (int64_t y = 0; y < h; ++y) std::memcpy(out + y * w, g + (y + 1) * wp + 1, w);
}

// Pixels sorted by descending value, raster order within a value (counting sort). With `keep`
// (a padded [H+2, W+2] map), only the pixels with keep + v > 255 are listed. Returns the count.
int64_t SortPixels(const uint8_t* v, const uint8_t* keep, Workspace& ws) {
  int64_t start[kLevels + 1] = {0};
  const int64_t h = ws.h, w = ws.w, wp = ws.wp;
  auto kept = [&](int64_t y, int64_t x, int64_t p) {
    return keep == nullptr || keep[(y + 1) * wp + x + 1] + v[p] > 255;
  };
  for (int64_t y = 0, p = 0; y < h; ++y) {
    for (int64_t x = 0; x < w; ++x, ++p) start[kLevels - 1 - v[p] + 1] += kept(y, x, p);
  }
  for (int k = 0; k < kLevels; ++k) start[k + 1] += start[k];
  const int64_t count = start[kLevels];
  uint32_t* order = ws.order.data();
  for (int64_t y = 0, p = 0; y < h; ++y) {
    for (int64_t x = 0; x < w; ++x, ++p) {
      if (kept(y, x, p)) order[start[kLevels - 1 - v[p]]++] = static_cast<uint32_t>(y << 16 | x);
    }
  }
  return count;
}

inline int32_t Find(int32_t* par, int32_t r) {
  while (par[r] != r) {
    par[r] = par[par[r]];
    r = par[r];
  }
  return r;
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

enum class Mode {
  kPlain,  // boxes only
  kArea,   // and the outer-contour area (aux)
  kHole,   // only the pixels with filled value g > q (v = 255 - q), and min g (aux)
};

// The union-find pass over ws.values. kEight: 8- (else 4-) connectivity. emit(lo, hi, attr)
// receives every record alive for levels [lo, hi].
template <bool kEight, Mode kMode, class Emit>
void ComponentPass(Workspace& ws, Emit&& emit) {
  constexpr bool kArea = kMode == Mode::kArea, kHole = kMode == Mode::kHole;
  const int64_t w = ws.w, wp = ws.wp;
  const uint8_t* v = ws.values.data();
  const uint8_t* fill = ws.fill.data();
  const int64_t n = SortPixels(v, kHole ? fill : nullptr, ws);
  int32_t* par = ws.par.data();
  Attr* attr = ws.attr.data();
  uint8_t* done = ws.done.data();  // processed pixels (a denser copy of par >= 0)
  std::fill(ws.done.begin(), ws.done.end(), 0);
  const int32_t w32 = static_cast<int32_t>(wp);
  // Neighbour order NW, N, NE, W, E, SW, S, SE.
  const int32_t off8[8] = {-w32 - 1, -w32, -w32 + 1, -1, 1, w32 - 1, w32, w32 + 1};
  const uint32_t* order = ws.order.data();
  for (int64_t i = 0; i < n; ++i) {
    const int32_t x = static_cast<int32_t>(order[i] & 0xFFFFu);
    const int32_t y = static_cast<int32_t>(order[i] >> 16);
    const int32_t p = static_cast<int32_t>((y + 1) * wp + x + 1);
    const int32_t val = v[static_cast<int64_t>(y) * w + x];
    int32_t roots[4];
    int nroots = 0;
    int32_t ds2 = 0;  // the initial aux
    uint32_t mask = 0;
    for (int k = 0; k < 8; ++k) mask |= static_cast<uint32_t>(done[p + off8[k]]) << k;
    const NeighbourTable& table = kEight ? kNeighbours8 : kNeighbours4;
    const int groups = table.count[mask];
    for (int j = 0; j < groups; ++j) {
      const int32_t r = Find(par, p + off8[table.rep[mask][j]]);
      bool dup = false;
      for (int k = 0; k < nroots; ++k) dup |= roots[k] == r;
      if (!dup) roots[nroots++] = r;
    }
    if (kArea) ds2 = table.ds2[mask];
    if (kHole) ds2 = fill[p];
    if (nroots == 1) {  // the common case: the pixel joins one component
      const int32_t r = roots[0];
      Attr& a = attr[r];
      if (val < a.born) emit(val, a.born - 1, a);  // the state ends here
      a.size += 1;
      a.first = std::min(a.first, p);
      a.x0 = std::min(a.x0, x);
      a.y0 = std::min(a.y0, y);
      a.x1 = std::max(a.x1, x);
      a.y1 = std::max(a.y1, y);
      a.aux = kHole ? std::min(a.aux, ds2) : a.aux + ds2;
      a.born = val;
      par[p] = r;
      done[p] = 1;
      continue;
    }
    Attr merged{1, p, x, y, x, y, ds2, val};
    int32_t keep = p;
    int32_t keep_size = 0;
    for (int j = 0; j < nroots; ++j) {
      const Attr& a = attr[roots[j]];
      if (val < a.born) emit(val, a.born - 1, a);
      merged.size += a.size;
      merged.first = std::min(merged.first, a.first);
      merged.x0 = std::min(merged.x0, a.x0);
      merged.y0 = std::min(merged.y0, a.y0);
      merged.x1 = std::max(merged.x1, a.x1);
      merged.y1 = std::max(merged.y1, a.y1);
      merged.aux = kHole ? std::min(merged.aux, a.aux) : merged.aux + a.aux;
      if (a.size > keep_size) {
        keep_size = a.size;
        keep = roots[j];
      }
    }
    attr[keep] = merged;
    par[p] = keep;
    done[p] = 1;
    for (int j = 0; j < nroots; ++j) par[roots[j]] = keep;
  }
  if (kHole) {
    // Every remaining root's state holds for levels [0, born - 1].
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t yx = order[i];
      const int32_t p = static_cast<int32_t>(((yx >> 16) + 1) * wp + (yx & 0xFFFFu) + 1);
      if (par[p] == p && attr[p].born >= 1) emit(0, attr[p].born - 1, attr[p]);
    }
  } else if (n > 0) {
    // The whole grid is one component at the end: its state holds for levels [0, born - 1].
    const uint32_t last = order[n - 1];
    const int32_t p = static_cast<int32_t>(((last >> 16) + 1) * wp + (last & 0xFFFFu) + 1);
    const Attr& a = attr[Find(par, p)];
    if (a.born >= 1) emit(0, a.born - 1, a);
  }
}

// Best record per level: best[L] = max over cells (lo, hi) with lo <= L <= hi.
template <class T, class Better>
void BestPerLevel(const T* tab, const T& empty, T* best, Better&& better) {
  T col[kLevels];
  std::fill(col, col + kLevels, empty);
  for (int lo = 0; lo < kLevels; ++lo) {
    T run = empty;
    for (int hi = kLevels - 1; hi >= lo; --hi) {
      const T& cell = tab[lo * kLevels + hi];
      if (better(cell, run)) run = cell;
      if (better(run, col[hi])) col[hi] = run;
    }
    best[lo] = col[lo];
  }
}

void LargestBoxesOne(const uint8_t* q, Workspace& ws, int32_t* out) {
  FillHoles(q, ws);
  ws.area_tab.resize(kLevels * kLevels);
  AreaCell* tab = ws.area_tab.data();
  for (int k = 0; k < kLevels * kLevels; ++k) tab[k].key = -1;
  ComponentPass<true, Mode::kArea>(ws, [tab](int lo, int hi, const Attr& a) {
    AreaCell& cell = tab[lo * kLevels + hi];
    const int64_t key = (static_cast<int64_t>(a.aux) << 32) | a.first;
    if (key > cell.key) cell = AreaCell{key, {a.x0, a.y0, a.x1, a.y1}};
  });
  AreaCell best[kLevels];
  BestPerLevel(tab, AreaCell{-1, {0, 0, 0, 0}}, best,
               [](const AreaCell& a, const AreaCell& b) { return a.key > b.key; });
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

void ContourIouOne(const uint8_t* q, const Gt& gt, Workspace& ws, float* out) {
  const int32_t wmax = static_cast<int32_t>(ws.w - 1), hmax = static_cast<int32_t>(ws.h - 1);
  const int64_t n = ws.h * ws.w;
  ws.iou_tab.resize(kLevels * kLevels);
  float* tab = ws.iou_tab.data();
  auto better = [](float a, float b) { return a > b; };
  float comp[kLevels], hole[kLevels];
  FillHoles(q, ws);  // ws.fill: g, for the hole pass
  // Outer contours: 8-connected components of {q > L}.
  std::fill(tab, tab + kLevels * kLevels, -1.0f);
  std::memcpy(ws.values.data(), q, static_cast<size_t>(n));
  ComponentPass<true, Mode::kPlain>(ws, [&](int lo, int hi, const Attr& a) {
    const float u = IouWithGt(a.x0, a.y0, std::min(a.x1 + 1, wmax), std::min(a.y1 + 1, hmax), gt);
    float& cell = tab[lo * kLevels + hi];
    if (u > cell) cell = u;
  });
  BestPerLevel(tab, -1.0f, comp, better);
  // Hole contours at level L: the 4-connected components of {q <= L} off the frame, which are
  // those of {q <= L < g} (a pixel is in a hole exactly while L < g, and all pixels of one hole
  // share g). So the pass runs on the pixels with g > q only, in the lane v = 255 - q (lane
  // level L' = 254 - L), and a record counts while L < min g over its pixels, that is for lane
  // levels L' >= 255 - min g. Such pixels never lie on the frame.
  std::fill(tab, tab + kLevels * kLevels, -1.0f);
  for (int64_t p = 0; p < n; ++p) ws.values[p] = static_cast<uint8_t>(255 - q[p]);
  ComponentPass<false, Mode::kHole>(ws, [&](int lo, int hi, const Attr& a) {
    lo = std::max(lo, 255 - a.aux);
    if (lo > hi) return;
    const float u = IouWithGt(a.x0 - 1, a.y0 - 1, std::min(a.x1 + 2, wmax),
                              std::min(a.y1 + 2, hmax), gt);
    float& cell = tab[lo * kLevels + hi];
    if (u > cell) cell = u;
  });
  BestPerLevel(tab, -1.0f, hole, better);
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
      Workspace ws;
      ws.Resize(h, w);
      for (int64_t i = next++; i < n && !failed; i = next++) body(i, ws);
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
    LargestBoxesOne(q + i * h * w, ws, out + i * kLevels * 4);
  });
}

bool ContourIou(const uint8_t* q, const int32_t* gt_boxes, const bool* gt_valid, int64_t n,
                int64_t h, int64_t w, int64_t g, float* out, int threads) {
  return ParallelFor(n, h, w, threads, [&](int64_t i, Workspace& ws) {
    ContourIouOne(q + i * h * w, Gt{gt_boxes + i * g * 4, gt_valid + i * g, g}, ws,
                  out + i * kLevels);
  });
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
