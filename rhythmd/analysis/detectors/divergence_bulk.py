"""The divergence detector's bulk path: many train losses at once while nothing can fire."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .. import stats
from ..stats import MAD_TO_SIGMA

if TYPE_CHECKING:
    from .divergence import DivergenceDetector

_Seq = list[float] | list[int] | np.ndarray
_SCALAR_MAX = 128  # fast_forward: up to this many losses the pure-Python loop is cheaper


class DivergenceBulkPath:
    """``fast_forward`` of :class:`~.divergence.DivergenceDetector` (a base class of it): the
    exact state that its per-point ``update`` would leave, for a prefix of quiet points."""

    def fast_forward(self: DivergenceDetector, steps: np.ndarray, xs: np.ndarray) -> int:
        """Consume a prefix of losses in bulk while nothing can fire; return its length.

        In the quiet state (no open divergence, spike or pending jump, start level and
        trailing baseline established, windows full), and over non-finite losses while a
        critical divergence is open (they are only counted). For each point it computes the exact
        per-point statistics (median-of-5, the baseline refreshed every 8 steps, the start
        bar, spike z-score) and stops before the first point that is elevated, crosses a bar
        or a spike threshold (with a small margin, so the gate is conservative), is non-finite
        or would change the scale. The state after the prefix is exactly the state that
        ``update`` per point would leave; the caller feeds the point at the returned index
        through ``update``.
        """
        if self.active:
            return self._ff_open(steps, xs)
        cfg = self.cfg
        nb = cfg.div_baseline_steps
        if (not self.watch_level or self.active or self.spike_open or self.pending is not None
                or self.scale is None or len(self.init) < 10 or len(self.init_x) < 10
                or not math.isfinite(self.sig0_cache) or not math.isfinite(self.base_med)
                or not math.isfinite(self.base_sig) or not math.isfinite(self.base_sig_raw)
                or len(self.ys) < nb + 5 or xs.size == 0):
            return 0
        if xs.size <= _SCALAR_MAX:  # small batches: scalar loop, no numpy call overhead
            return self._ff_scalar(steps.tolist(), xs.tolist())
        ok = np.isfinite(xs) if self.signed else np.isfinite(xs) & (xs > 0)
        n = int(xs.size) if ok.all() else int(np.argmin(ok))
        if n == 0:
            return 0
        xs = xs[:n]
        ynew = self._ys_of(xs)
        hist = self.ys[-(nb + 4) :]
        o = len(hist)
        f = np.concatenate((hist, ynew))
        yv = f[o:]
        m5 = _median5(f[o - 4 :])
        # baseline refreshes at count % 8 == 0 over ys[-(nb + 5):-5] (same floats as median)
        cnt = self.count + 1 + np.arange(n)
        ref = np.flatnonzero(cnt % 8 == 0)
        bm = np.empty(ref.size + 1)
        braw = np.empty(ref.size + 1)
        bm[0], braw[0] = self.base_med, self.base_sig_raw
        if ref.size:  # the windows start 8 values apart: a strided view, no copy
            w0 = f[o + int(ref[0]) - (nb + 4):]
            win = as_strided(w0, (ref.size, nb), (8 * w0.strides[0], w0.strides[0]),
                             writeable=False)
            med = _row_median(win)
            bm[1:] = med
            braw[1:] = MAD_TO_SIGMA * _row_median(np.abs(win - med[:, None]))
        fl = self._floors(bm)  # floor at each baseline level (for the gate only)
        sig_b = np.maximum(braw, fl)
        sig_b[0] = self.base_sig
        spk_b = np.maximum(braw, 0.2 * fl)
        # the baseline in force before point j (old) and after a refresh at j (cur)
        cur = cnt // 8 - self.count // 8
        old = (cnt - 1) // 8 - self.count // 8
        bar = _margin(self.y0 + cfg.div_z * self.sig0_cache)
        learned, back = self._back_bar()
        learned += 1e-9 * (1.0 + abs(learned))
        bestc = np.minimum.accumulate(np.concatenate(([self.best_m5], m5)))[1:]
        # the tests of update, each with a small margin (a conservative gate)
        flag = m5 > np.minimum(_margins(bm + 3 * sig_b)[old],  # elevated
                               np.minimum(_margins(bm + cfg.div_z_recent * sig_b), bar)[cur])
        flag |= (m5 > _margin(back)) & (bestc < learned)
        flag |= (yv - bm[cur]) / spk_b[cur] > cfg.spike_z - 1e-9 * (1.0 + cfg.spike_z)
        hit = np.flatnonzero(flag)
        k = int(hit[0]) if hit.size else n
        if k == 0:
            return 0
        self._extend(ynew[:k], steps[:k], xs[:k])
        self.elev_start = None
        self.best_m5 = float(bestc[k - 1])
        c = int(cur[k - 1])
        if c > 0:
            self.base_med = float(bm[c])
            self.base_sig_raw = raw = float(braw[c])
            fl_c = self._floor(self.base_med)
            self.base_sig = raw if raw >= fl_c else fl_c
        return k

    def _extend(self: DivergenceDetector, ys: _Seq, ss: _Seq, xs: _Seq) -> None:
        """Append points (lists, or arrays: only the ones kept become Python numbers) to the
        window and count them, trimmed as per-point appends trim."""
        cfg = self.cfg
        cap = cfg.div_baseline_steps + cfg.div_trend_steps + 8
        k = len(ys)
        ln = len(self.ys)
        if ln + k <= 2 * cap:
            self.ys += _pylist(ys)
            self.ss += _pylist(ss)
            self.xs += _pylist(xs)
        elif (ln := cap + (k - (2 * cap + 1 - ln)) % (cap + 1)) <= k:
            self.ys, self.ss, self.xs = (_pylist(a[k - ln:]) for a in (ys, ss, xs))
        else:
            old = len(self.ys) - (ln - k)
            self.ys = self.ys[old:] + _pylist(ys)
            self.ss = self.ss[old:] + _pylist(ss)
            self.xs = self.xs[old:] + _pylist(xs)
        self.count += k

    def _ff_open(self: DivergenceDetector, steps: np.ndarray, xs: np.ndarray) -> int:
        """``fast_forward`` while a divergence is open: runs of non-finite losses (critical
        only) and of finite ones that neither close it nor change its severity."""
        n = int(xs.size)
        done, w = 0, 64  # finite losses in windows that grow while none stops (a divergence
        # that closes within a few steps costs no pass over the whole batch)
        while done < n:
            if self.critical and not math.isfinite(float(xs[done])):
                k = self._ff_nonfinite(xs[done:])
            else:
                end = min(n, done + w)
                if end - done <= 64:
                    k = self._ff_open_scalar(steps[done:end].tolist(), xs[done:end].tolist())
                else:
                    k = self._ff_open_bulk(steps[done:end], xs[done:end])
                if k == end - done:
                    w *= 4
            if k == 0:
                break
            done += k
        return done

    def _open_gate(self: DivergenceDetector) -> tuple[float, float, bool] | None:
        """(elevated above, recovering at or below, watch the severity) for ``update`` of a
        finite loss while a divergence is open; None when the fast path does not apply
        (the start level or the window still forming)."""
        if (not self.watch_level or self.scale is None or len(self.init) < 10
                or len(self.init_x) < 10 or not math.isfinite(self.sig0_cache)
                or len(self.ys) < 4):
            return None
        sig = self.base_sig if math.isfinite(self.base_sig) else self.sig0_cache
        base = self.base_med if math.isfinite(self.base_med) else self.y0
        band = 0.0 if self.open_test == "back_at_start" else 3 * sig
        return base + 3 * sig, self.open_base + band, not self.critical and self.severity != "high"

    def _ff_open_scalar(self: DivergenceDetector, sl: list[int], xl: list[float]) -> int:
        """``_ff_open`` over finite losses, point by point: what ``update`` and ``_track``
        do, stopping before a point that closes the divergence, changes its severity, is
        non-finite or would change the scale."""
        gate = self._open_gate()
        if gate is None:
            return 0
        elev, okay, watch = gate
        l0 = self._loss(self.y0)
        if watch and not l0 > 0:
            return 0
        rec = self.cfg.div_recover_steps
        signed = self.signed
        ys = self.ys
        for j, (st, x) in enumerate(zip(sl, xl, strict=True)):
            if not math.isfinite(x) or (x <= 0 and not signed):
                return j
            y = self._y(x)
            m5 = sorted([*ys[-4:], y])[2]
            run = self.ok_run + 1 if m5 <= okay else 0
            if run >= rec or (watch and self._loss(m5) / l0 >= 3):
                return j
            self._extend([y], [st], [x])
            ys = self.ys
            self.ok_run = run
            if m5 > elev:
                if self.elev_start is None:
                    self.elev_start = st
            else:
                self.elev_start = None
            self.best_m5 = min(self.best_m5, m5)
        return len(xl)

    def _ff_open_bulk(self: DivergenceDetector, steps: np.ndarray, xs: np.ndarray) -> int:
        """``_ff_open_scalar`` with numpy over many points (same floats)."""
        gate = self._open_gate()
        if gate is None:
            return 0
        elev, okay, watch = gate
        if watch:  # a warning that may turn high: rare, checked point by point
            return self._ff_open_scalar(steps.tolist(), xs.tolist())
        ok = np.isfinite(xs) if self.signed else np.isfinite(xs) & (xs > 0)
        n = int(xs.size) if ok.all() else int(np.argmin(ok))
        if n == 0:
            return 0
        ynew = self._ys_of(xs[:n])
        f = np.concatenate((self.ys[-4:], ynew))
        m5 = _median5(f)
        jj = np.arange(n)
        last_bad = np.maximum.accumulate(np.where(m5 <= okay, -1, jj))
        run = jj - last_bad + np.where(last_bad < 0, self.ok_run, 0)
        hit = np.flatnonzero(run >= self.cfg.div_recover_steps)
        k = int(hit[0]) if hit.size else n
        if k == 0:
            return 0
        m5l = m5[:k].tolist()
        sl = steps[:k].tolist()
        self._extend(ynew[:k], sl, xs[:k])
        self.ok_run = int(run[k - 1])
        low = np.flatnonzero(m5[:k] <= elev)
        if not m5l[-1] > elev:
            self.elev_start = None
        elif low.size:
            self.elev_start = sl[int(low[-1]) + 1]
        elif self.elev_start is None:
            self.elev_start = sl[0]
        self.best_m5 = min(self.best_m5, *m5l)
        return k

    def _floors(self: DivergenceDetector, y: np.ndarray) -> np.ndarray:
        """``_floor`` at finite levels with numpy's tanh (within ulps: for the gate only)."""
        f = self.cfg.div_sigma_floor
        if self.signed:
            return np.full(y.size, f)
        return np.maximum(np.minimum(f, f * math.sqrt(2.0) * np.tanh(np.abs(y))), 1e-300)

    def _ys_of(self: DivergenceDetector, xs: np.ndarray) -> np.ndarray:
        """``_y`` of finite losses (positive on the log scale), bit for bit."""
        if self.signed:
            z = np.minimum(np.maximum((xs - self.m0) / self.s0, -stats._BIG), stats._BIG)
        else:  # (positive)
            z = np.minimum(xs / self.scale, stats._BIG)
        # math.asinh: bit-identical to _y() (numpy's may differ in the last bit)
        return np.fromiter(map(math.asinh, z.tolist()), float, xs.size)

    def _ff_nonfinite(self: DivergenceDetector, xs: np.ndarray) -> int:
        """A run of non-finite losses while a critical divergence is open (a run that blew
        up and keeps sending NaN): each is only counted, as ``update`` does."""
        fin = np.isfinite(xs)
        j = int(np.argmax(fin)) if fin.any() else int(xs.size)
        self.n_nonfinite += j
        self.ok_run = 0
        return j

    def _ff_scalar(self: DivergenceDetector, sl: list[int], xl: list[float]) -> int:
        """``fast_forward`` for a few points (same gate, same floats, pure Python). The
        thresholds change only when the baseline is refreshed (every 8th point); its MAD is
        computed only when a bound from its floor trips the gate, or for the state."""
        cfg = self.cfg
        nb = cfg.div_baseline_steps
        learned, back = self._back_bar()
        learned += 1e-9 * (1.0 + abs(learned))
        back = _margin(back)
        bar = _margin(self.y0 + cfg.div_z * self.sig0_cache)
        zmax = cfg.spike_z - 1e-9 * (1.0 + cfg.spike_z)
        signed = self.signed
        base, raw = self.base_med, self.base_sig_raw
        fl = self._floor(base)
        lim = _Limits(cfg.div_z_recent, bar, base, raw, fl, self.base_sig)
        win = self.ys[-(nb + 4):]
        pend: list[float] | None = None  # sorted window of a refresh whose MAD is pending
        best = self.best_m5
        cnt = self.count
        refreshed = False
        j = 0
        scale = self.scale or 1.0
        big = stats._BIG
        y4, y3, y2, y1 = win[-4:]  # the last four values, latest last
        for x in xl:
            if not math.isfinite(x) or (x <= 0 and not signed):
                break
            if signed:
                y = self._y(x)
            else:  # _y on the log scale, inline
                z = x / scale
                y = math.asinh(z if z < big else big)
            m5 = sorted((y4, y3, y2, y1, y))[2]
            if (m5 if m5 < best else best) < learned and m5 > back:
                break
            refresh = (cnt + 1) % 8 == 0
            if (refresh or m5 > lim.top or (y - lim.base) / lim.spk > zmax) \
                    and lim.trips(m5, y, zmax, refresh):  # (the usual case decided inline)
                if pend is None:
                    break
                raw, pend = _sorted_mad(pend, base), None
                lim = _Limits(cfg.div_z_recent, bar, base, raw, fl)
                if lim.trips(m5, y, zmax, refresh):
                    break
            if refresh:  # ys[-(nb + 5):-5] once y is appended
                w = win[-(nb + 4): -4]
                w.sort()
                h = len(w) // 2
                b_ = w[h] if len(w) % 2 else (w[h - 1] + w[h]) / 2
                f_ = self._floor(b_)
                new = _Limits(cfg.div_z_recent, bar, b_, None, f_)
                r_ = None
                if new.trips(m5, y, zmax, after_refresh=True):
                    r_ = _sorted_mad(w, b_)
                    new = _Limits(cfg.div_z_recent, bar, b_, r_, f_)
                    if new.trips(m5, y, zmax, after_refresh=True):
                        break
                base, raw, fl, lim, refreshed = b_, r_, f_, new, True
                pend = w if r_ is None else None
            win.append(y)
            y4, y3, y2, y1 = y3, y2, y1, y
            cnt += 1
            if m5 < best:
                best = m5
            j += 1
        if j:
            self._extend(win[-j:], sl[:j], xl[:j])
            self.elev_start = None
            self.best_m5 = best
            if refreshed:
                if pend is not None:
                    raw = _sorted_mad(pend, base)
                self.base_med, self.base_sig_raw = base, raw
                self.base_sig = raw if raw >= fl else fl
        return j


