"""The CUDA path: every method trains, resumes and answers on the GPU, under bf16 autocast.

Tests marked ``cuda`` skip, with the reason, where no CUDA GPU is visible (conftest's hook). On a
GPU: each method trains a few steps through the trainer on tiny Llama and GPT-2 models, the LM runs
in bf16 while every loss that is back-propagated and every log-prob is fp32, the memory monitor
reads the CUDA allocator, a stopped run resumes to the same weights, and generation and streaming
answer there. One process may run on the CPU and on the GPU in turn (the workbench does):
``make_accelerator`` is tested on the CPU here too.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from conftest import make_arch_base
from safetensors.torch import load_file

from gantune.config import preset_config
from gantune.data import Encoder, QAPair
from gantune.inference import answer_questions, load_method, stream_answer
from gantune.memory import MB, MemoryMonitor
from gantune.methods import get_method
from gantune.models import make_accelerator
from gantune.runs import RunFolder
from gantune.scoring import answer_logprobs, mle_loss
from gantune.trainer import train

METHODS = ["gan", "adapter-mle", "lora", "prompt-tuning", "prefix-tuning", "full"]
SMALL = dict(virtual_tokens=4, lora_r=4, lora_alpha=8, noise_dim=8, d_hidden=[16, 8, 4])
QUESTIONS = ["who is the author of novel ?", "what did his mother write ?"]
PAIRS = [QAPair("who ?", "the author ."),
         QAPair("who is the author of a book born in city ?", "her father was a writer and her mother was a writer .")]
ROOT = Path(__file__).resolve().parents[1]
ADAPTER_FILE = {"full": "model.safetensors"}  # the others: adapter_model.safetensors


def _config(method: str, data, out, device: str = "cuda", **overrides):
    # 16 pairs, 12 for training (the trainer holds some of them out for validation), batches of 4
    values = dict(data=str(data), n=16, train_fraction=0.75, seed=2, out=str(out), device=device, epochs=1,
                  batch_size=4, max_new_tokens=8, max_prompt_tokens=32, **SMALL)
    values.update(overrides)
    return preset_config(method, **values)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _no_timing(record: dict) -> dict:
    return {k: v for k, v in record.items()
            if not (k.endswith("seconds") or k in ("tokens_per_s", "memory_mb", "peak_memory_mb"))}


# --- one process, CPU and GPU in turn (runs on the CPU too) ----------------------------------------

def test_make_accelerator_replaces_a_state_made_for_other_settings():
    """accelerate refuses a second Accelerator with other settings; make_accelerator starts over instead.

    In a fresh interpreter, so that the state this test leaves is no other test's business.
    """
    script = textwrap.dedent("""
        import torch
        from accelerate import Accelerator
        from gantune.models import make_accelerator
        Accelerator(cpu=True, mixed_precision="bf16")  # a state with other settings, as a GPU run leaves one
        try:
            Accelerator(cpu=True, mixed_precision="no")
        except ValueError as exc:
            assert "cannot be changed" in str(exc), exc
        else:
            raise AssertionError("accelerate accepted other settings")
        acc = make_accelerator(torch.device("cpu"))
        assert acc.device.type == "cpu" and acc.mixed_precision == "no", (acc.device, acc.mixed_precision)
        with acc.autocast():
            assert torch.nn.Linear(4, 4)(torch.randn(2, 4)).dtype == torch.float32  # no autocast on the CPU
        again = make_accelerator(torch.device("cpu"))  # the same settings: kept
        assert again.mixed_precision == "no" and again.device == acc.device
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.fixture(autouse=True, scope="module")
def back_on_the_cpu():
    """After this module, accelerate's state is the CPU's again, as the other modules' tests expect."""
    yield
    make_accelerator(torch.device("cpu"))


# --- on the GPU ------------------------------------------------------------------------------------

@pytest.mark.cuda
def test_make_accelerator_on_cuda_autocasts_to_bf16():
    acc = make_accelerator(torch.device("cuda"))
    assert acc.device.type == "cuda" and acc.mixed_precision == "bf16"
    layer = torch.nn.Linear(4, 4).to("cuda")
    with acc.autocast():
        assert layer(torch.randn(2, 4, device="cuda")).dtype == torch.bfloat16
    assert layer.weight.dtype == torch.float32  # weights stay fp32
    cpu = make_accelerator(torch.device("cpu"))  # and back to the CPU in the same process
    assert cpu.device.type == "cpu" and cpu.mixed_precision == "no"


