"Answer-token chunked cross-entropy: the full-logits loss and its gradients; `bench sft`."
import pytest, torch
import torch.nn.functional as F
from PIL import Image
from selfsynth.bench import matmul_peak, random_llava, sft_batch, sft_step
from selfsynth.config import RunConfig
from selfsynth.models import make_random_llava, load_vlm
from selfsynth.tune import add_lora, answer_loss, encode_batch


@pytest.fixture(scope="module")
def lora_model(tmp_path_factory):
    torch.set_num_threads(1)
    model, processor = load_vlm(make_random_llava(tmp_path_factory.mktemp("m") / "tiny"), device="cpu")
    torch.manual_seed(0)
    model = add_lora(model, RunConfig(lora_r=4, lora_alpha=8, lora_dropout=0.0))
    with torch.no_grad():  # LoRA's B starts at zero: make the adapters matter, so that their gradients are tested
        for name, p in model.named_parameters():
            if "lora_B" in name: p.normal_(0, 0.05)
    batch = encode_batch(processor, [Image.new("RGB", (32, 32), c) for c in [(200, 30, 30), (20, 40, 220), (9, 9, 9)]],
                         ["What bird is this?", "Name it.", "And this one?"],
                         ["A Crimson Finch.", "Blue wren, by its blue belly and long tail.", "A crow."])
    return model.train(), batch


def full_logits_loss(model, inputs, labels):
    logits = model(**inputs).logits
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100, reduction="sum")


def grads(model, loss_fn):
    model.zero_grad(set_to_none=True)
    loss_fn().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("chunk", [1, 5, 1024])
def test_answer_loss_equals_full_logits_loss_and_gradients(lora_model, chunk):
    model, batch = lora_model
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    labels = batch["labels"]
    assert 0 < (labels != -100).sum() < labels.numel() / 2  # most positions are prompt: they must not count
    want = grads(model, lambda: full_logits_loss(model, inputs, labels))
    got = grads(model, lambda: answer_loss(model, inputs, labels, chunk))
    with torch.no_grad():
        assert answer_loss(model, inputs, labels, chunk) == pytest.approx(float(full_logits_loss(model, inputs, labels)), rel=1e-5)
    assert want.keys() == got.keys() and any("lora_A" in n for n in got) and any("multi_modal_projector" in n for n in got)
    for n in want:
        assert torch.allclose(got[n], want[n], rtol=1e-4, atol=1e-6), n
        assert want[n].abs().max() > 0, n


def test_micro_batches_and_answer_loss_give_the_same_update():
    "SGD with lr 1 turns the step into its (clipped) gradient: one pass of full logits = 4 micro-batches of answer loss."
    torch.set_num_threads(1)
    model = random_llava("tiny", 16)
    model.config.use_cache = False
    torch.manual_seed(0)
    model = add_lora(model, RunConfig(lora_r=4, lora_alpha=8, lora_dropout=0.0)).train()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name: p.normal_(0, 0.05)
    params = [p for p in model.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in params]
    batch = sft_batch(model, 4, 6, 5)
    for i, k in enumerate([0, 1, 3, 5]): batch["labels"][i, -6:-6 + k] = -100  # unequal answers: the mean is per token
    assert (batch["labels"] != -100).sum(1).tolist() == [6, 5, 3, 1]
    deltas, losses = [], []
    for micro, chunk in ((4, None), (1, 3)):
        with torch.no_grad():
            for p, p0 in zip(params, start): p.copy_(p0)
        losses.append(sft_step(model, params, torch.optim.SGD(params, lr=1.0), batch, micro, torch.float32, chunk))
        deltas.append([p.detach() - p0 for p, p0 in zip(params, start)])
    assert losses[0] == pytest.approx(losses[1], rel=1e-5) and losses[0] > 1
    assert sum(float(d.norm()) ** 2 for d in deltas[0]) ** 0.5 == pytest.approx(1.0, rel=1e-3)  # clipped to norm 1
    for a, b in zip(*deltas): assert torch.allclose(a, b, rtol=1e-3, atol=1e-6)


def test_bench_sft_json_line(bench_json):
    res = bench_json("sft")
    s, base, opt = res["shapes"], res["baseline"], res["optimised"]
    assert res["bench"] == "sft" and s["seq_len"] == 1 + 16 + 8 + 8 + 1 and s["params"] > s["trainable_params"] > 0
    assert base["checkpointing"] and not opt["checkpointing"] and base["micro_batch"] == opt["micro_batch"] == 4
    assert res["loss_rel_diff"] < 1e-5
    for run in (base, opt):  # 4 N T per step over the measured peak
        want = 4 * s["params"] * 4 * s["seq_len"] / run["s_per_step"] / (res["peak_tflops"] * 1e12)
        assert run["mfu"] == pytest.approx(want, rel=1e-2) and run["samples_per_s"] == pytest.approx(4 / run["s_per_step"], rel=2e-3)
    assert res["speedup"] == pytest.approx(opt["samples_per_s"] / base["samples_per_s"], rel=2e-3) and res["mfu"] == opt["mfu"]


def test_matmul_peak_is_plausible():
    torch.set_num_threads(1)
    assert 1e8 < matmul_peak("cpu", torch.float32) < 1e13