class _Limits:
    """The quiet-state thresholds of one baseline (``_ff_scalar``), exact when its raw sigma
    is known; with ``raw=None`` lower bounds from the floor (sigma >= floor), so a point they
    pass is certainly quiet."""

    __slots__ = ("base", "jump", "level", "spk", "top")

    def __init__(self, zr: float, bar: float, base: float, raw: float | None, fl: float,
                 sig: float | None = None) -> None:
        if sig is None:
            sig = fl if raw is None or not raw >= fl else raw
        fs = 0.2 * fl
        self.base = base
        self.spk = fs if raw is None or not raw > fs else raw
        self.jump = _margin(base + 3 * sig)  # elevated (over the baseline before a point)
        self.level = min(bar, _margin(base + zr * sig))  # above the bar or a level jump
        self.top = min(self.level, self.jump)

    def trips(self, m5: float, y: float, zmax: float, before_refresh: bool = False,
              after_refresh: bool = False) -> bool:
        """Whether a point may fire. A point that refreshes the baseline is tested for
        elevation against the baseline before it, for the rest against the one after it."""
        if before_refresh:
            return m5 > self.jump
        return (m5 > (self.level if after_refresh else self.top)
                or (y - self.base) / self.spk > zmax)


def _sorted_mad(w: list[float], m: float) -> float:
    """``stats.median_mad(w)[1]`` of a sorted list ``w`` with median ``m`` (same float): the
    k-th smallest ``abs(x - m)`` is the least largest one of k consecutive values, found by
    bisection instead of sorting all of them."""

    def kth(c: int) -> float:
        lo, hi = 0, len(w) - c  # the first start whose right end is the farther one
        while lo < hi:
            mid = (lo + hi) // 2
            if w[mid + c - 1] - m >= m - w[mid]:
                hi = mid
            else:
                lo = mid + 1
        best = max(abs(w[lo] - m), abs(w[lo + c - 1] - m))
        if lo > 0:
            best = min(best, max(abs(w[lo - 1] - m), abs(w[lo + c - 2] - m)))
        return best

    h = len(w) // 2
    return MAD_TO_SIGMA * (kth(h + 1) if len(w) % 2 else (kth(h) + kth(h + 1)) / 2)