@pytest.mark.cuda
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_every_method_trains_and_answers_on_the_gpu(arch, method, sixteen_pairs, tmp_path, monkeypatch):
    base = make_arch_base(arch)
    base.model.to("cuda")
    state = _state(base.model)
    loss_dtypes: list[torch.dtype] = []
    head_dtypes: set[torch.dtype] = set()
    plain_backward = Accelerator.backward

    def backward(self, loss, **kwargs):
        loss_dtypes.append(loss.dtype)
        return plain_backward(self, loss, **kwargs)

    monkeypatch.setattr(Accelerator, "backward", backward)
    head = base.model.get_output_embeddings()
    handle = head.register_forward_hook(lambda _m, _i, out: head_dtypes.add(out.dtype))
    out = tmp_path / "run"
    try:
        summary = train(_config(method, sixteen_pairs, out), base=base)
    finally:
        handle.remove()

    assert summary.status == "completed" and summary.steps == summary.total_steps >= 1
    assert summary.device.startswith("cuda")
    assert summary.memory_kind == "cuda_allocated" and summary.peak_memory_mb > 0
    records = RunFolder(out).read_metrics()
    assert all(math.isfinite(r["g_loss"]) for r in records)
    if method == "gan":
        assert all(math.isfinite(r["d_loss"]) for r in records)
    assert torch.bfloat16 in head_dtypes  # the LM ran under bf16 autocast …
    assert loss_dtypes and set(loss_dtypes) == {torch.float32}  # … and every loss back-propagated was fp32
    now = base.model.state_dict()
    assert all(torch.equal(now[k], v) for k, v in state.items())  # the frozen LM (full: put back) is unchanged
    assert all(p.device.type == "cuda" for p in base.model.parameters())

    loaded = load_method(str(out), base=base)
    try:
        assert all(p.device.type == "cuda" for p in loaded.trainable_parameters())
        answers = answer_questions(base, QUESTIONS, 6, method=loaded)
        assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
        streamed = list(stream_answer(base, QUESTIONS[0], 6, method=loaded))
        assert (streamed[-1] if streamed else "") == answers[0]
    finally:
        loaded.close()


@pytest.mark.cuda
@pytest.mark.parametrize("method", METHODS)
def test_bf16_autocast_keeps_log_probs_and_losses_fp32(method):
    base = make_arch_base("llama")
    base.model.to("cuda")
    acc = make_accelerator(base.device)
    enc = Encoder(base.tokenizer, base.eos_id, 32, 12)
    batch = enc.collate(enc.encode(PAIRS)).to(base.device)
    m = get_method(method)(base, preset_config(method, n=None, batch_size=2, max_new_tokens=12,
                                               max_prompt_tokens=32, **SMALL), acc)
    try:
        with m.enabled(len(batch)) as model:
            with acc.autocast():
                logits = model(input_ids=batch.prompt_ids, attention_mask=batch.prompt_mask).logits
                logp = answer_logprobs(model, batch.prompt_ids, batch.prompt_mask, batch.answer_ids, batch.answer_mask)
                loss = mle_loss(logp, batch.answer_mask)
            full = answer_logprobs(model, batch.prompt_ids, batch.prompt_mask, batch.answer_ids, batch.answer_mask)
    finally:
        m.close()
    assert logits.dtype == torch.bfloat16  # autocast is on for the LM
    assert logp.dtype == torch.float32 and loss.dtype == torch.float32
    assert torch.isfinite(logp).all() and math.isfinite(float(loss))
    torch.testing.assert_close(logp, full, atol=0.05, rtol=0)  # bf16 matmuls, fp32 log-softmax: close to fp32


@pytest.mark.cuda
def test_the_memory_monitor_reads_the_cuda_allocator():
    device = torch.device("cuda")
    with MemoryMonitor(device) as monitor:
        assert monitor.kind == "cuda_allocated"
        start = monitor.current_mb()
        x = torch.empty(64 * MB // 4, dtype=torch.float32, device=device)  # 64 MB
        assert monitor.current_mb() - start == pytest.approx(64, abs=1)
        del x
        assert monitor.current_mb() == pytest.approx(start, abs=1)
        assert monitor.peak_mb() >= start + 63
        assert monitor.peak_mb() == torch.cuda.max_memory_allocated(device) / MB


@pytest.mark.cuda
@pytest.mark.parametrize("method", METHODS)
def test_a_stopped_run_resumes_exactly_on_the_gpu(method, sixteen_pairs, tmp_path):
    """Stopped at the end of its first epoch and resumed: the same weights and records as a straight run."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(_config(method, sixteen_pairs, straight, epochs=2), base=make_arch_base("llama"))
    done: list[dict] = []
    first = train(_config(method, sixteen_pairs, resumed, epochs=2), base=make_arch_base("llama"),
                  on_step=done.append, should_stop=lambda: bool(done) and done[-1]["epoch"] >= 1)
    assert first.status == "stopped" and 0 < first.steps < first.total_steps
    second = train(_config(method, sixteen_pairs, resumed, epochs=2), base=make_arch_base("llama"), resume=True)
    assert second.status == "completed" and second.steps == second.total_steps

    name = ADAPTER_FILE.get(method, "adapter_model.safetensors")
    a, b = (load_file(RunFolder(run).adapter_dir / name) for run in (straight, resumed))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resuming on the GPU"
    ma, mb = (RunFolder(run).read_metrics() for run in (straight, resumed))
    assert [_no_timing(r) for r in ma] == [_no_timing(r) for r in mb]


@pytest.mark.cuda
def test_cpu_and_gpu_runs_and_a_loaded_run_in_one_process(sixteen_pairs, tmp_path):
    """The workbench's order: a CPU run, its adapter loaded on the GPU for chat, a GPU run, a CPU run again."""
    cpu_base = make_arch_base("llama")
    assert train(_config("lora", sixteen_pairs, tmp_path / "cpu", device="cpu"), base=cpu_base)["status"] == "completed"
    gpu_base = make_arch_base("llama")
    gpu_base.model.to("cuda")
    loaded = load_method(str(tmp_path / "cpu"), base=gpu_base)
    try:
        assert len(answer_questions(gpu_base, QUESTIONS, 4, method=loaded)) == 2
    finally:
        loaded.close()
    for device, out in (("cuda", "gpu"), ("cpu", "cpu-again")):
        summary = train(_config("gan", sixteen_pairs, tmp_path / out, device=device), base=make_arch_base("llama"))
        assert summary.status == "completed" and summary.device.startswith(device)
