"""Lightning and Hugging Face integrations against a real daemon (skipped where not installed)."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from tests.conftest import Daemon

torch = pytest.importorskip("torch")


@pytest.fixture
def daemon_url(tmp_path):
    d = Daemon(f"sqlite:///{tmp_path / 'i.db'}").start()
    yield d.url
    d.stop()


def prepare_run(url: str, name: str, action: str, params: dict) -> str:
    """Create the run up front and queue a hand-made recommendation for the first batch."""
    run_id = f"{name}-{uuid.uuid4().hex[:8]}"
    httpx.post(f"{url}/v1/runs", json={"name": name, "run_id": run_id}).raise_for_status()
    httpx.post(f"{url}/v1/runs/{run_id}/recommendations",
               json={"action": action, "params": params, "author": "test"}).raise_for_status()
    return run_id


def wait_for(url: str, run_id: str, predicate, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        recs = httpx.get(f"{url}/v1/runs/{run_id}/recommendations").json()["recommendations"]
        run = httpx.get(f"{url}/v1/runs/{run_id}").json()
        state = {"recs": recs, "run": run}
        if predicate(state) or time.monotonic() > deadline:
            return state
        time.sleep(0.1)


def test_lightning_callback_streams_and_applies(daemon_url, tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from rhythmd_client.integrations.lightning import RhythmdCallback

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(4, 1)

        def training_step(self, batch, _):
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x), y)

        def validation_step(self, batch, _):
            x, y = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 1000)}

    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=g)
    data = torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True))
    loader = torch.utils.data.DataLoader(data, batch_size=16)
    run_id = prepare_run(daemon_url, "lit", "reduce_lr", {"factor": 0.5})
    cb = RhythmdCallback(daemon_url, run_name="lit", run_id=run_id, interval_s=0.05)
    model = Tiny()
    trainer = pl.Trainer(max_steps=80, val_check_interval=16, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu",
                         default_root_dir=str(tmp_path), callbacks=[cb])
    trainer.fit(model, loader, loader)
    state = wait_for(daemon_url, run_id, lambda s: s["run"]["status"] == "finished"
                     and s["recs"][0]["status"] != "pending")
    rec = state["recs"][0]
    assert rec["status"] == "applied" and rec["lr_after"] == [pytest.approx(0.05)]
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.05)
    metrics = {m["name"]: m["points"] for m in
               httpx.get(f"{daemon_url}/v1/runs/{run_id}/metrics").json()["metrics"]}
    assert metrics["loss"] == 80 and metrics["lr"] == 80 and metrics["val_loss"] >= 4


def test_lightning_stop(daemon_url, tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from rhythmd_client.integrations.lightning import RhythmdCallback

    class Slow(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(4, 4)

        def training_step(self, batch, _):
            time.sleep(0.005)  # a realistic step time, so the advice arrives mid-run
            (x,) = batch
            return torch.nn.functional.mse_loss(self.net(x), x)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4096, 4)),
                                         batch_size=8)
    run_id = prepare_run(daemon_url, "lit-stop", "stop", {})
    cb = RhythmdCallback(daemon_url, run_id=run_id, interval_s=0.02)
    trainer = pl.Trainer(max_steps=400, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu", default_root_dir=str(tmp_path), callbacks=[cb])
    trainer.fit(Slow(), loader)
    assert trainer.global_step < 400  # the remote stop ended the fit early
    state = wait_for(daemon_url, run_id, lambda s: s["run"]["status"] != "running")
    assert state["recs"][0]["status"] == "applied"
    assert state["run"]["status"] == "stopped"


def test_huggingface_callback_streams_and_applies(daemon_url, tmp_path):
    transformers = pytest.importorskip("transformers")
    from rhythmd_client.integrations.huggingface import RhythmdTrainerCallback

    class Regressor(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(4, 1)

        def forward(self, x, labels=None):
            pred = self.net(x)
            return {"loss": torch.nn.functional.mse_loss(pred, labels), "logits": pred}

    class Data(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.x = torch.randn(256, 4, generator=torch.Generator().manual_seed(1))

        def __len__(self) -> int:
            return len(self.x)

        def __getitem__(self, i):
            return {"x": self.x[i], "labels": self.x[i].sum(0, keepdim=True)}

    run_id = prepare_run(daemon_url, "hf", "reduce_lr", {"factor": 0.5})
    cb = RhythmdTrainerCallback(daemon_url, run_id=run_id, interval_s=0.05)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=40, logging_steps=1, eval_strategy="steps",
        eval_steps=10, per_device_train_batch_size=16, learning_rate=0.05,
        lr_scheduler_type="constant", report_to=[], save_strategy="no", use_cpu=True,
        disable_tqdm=True)
    trainer = transformers.Trainer(model=Regressor(), args=args, train_dataset=Data(),
                                   eval_dataset=Data(), callbacks=[cb])
    trainer.train()
    state = wait_for(daemon_url, run_id, lambda s: s["recs"][0]["status"] != "pending")
    rec = state["recs"][0]
    assert rec["status"] == "applied"
    assert rec["lr_after"][0] == pytest.approx(rec["lr_before"][0] * 0.5)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.025)
    metrics = {m["name"]: m["points"] for m in
               httpx.get(f"{daemon_url}/v1/runs/{run_id}/metrics").json()["metrics"]}
    assert metrics["loss"] == 40 and metrics["val_loss"] == 4