def _pylist(a: _Seq) -> list:  # type: ignore[type-arg]
    return a.tolist() if isinstance(a, np.ndarray) else a


def _median5(f: np.ndarray) -> np.ndarray:
    """The median of each 5 consecutive values (one of them, as a sort picks it): median of
    3 of the last and the middle two of the first four."""
    n = f.size - 4
    a, b, c, d, e = (f[i:i + n] for i in range(5))
    lo = np.maximum(np.minimum(a, b), np.minimum(c, d))
    hi = np.minimum(np.maximum(a, b), np.maximum(c, d))
    return np.maximum(np.minimum(lo, hi), np.minimum(np.maximum(lo, hi), e))


def _row_median(a: np.ndarray) -> np.ndarray:
    """``np.median(a, axis=1)`` of finite rows, bit for bit: the middle element, or
    ``(a + b) / 2`` of the middle two."""
    h = a.shape[1] // 2
    s = np.sort(a, axis=1)  # cheaper than a partition at two indices for rows this short
    return s[:, h] if a.shape[1] % 2 else (s[:, h - 1] + s[:, h]) / 2


def _margin(t: float) -> float:
    """``t`` less a relative 1e-9: a value above it may be above ``t`` (a conservative gate)."""
    return t - 1e-9 * (1.0 + abs(t))


def _margins(t: np.ndarray) -> np.ndarray:
    """:func:`_margin` of each value."""
    return t - 1e-9 * (1.0 + np.abs(t))
