"""Real training tasks for the rescue benchmark, the validation corpus and the examples (CPU).

Tasks of the ``dev`` curve corpus (``../shared/corpus/dev/README.md`` next to the checkout):

- ``digits_mlp``: MLP 64-128-128-10 (ReLU), cross-entropy, on ``load_digits`` (1437/360
  stratified split, seed 0, inputs standardized with train statistics); 800 steps, batch 64,
  an evaluation every 20 steps.
- ``diabetes_mlp``: MLP 10-64-64-1 (ReLU), MSE on the standardized target, on
  ``load_diabetes`` (353/89 split, seed 0, inputs and target standardized); 600 steps,
  batch 32, an evaluation every 10 steps.

Task families the dev corpus lacks (``bench/data/validation``, ``bench/make_validation.py``):

- ``cancer_mlp``: MLP 30-64-64-2, cross-entropy, on ``load_breast_cancer`` with a 40-sample
  validation set (529/40 stratified, seed 0); 400 steps, batch 16, an evaluation every 10
  steps.
- ``synth_badbatch``: the data of ``synth_acc`` (below) with its validation loss; 500 steps,
  batch 32, an evaluation every 10 steps; three injected bad minibatches at 30 %, 50 % and
  70 % of the steps (labels shuffled, inputs x100, labels shuffled).
- ``gnll_reg``: heteroscedastic synthetic regression (4 inputs, y = sin(2 x0) + x1 x2 / 2 +
  noise of std 0.05 + 0.3 |x3|, 1000/250, target standardized), MLP 4-64-64-2 predicting mean
  and log-variance, ``GaussianNLLLoss`` (goes negative); 600 steps, batch 32, evaluation every
  10 steps.
- ``char_lm``: character-level transformer LM (2 pre-norm layers, d 64, 4 heads, FF 128,
  context 32, no dropout) on the text of the GNU GPL v3 (``/usr/share/common-licenses/GPL-3``,
  sha256 checked; first 90 % train, last 10 % validation); 300 steps, batch 16, an evaluation
  every 10 steps.
- ``synth_acc``: 5-class ``make_classification`` (20 features, 8 informative, class_sep 0.8,
  flip_y 0.05, 1200/300 stratified), MLP 20-64-64-5; 500 steps, batch 32, evaluation every 10
  steps; the corpus keeps only ``val_acc`` (no validation loss).

Optimizers: ``sgd`` (momentum 0.9), ``adam`` (defaults), ``adamw`` (weight decay 0.05).
Schedules are a multiplier ``f(t)`` of the base LR at optimizer step ``t`` (0-based) of an
``N``-step run, realised as a ``LambdaLR``: ``constant``; ``multistep`` (x0.1 from 50 % and
again from 75 % of the steps); ``cosine`` (from 1 to 0.01 over the run); ``warmup_cosine``
(linear warmup from 1/W to 1 over the first W = 10 % of the steps, then cosine to 0.01).

``train`` runs one configuration in one of three modes:

- ``configured``: as configured;
- ``plateau``: plus torch's ``ReduceLROnPlateau`` with its defaults, stepped on the
  validation loss at each evaluation. It owns a multiplier of the schedule (a one-parameter
  shadow optimizer whose LR starts at 1.0), so the configured schedule and the plateau cuts
  compose as ``lr(t) = base_lr * f(t) * plateau_multiplier``;
- ``rhythmd``: with a ``RhythmHook`` in ``apply`` mode (model given: rollback snapshots)
  against a running daemon.

Non-finite train loss: ``configured``/``plateau`` record 5 more steps, evaluate and stop, as
the corpus does. Under ``rhythmd`` the loop keeps going for up to ``nonfinite_grace`` steps so
that the daemon's rollback can arrive (it ends earlier when the daemon says ``stop``).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

TASKS: dict[str, dict[str, Any]] = {
    "digits_mlp": {"steps": 800, "eval_every": 20, "batch_size": 64},
    "diabetes_mlp": {"steps": 600, "eval_every": 10, "batch_size": 32},
    "cancer_mlp": {"steps": 400, "eval_every": 10, "batch_size": 16},
    "synth_badbatch": {"steps": 500, "eval_every": 10, "batch_size": 32,
                       "bad_batches": ((0.3, "shuffle"), (0.5, "scale"), (0.7, "shuffle"))},
    "gnll_reg": {"steps": 600, "eval_every": 10, "batch_size": 32},
    "char_lm": {"steps": 300, "eval_every": 10, "batch_size": 16},
    "synth_acc": {"steps": 500, "eval_every": 10, "batch_size": 32},
}
# per task, for ``rescue.py --quick``: a good configuration (optimizer, lr, schedule) and
# failing ones (LR far too large, far too small, a too-large LR that warmup hides for a while)
QUICK: dict[str, dict[str, Any]] = {
    t: {"good": ("adam", 1e-3, "constant"),
        "failing": (("sgd", 3.0, "constant"), ("adam", 0.1, "constant"),
                    ("sgd", 1e-4, "constant"), ("adamw", 0.5, "warmup_cosine"))}
    for t in ("digits_mlp", "diabetes_mlp", "cancer_mlp", "synth_badbatch", "char_lm")
}
CLASSIFIERS = ("digits_mlp", "cancer_mlp", "synth_badbatch", "synth_acc")
GPL3 = Path("/usr/share/common-licenses/GPL-3")
GPL3_SHA256 = "3972dc9744f6499f0f9b2dbf76696f2ae7ad8af9b23dde66d6af86c9dfb36986"
LM_CONTEXT = 32
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "multistep", "cosine", "warmup_cosine")
LR_GRID: dict[str, tuple[float, ...]] = {
    "sgd": (1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0),
    "adam": (1e-5, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.5),
    "adamw": (1e-5, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.5),
}
MODES = ("configured", "plateau", "rhythmd")
LR_ACTIONS = ("reduce_lr", "warmup", "set_schedule", "increase_lr", "rollback")
CHANGES = ("reduce_lr", "warmup", "set_schedule", "increase_lr")  # guarded, revertible


@dataclass
class RunConfig:
    """One training configuration. ``steps``/``eval_every``/``batch_size`` default per task."""

    task: str
    optimizer: str
    lr: float
    schedule: str
    seed: int = 0
    steps: int = 0
    eval_every: int = 0
    batch_size: int = 0

    def __post_init__(self) -> None:
        spec = TASKS[self.task]
        self.steps = self.steps or int(spec["steps"])
        self.eval_every = self.eval_every or int(spec["eval_every"])
        self.batch_size = self.batch_size or int(spec["batch_size"])

    @property
    def name(self) -> str:
        return f"{self.task}__{self.optimizer}__lr{self.lr:g}__{self.schedule}__s{self.seed}"


@dataclass
class RunResult:
    """What one run produced. Validation losses are those of the final branch (after a
    rollback the abandoned branch's evaluations are dropped)."""

    name: str
    mode: str
    config: dict[str, Any]
    final: float  # mean of the last 3 validation losses (non-finite if any is)
    best: float  # lowest finite validation loss (NaN if none)
    val_steps: list[int] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    final_acc: float | None = None
    steps_run: int = 0  # optimizer steps executed, repeated steps after rollbacks included
    last_step: int = -1
    nonfinite: bool = False
    stopped_early: str | None = None  # "nonfinite" | "daemon_stop" | None
    lr_changes: int = 0  # LR changes made by rhythmd (applied) or by the plateau scheduler
    rollbacks: int = 0
    changes_tried: int = 0  # applied LR changes (CHANGES) or plateau cuts
    changes_reverted: int = 0  # of those, reverted by an applied ``revert``
    reverts: int = 0  # applied ``revert`` actions
    reflexes: int = 0  # local reflex actions of the hook (restore + cut + re-warm)
    rerun_steps: int = 0  # steps executed beyond the final branch (re-run after restores)
    applied: list[dict[str, Any]] = field(default_factory=list)
    recommendations: list[dict[str, Any]] = field(default_factory=list)
    diagnoses: list[dict[str, Any]] = field(default_factory=list)
    hook_stats: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------- data and model
@lru_cache(maxsize=8)
def load_task(task: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_val, y_val) as tensors, standardized with train statistics.

    For ``char_lm`` x and y are (sequences, context) character ids, y shifted by one."""
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    if task == "char_lm":
        return _lm_data()
    if task == "digits_mlp":
        x, y = datasets.load_digits(return_X_y=True)
        xtr, xva, ytr, yva = train_test_split(x, y, test_size=360, stratify=y, random_state=0)
    elif task == "cancer_mlp":
        x, y = datasets.load_breast_cancer(return_X_y=True)
        xtr, xva, ytr, yva = train_test_split(x, y, test_size=40, stratify=y, random_state=0)
    elif task in ("synth_acc", "synth_badbatch"):
        x, y = datasets.make_classification(
            n_samples=1500, n_features=20, n_informative=8, n_classes=5, class_sep=0.8,
            flip_y=0.05, random_state=0)
        xtr, xva, ytr, yva = train_test_split(x, y, test_size=300, stratify=y, random_state=0)
    elif task in ("diabetes_mlp", "gnll_reg"):
        if task == "diabetes_mlp":
            x, y = datasets.load_diabetes(return_X_y=True)
            n_val = 89
        else:
            rng = np.random.default_rng(0)
            x = rng.uniform(-2.0, 2.0, size=(1250, 4))
            sd_noise = 0.05 + 0.3 * np.abs(x[:, 3])
            y = np.sin(2 * x[:, 0]) + 0.5 * x[:, 1] * x[:, 2] + sd_noise * rng.normal(size=1250)
            n_val = 250
        xtr, xva, ytr, yva = train_test_split(x, y, test_size=n_val, random_state=0)
        mu_y, sd_y = ytr.mean(), ytr.std()
        ytr, yva = (ytr - mu_y) / sd_y, (yva - mu_y) / sd_y
    else:
        raise ValueError(f"unknown task {task!r}")
    mu, sd = xtr.mean(axis=0), xtr.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    xtr, xva = (xtr - mu) / sd, (xva - mu) / sd
    ydt = torch.long if task in CLASSIFIERS else torch.float32
    return (torch.tensor(xtr, dtype=torch.float32), torch.tensor(ytr, dtype=ydt),
            torch.tensor(xva, dtype=torch.float32), torch.tensor(yva, dtype=ydt))


def lm_text() -> str:
    """The GNU GPL v3 text (checked by sha256, so every machine trains on the same text)."""
    raw = GPL3.read_bytes()
    if hashlib.sha256(raw).hexdigest() != GPL3_SHA256:
        raise RuntimeError(f"{GPL3} is not the expected GPL v3 text")
    return raw.decode("utf-8")


def _lm_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    text = lm_text()
    vocab = sorted(set(text))
    ids = torch.tensor([vocab.index(c) for c in text], dtype=torch.long)
    cut = int(0.9 * ids.numel())
    tr, va = ids[:cut], ids[cut:]
    k = LM_CONTEXT + 1
    seq_tr = tr.unfold(0, k, 8)  # every 8th window of the train text
    seq_va = va.unfold(0, k, LM_CONTEXT)  # disjoint windows of the validation text
    return seq_tr[:, :-1], seq_tr[:, 1:], seq_va[:, :-1], seq_va[:, 1:]


def lm_vocab_size() -> int:
    return len(set(lm_text()))


class CharTransformer(nn.Module):
    """Causal character transformer: token + learned position embeddings, pre-norm layers."""

    def __init__(self, vocab: int, d: int = 64, layers: int = 2, heads: int = 4,
                 context: int = LM_CONTEXT) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(context, d))
        layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=2 * d, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.body = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(context),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        h = self.tok(x) + self.pos[:n]
        h = self.body(h, mask=self.mask[:n, :n], is_causal=True)
        return self.head(self.norm(h))


def _mlp(*widths: int) -> nn.Module:
    mods: list[nn.Module] = []
    for i in range(len(widths) - 1):
        mods.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


MLP_WIDTHS: dict[str, tuple[int, ...]] = {
    "digits_mlp": (64, 128, 128, 10), "diabetes_mlp": (10, 64, 64, 1),
    "cancer_mlp": (30, 64, 64, 2), "synth_badbatch": (20, 64, 64, 5),
    "gnll_reg": (4, 64, 64, 2), "synth_acc": (20, 64, 64, 5),
}


def build_model(task: str) -> nn.Module:
    if task == "char_lm":
        return CharTransformer(lm_vocab_size())
    if task not in MLP_WIDTHS:
        raise ValueError(f"unknown task {task!r}")
    return _mlp(*MLP_WIDTHS[task])


def loss_fn(task: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if task in CLASSIFIERS:
        return nn.functional.cross_entropy(out, y)
    if task == "char_lm":
        return nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
    if task == "gnll_reg":
        return nn.functional.gaussian_nll_loss(out[:, 0], y, out[:, 1].exp())
    return nn.functional.mse_loss(out.squeeze(-1), y)


def trivial_loss(task: str) -> float:
    """T: the train loss of the best constant predictor (ignoring the input)."""
    _, ytr, _, _ = load_task(task)
    if task in CLASSIFIERS or task == "char_lm":
        counts = torch.bincount(ytr.reshape(-1)).double()
        p = counts[counts > 0] / counts.sum()
        return float(-(p * p.log()).sum())
    var = float(ytr.double().var(unbiased=False))
    if task == "gnll_reg":  # torch's GaussianNLLLoss without its constant: (log var + 1) / 2
        return 0.5 * (math.log(var) + 1.0)
    return var


def bad_batch(task: str, x: torch.Tensor, y: torch.Tensor, kind: str, seed: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """A corrupted minibatch: ``shuffle`` permutes the labels, ``scale`` multiplies x by 100."""
    if kind == "scale":
        return x * 100.0, y
    g = torch.Generator().manual_seed(seed)
    return x, y[torch.randperm(y.shape[0], generator=g)]


def bad_steps(task: str, steps: int) -> dict[int, str]:
    """0-based optimizer steps that get a bad minibatch, and its kind."""
    return {int(f * steps): k for f, k in TASKS[task].get("bad_batches", ())}


def build_optimizer(name: str, params: Any, lr: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    raise ValueError(f"unknown optimizer {name!r}")


def schedule_factor(kind: str, t: int, n: int) -> float:
    """The configured multiplier of the base LR at optimizer step ``t`` (0-based) of ``n``."""
    lo = 0.01
    if kind == "constant":
        return 1.0
    if kind == "multistep":
        return 0.1 ** ((t >= n // 2) + (t >= (3 * n) // 4))
    if kind == "cosine":
        return lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * min(t, n) / n))
    if kind == "warmup_cosine":
        w = max(1, n // 10)
        if t < w:
            return (t + 1) / w
        return lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * min(t - w, n - w) / (n - w)))
    raise ValueError(f"unknown schedule {kind!r}")


class _Batches:
    """Shuffled minibatches without replacement (a new permutation each epoch)."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.bs = n, min(batch_size, n)
        self.gen = torch.Generator().manual_seed(seed)
        self.perm = torch.randperm(n, generator=self.gen)
        self.pos = 0

    def next(self) -> torch.Tensor:
        if self.pos + self.bs > self.n:
            self.perm = torch.randperm(self.n, generator=self.gen)
            self.pos = 0
        idx = self.perm[self.pos:self.pos + self.bs]
        self.pos += self.bs
        return idx


@torch.no_grad()
def evaluate(task: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor
             ) -> tuple[float, float | None]:
    """(validation loss, accuracy or None)."""
    out = model(x)
    loss = float(loss_fn(task, out, y))
    acc = float((out.argmax(-1) == y).float().mean()) if task in CLASSIFIERS else None
    return loss, acc


# ---------------------------------------------------------------------------- training
def train(cfg: RunConfig, mode: str = "configured", url: str | None = None, *,
          min_step_s: float = 0.005, snapshot_every: int = 20, nonfinite_grace: int = 200,
          project: str = "rescue-bench", run_name: str | None = None,
          fetch_daemon_view: bool = True, verbose: bool = False) -> RunResult:
    """Train one configuration in ``mode`` (see module docstring) and report the outcome.

    ``min_step_s``: minimum wall time of one training step (the remainder is slept), so that
    the daemon's advice can arrive while the run is alive, as it would in a real job.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    if mode == "rhythmd" and not url:
        raise ValueError("mode 'rhythmd' needs the daemon's url")
    t_start = time.perf_counter()
    xtr, ytr, xva, yva = load_task(cfg.task)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.task)
    opt = build_optimizer(cfg.optimizer, model.parameters(), cfg.lr)
    n = cfg.steps
    shadow: torch.optim.Optimizer | None = None
    plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
    if mode == "plateau":
        shadow = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(shadow)  # torch defaults
        sh = shadow

        def factor(t: int) -> float:
            return schedule_factor(cfg.schedule, t, n) * float(sh.param_groups[0]["lr"])
    else:
        def factor(t: int) -> float:
            return schedule_factor(cfg.schedule, t, n)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)

    hook: Any = None
    if mode == "rhythmd":
        from rhythmd_client import RhythmHook

        hook = RhythmHook(url or "", run_name=run_name or cfg.name, project=project,
                          optimizer=opt, scheduler=sched, model=model, mode="apply",
                          config={"total_steps": n,
                                  "task": cfg.task, "optimizer": cfg.optimizer, "lr": cfg.lr,
                                  "schedule": cfg.schedule, "batch_size": cfg.batch_size},
                          snapshot_every=snapshot_every)
    batches = _Batches(len(xtr), cfg.batch_size, cfg.seed)
    bad = bad_steps(cfg.task, n)
    evals: dict[int, tuple[float, float | None]] = {}
    res = RunResult(name=cfg.name, mode=mode, config=asdict(cfg), final=math.nan,
                    best=math.nan)
    plateau_cuts = 0
    bad_since: int | None = None
    steps_iter = hook.steps(n) if hook is not None else iter(range(n))
    step = -1
    for step in steps_iter:
        t0 = time.perf_counter()
        model.train()
        idx = batches.next()
        xb, yb = xtr[idx], ytr[idx]
        if step in bad:
            xb, yb = bad_batch(cfg.task, xb, yb, bad[step], cfg.seed * 100_003 + step)
        out = model(xb)
        loss = loss_fn(cfg.task, out, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        lv = float(loss.detach())
        res.steps_run += 1
        if hook is not None:
            hook.step(step, loss=lv)
            restored = hook.rolled_back_to  # a rollback, a revert or the local reflex
            if restored is not None:
                evals = {s: v for s, v in evals.items() if s <= restored}
                bad_since = None
                _sleep_rest(t0, min_step_s)
                continue  # hook.steps() resumes at the restored step + 1
        if not math.isfinite(lv):
            bad_since = step if bad_since is None else bad_since
        elif mode == "rhythmd":
            bad_since = None
        grace = nonfinite_grace if mode == "rhythmd" else 5
        give_up = bad_since is not None and step - bad_since >= grace
        if (step + 1) % cfg.eval_every == 0 or give_up or step == n - 1:
            model.eval()
            v, acc = evaluate(cfg.task, model, xva, yva)
            evals[step] = (v, acc)
            if hook is not None:
                hook.log(step, val_loss=v, **({"val_acc": acc} if acc is not None else {}))
            if plateau is not None and shadow is not None:
                before = float(shadow.param_groups[0]["lr"])
                plateau.step(v)
                if float(shadow.param_groups[0]["lr"]) < before:
                    plateau_cuts += 1
            if verbose:
                print(f"step {step + 1:4d}  val_loss {v:.4f}  lr {opt.param_groups[0]['lr']:.3g}"
                      + (f"  acc {acc:.3f}" if acc is not None else ""), flush=True)
        if give_up:
            res.stopped_early = "nonfinite"
            break
        _sleep_rest(t0, min_step_s)
    res.last_step = step
    if hook is not None:
        if hook.should_stop and step < n - 1 and res.stopped_early is None:
            res.stopped_early = "daemon_stop"
            if step not in evals:
                model.eval()
                evals[step] = evaluate(cfg.task, model, xva, yva)
        res.hook_stats = dict(hook.close())
        res.applied = [{k: a.get(k) for k in ("id", "action", "step", "lr_before", "lr_after")}
                       for a in hook.applied]
        res.lr_changes = sum(a["action"] in LR_ACTIONS for a in hook.applied)
        res.rollbacks = sum(a["action"] == "rollback" for a in hook.applied)
        res.reflexes = len(getattr(hook, "reflexes", ()))
        if fetch_daemon_view and hook.run_id:
            res.recommendations, res.diagnoses = _daemon_view(url or "", hook.run_id)
        res.changes_tried, res.reverts, res.changes_reverted = change_counts(
            res.applied, res.recommendations)
    else:
        res.lr_changes = res.changes_tried = plateau_cuts
    res.rerun_steps = max(0, res.steps_run - (res.last_step + 1))
    steps_sorted = sorted(evals)
    res.val_steps = steps_sorted
    res.val_losses = [evals[s][0] for s in steps_sorted]
    last = res.val_losses[-3:]
    res.final = float(np.mean(last)) if last and all(math.isfinite(v) for v in last) \
        else math.nan
    fin = [v for v in res.val_losses if math.isfinite(v)]
    res.best = min(fin) if fin else math.nan
    res.nonfinite = not math.isfinite(res.final)
    if steps_sorted:
        res.final_acc = evals[steps_sorted[-1]][1]
    res.wall_s = round(time.perf_counter() - t_start, 3)
    return res


def change_counts(applied: list[dict[str, Any]], recs: list[dict[str, Any]]
                  ) -> tuple[int, int, int]:
    """(changes tried, reverts, changes reverted) from the hook's applied acks.

    A change is an applied action in ``CHANGES``; a revert names the change it undoes in its
    ``change_id`` parameter (read from the daemon's recommendations). Without that view each
    applied revert counts as one reverted change."""
    tried = {str(a["id"]) for a in applied if a["action"] in CHANGES}
    reverts = [a for a in applied if a["action"] == "revert"]
    params = {str(r.get("id")): r.get("params") or {} for r in recs}
    undone: set[str] = set()
    unknown = 0
    for a in reverts:
        cid = params.get(str(a["id"]), {}).get("change_id")
        if cid is None:
            unknown += 1
        elif str(cid) in tried:
            undone.add(str(cid))
    return len(tried), len(reverts), min(len(tried), len(undone) + unknown)


def _sleep_rest(t0: float, min_step_s: float) -> None:
    rest = min_step_s - (time.perf_counter() - t0)
    if rest > 0:
        time.sleep(rest)


def _daemon_view(url: str, run_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The daemon's recommendations and diagnoses of a run (compact), for the report."""
    import httpx

    recs: list[dict[str, Any]] = []
    diags: list[dict[str, Any]] = []
    try:
        with httpx.Client(base_url=url, timeout=10.0) as c:
            r = c.get(f"/v1/runs/{run_id}/recommendations")
            if r.status_code == 200:
                body = r.json()
                items = body if isinstance(body, list) else body.get("recommendations", [])
                for x in items:
                    recs.append({k: x.get(k) for k in ("id", "action", "params", "status",
                                                       "issued_at_step", "applied_step")})
            r = c.get(f"/v1/runs/{run_id}/diagnoses")
            if r.status_code == 200:
                body = r.json()
                items = body if isinstance(body, list) else body.get("diagnoses", [])
                for x in items:
                    ev = x.get("evidence") or {}
                    diags.append({"kind": x.get("kind"), "status": x.get("status"),
                                  "onset_step": x.get("onset_step"),
                                  "detected_at_step": x.get("detected_at_step"),
                                  "severity": x.get("severity"), "test": ev.get("test"),
                                  "cause": ev.get("cause")})
    except httpx.HTTPError:
        pass
    return recs, diags
