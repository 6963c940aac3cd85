"""The divergence detector's bulk path: many train losses at once while nothing can fire."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .. import stats
from ..stats import MAD_TO_SIGMA

if TYPE_CHECKING:
    from .divergence import DivergenceDetector


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
        if self.active and self.critical and xs.size and not math.isfinite(float(xs[0])):
            return self._ff_nonfinite(xs)
        cfg = self.cfg
        nb = cfg.div_baseline_steps
        if (not self.watch_level or self.active or self.spike_open or self.pending is not None
                or self.scale is None or len(self.init) < 10 or len(self.init_x) < 10
                or not math.isfinite(self.sig0_cache) or not math.isfinite(self.base_med)
                or not math.isfinite(self.base_sig) or not math.isfinite(self.base_sig_raw)
                or len(self.ys) < nb + 5 or xs.size == 0):
            return 0
        if xs.size <= 128:  # small batches: scalar loop, no numpy call overhead
            return self._ff_scalar(steps.tolist(), xs.tolist())
        ok = np.isfinite(xs) if self.signed else np.isfinite(xs) & (xs > 0)
        n = int(xs.size) if ok.all() else int(np.argmin(ok))
        if n == 0:
            return 0
        xs = xs[:n]
        if self.signed:
            z = np.clip((xs - self.m0) / self.s0, -stats._BIG, stats._BIG)
            ynew = list(map(math.asinh, z.tolist()))  # math.asinh: bit-identical to _y()
        else:
            z = np.clip(xs / self.scale, -stats._BIG, stats._BIG)
            ynew = list(map(math.asinh, z.tolist()))
        hist = self.ys[-(nb + 4) :]
        o = len(hist)
        f = np.asarray(hist + ynew)
        yv = f[o:]
        m5 = np.sort(sliding_window_view(f[o - 4 :], 5), axis=1)[:, 2]
        # baseline refreshes at count % 8 == 0 over ys[-(nb + 5):-5] (same numpy median)
        cnt = self.count + 1 + np.arange(n)
        ref = np.flatnonzero(cnt % 8 == 0)
        bm = np.empty(ref.size + 1)
        braw = np.empty(ref.size + 1)
        bm[0], braw[0] = self.base_med, self.base_sig_raw
        if ref.size:
            win = sliding_window_view(f, nb)[o + ref - (nb + 4)]
            med = np.median(win, axis=1)
            bm[1:] = med
            braw[1:] = MAD_TO_SIGMA * np.median(np.abs(win - med[:, None]), axis=1)
        fl = np.asarray([self._floor(float(b)) for b in bm])  # floor at each baseline level
        bsig = np.maximum(braw, fl)
        bsig[0] = self.base_sig
        sig_b = bsig
        spk_b = np.maximum(braw, 0.2 * fl)
        jj = np.arange(n)
        old = np.searchsorted(ref, jj, side="left")  # baseline in force before point j
        cur = np.searchsorted(ref, jj, side="right")  # after a refresh at j
        bar = self.y0 + cfg.div_z * self.sig0_cache

        def above(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # a > b, conservatively
            return a > b - 1e-9 * (1.0 + np.abs(b))

        bestc = np.minimum.accumulate(np.r_[self.best_m5, m5])[1:]
        learned, back = self._back_bar()
        flag = above(m5, bm[old] + 3 * sig_b[old])
        flag |= above(m5, np.full(n, bar))
        flag |= above(m5, np.full(n, back)) & (bestc < learned + 1e-9 * (1.0 + abs(learned)))
        flag |= above(m5, bm[cur] + cfg.div_z_recent * sig_b[cur])
        flag |= above((yv - bm[cur]) / spk_b[cur], np.full(n, cfg.spike_z))
        hit = np.flatnonzero(flag)
        k = int(hit[0]) if hit.size else n
        if k == 0:
            return 0
        cap = nb + cfg.div_trend_steps + 8
        ys_all = self.ys + ynew[:k]
        ss_all = self.ss + steps[:k].tolist()
        xs_all = self.xs + xs[:k].tolist()
        ln = len(self.ys)
        if ln + k > 2 * cap:  # same trimming as per-point appends
            ln = cap + (k - (2 * cap + 1 - ln)) % (cap + 1)
        else:
            ln += k
        self.ys, self.ss, self.xs = ys_all[-ln:], ss_all[-ln:], xs_all[-ln:]
        self.count += k
        self.elev_start = None
        self.best_m5 = float(bestc[k - 1])
        c = int(cur[k - 1])
        if c > 0:
            self.base_med = float(bm[c])
            self.base_sig_raw = float(braw[c])
            self.base_sig = float(bsig[c])
        return k

    def _ff_nonfinite(self: DivergenceDetector, xs: np.ndarray) -> int:
        """A run of non-finite losses while a critical divergence is open (a run that blew
        up and keeps sending NaN): each is only counted, as ``update`` does."""
        fin = np.isfinite(xs)
        j = int(np.argmax(fin)) if fin.any() else int(xs.size)
        self.n_nonfinite += j
        self.ok_run = 0
        return j

    def _ff_scalar(self: DivergenceDetector, sl: list[int], xl: list[float]) -> int:
        """``fast_forward`` for a few points (same gate, same floats, pure Python)."""
        cfg = self.cfg
        nb = cfg.div_baseline_steps
        cap = nb + cfg.div_trend_steps + 8
        bar = self.y0 + cfg.div_z * self.sig0_cache
        learned, back = self._back_bar()
        signed = self.signed
        for j, (st, x) in enumerate(zip(sl, xl, strict=True)):
            if not math.isfinite(x) or (x <= 0 and not signed):
                return j
            y = self._y(x)
            ys = self.ys
            m5 = sorted([*ys[-4:], y])[2]
            best = m5 if m5 < self.best_m5 else self.best_m5
            if best < learned + 1e-9 * (1.0 + abs(learned)) \
                    and m5 > back - 1e-9 * (1.0 + abs(back)):
                return j
            b = self.base_sig
            sig = b
            base = self.base_med
            t = base + 3 * sig
            if m5 > t - 1e-9 * (1.0 + abs(t)):
                return j
            cnt = self.count + 1
            raw = self.base_sig_raw
            refresh = cnt % 8 == 0
            if refresh:  # ys[-(nb + 5):-5] once y is appended
                base, raw = stats.median_mad(ys[-(nb + 4) : -4])
                fl = self._floor(base)
                b = raw if raw >= fl else fl
                sig = b
            fs = 0.2 * self._floor(base)
            spk = raw if raw > fs else fs
            t = base + cfg.div_z_recent * sig
            zy = (y - base) / spk
            if (m5 > bar - 1e-9 * (1.0 + abs(bar)) or m5 > t - 1e-9 * (1.0 + abs(t))
                    or zy > cfg.spike_z - 1e-9 * (1.0 + cfg.spike_z)):
                return j
            ys.append(y)
            self.ss.append(st)
            self.xs.append(x)
            if len(ys) > 2 * cap:
                self.ys, self.ss, self.xs = ys[-cap:], self.ss[-cap:], self.xs[-cap:]
            self.count = cnt
            self.elev_start = None
            self.best_m5 = best
            if refresh:
                self.base_med, self.base_sig_raw, self.base_sig = base, raw, b
        return len(xl)
