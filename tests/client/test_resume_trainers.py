"""A resumed Lightning / 🤗 Trainer fit continues the rhythmd run: same run id, the stream on
a new branch after the checkpoint's step, and a warmup ramp pending at the checkpoint goes on
exactly as in the uninterrupted fit (stdlib fake daemon)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_daemon import FakeDaemon

torch = pytest.importorskip("torch")

RAMP = ("warmup", {"warmup_steps": 100, "start_factor": 0.1})
STEPS, CKPT = 30, 15


@pytest.fixture
def fake() -> Iterator[FakeDaemon]:
    d = FakeDaemon().start()
    d.state.seed_recs = [RAMP]  # every new run gets a long warmup at its first batch
    yield d
    d.stop()


def settle(step: int) -> None:
    """The first steps wait for the daemon's answer, so the ramp starts before the checkpoint."""
    if step <= 3:
        time.sleep(0.2)


def data() -> Any:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=g)
    return torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True))


# ---------------------------------------------------------------------------- Lightning

def lightning_fit(tmp: Path, fake: FakeDaemon, ckpt: str | None) -> tuple[Any, dict[int, float]]:
    pl = pytest.importorskip("lightning.pytorch")
    from rhythmd_client.integrations.lightning import RhythmdCallback

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(4, 1)

        def training_step(self, batch: Any, _: int) -> Any:
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x), y)

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.05)

    lrs: dict[int, float] = {}

    class Lrs(pl.Callback):
        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            lrs[trainer.global_step] = trainer.optimizers[0].param_groups[0]["lr"]
            settle(trainer.global_step)

    torch.manual_seed(0)
    cb = RhythmdCallback(fake.url, run_name="pl-resume", interval_s=0.02, reflex=False,
                         flush_every=1)
    saver = pl.callbacks.ModelCheckpoint(dirpath=tmp, every_n_train_steps=CKPT, save_top_k=-1,
                                         filename="{step}")
    trainer = pl.Trainer(max_steps=STEPS, callbacks=[cb, Lrs(), saver], logger=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, accelerator="cpu")
    loader = torch.utils.data.DataLoader(data(), batch_size=8)
    trainer.fit(Tiny(), loader, ckpt_path=ckpt)
    return cb, lrs


def test_lightning_fit_resumes_the_run_and_its_pending_ramp(tmp_path: Path,
                                                            fake: FakeDaemon) -> None:
    first, lrs1 = lightning_fit(tmp_path / "a", fake, None)
    after = first.state_dict()["hook"]  # kept after the fit, for a later save_checkpoint
    assert after["run_id"] == first.run_id and after["step"] == STEPS
    fake.state.seed_recs = []
    second, lrs2 = lightning_fit(tmp_path / "b", fake, str(tmp_path / "a" / f"step={CKPT}.ckpt"))
    assert second.run_id == first.run_id and len(fake.state.runs) == 1
    assert lrs1[STEPS] < 0.05 * 0.5  # the ramp was still rising at the end
    for step in range(CKPT + 1, STEPS + 1):  # resumed: the same LR at every step
        assert lrs2[step] == pytest.approx(lrs1[step], rel=1e-9), step
    resumed = fake.state.points(first.run_id, "loss", branch=1)
    assert [s for s, _ in resumed] == list(range(CKPT + 1, STEPS + 1))
    assert fake.state.run(first.run_id)["branches"][1] == CKPT + 1


# ---------------------------------------------------------------------------- 🤗 Trainer

class Regressor(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(4, 1)

    def forward(self, x: Any, labels: Any = None) -> dict[str, Any]:
        out = self.net(x)
        return {"loss": torch.nn.functional.mse_loss(out, labels), "logits": out}


class Pairs(torch.utils.data.Dataset):
    def __init__(self) -> None:
        self.x, self.y = data().tensors

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"x": self.x[i], "labels": self.y[i]}


def hf_fit(out: Path, fake: FakeDaemon, resume: str | None) -> tuple[Any, dict[int, float]]:
    transformers = pytest.importorskip("transformers")
    from rhythmd_client.integrations.huggingface import RhythmdTrainerCallback

    lrs: dict[int, float] = {}

    class Lrs(transformers.TrainerCallback):  # the LR each step trains with (a resumed
        # Trainer rebuilds stateful callbacks and puts them last: read before any of them)
        def on_step_begin(self, args: Any, state: Any, control: Any, optimizer: Any = None,
                          **kw: Any) -> None:
            lrs[state.global_step + 1] = optimizer.param_groups[0]["lr"]

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            settle(state.global_step)

    torch.manual_seed(0)
    cb = RhythmdTrainerCallback(fake.url, run_name="hf-resume", interval_s=0.02, reflex=False,
                                flush_every=1)
    args = transformers.TrainingArguments(
        output_dir=str(out), max_steps=STEPS, per_device_train_batch_size=8, learning_rate=0.05,
        lr_scheduler_type="constant", optim="sgd", save_strategy="steps", save_steps=CKPT,
        report_to=[], use_cpu=True, disable_tqdm=True, logging_steps=100,
        restore_callback_states_from_checkpoint=True)
    trainer = transformers.Trainer(model=Regressor(), args=args, train_dataset=Pairs(),
                                   callbacks=[cb, Lrs()])
    trainer.train(resume_from_checkpoint=resume)
    live = next(c for c in trainer.callback_handler.callbacks
                if isinstance(c, RhythmdTrainerCallback))  # the Trainer may rebuild it
    return live, lrs


def test_hf_trainer_resumes_the_run_and_its_pending_ramp(tmp_path: Path,
                                                         fake: FakeDaemon) -> None:
    first, lrs1 = hf_fit(tmp_path, fake, None)
    after = first.state()["attributes"]["resume_state"]["hook"]  # kept after train()
    assert after["run_id"] == first.run_id and after["step"] == STEPS
    fake.state.seed_recs = []
    second, lrs2 = hf_fit(tmp_path, fake, str(tmp_path / f"checkpoint-{CKPT}"))
    assert second.run_id == first.run_id and len(fake.state.runs) == 1
    assert lrs1[STEPS] < 0.05 * 0.5
    assert min(lrs2) == CKPT + 1
    for step in range(CKPT + 1, STEPS + 1):
        assert lrs2[step] == pytest.approx(lrs1[step], rel=1e-9), step
    resumed = fake.state.points(first.run_id, "loss", branch=1)
    assert [s for s, _ in resumed] == list(range(CKPT + 1, STEPS + 1))
