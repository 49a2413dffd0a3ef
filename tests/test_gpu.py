"What only a GPU runs: the cascade's CUDA-graph decode and the compiled blocks of training, against the plain paths (skipped without CUDA)."
import pytest, torch
from PIL import Image
from selfsynth.bench import random_llava, sft_batch
from selfsynth.config import RunConfig
from selfsynth.fastgen import generate_cascade
from selfsynth.models import chat_prompt, load_vlm, make_random_llava
from selfsynth.tune import add_lora, answer_cross_entropy, compile_blocks

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def tiny_cuda(tmp_path_factory):
    "The tiny random LLaVA in float32 on the GPU, attention sharpened (as in test_bench_sampling)."
    model, processor = load_vlm(make_random_llava(tmp_path_factory.mktemp("m") / "tiny"), device="cuda", dtype="float32")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "language_model" in name and name.rsplit(".", 2)[-2] in ("q_proj", "k_proj"): p.mul_(8)
    return model, processor


@pytest.mark.parametrize("do_sample", [True, False])
def test_graphed_cascade_gives_eager_tokens(tiny_cuda, do_sample):
    "70 new tokens: the decode crosses a 64-slot span, so two graphs are captured and replayed."
    model, processor = tiny_cuda
    processor.tokenizer.padding_side = "left"
    enc = processor(images=[Image.new("RGB", (40, 40), c) for c in [(200, 30, 30), (20, 40, 220)]],
                    text=[chat_prompt(processor, q) for q in ["What colour is the crown?", "Describe the bird, its wings and its tail."]],
                    padding=True, return_tensors="pt").to("cuda")
    n = 4 if do_sample else 1
    opts = dict(max_new_tokens=70, min_new_tokens=70, do_sample=do_sample, pad_token_id=processor.tokenizer.pad_token_id)
    torch.manual_seed(3)
    with torch.inference_mode(): want = model.generate(**enc, num_return_sequences=n, **opts)
    for graph in (True, False):
        torch.manual_seed(3)
        got = generate_cascade(model, enc, n, cuda_graph=graph, **opts)
        assert got.shape == want.shape
        same = (got == want).float().mean().item()
        assert same > 0.97, (graph, same)  # float32; GPU kernels of one token and of a prompt may round apart


def test_compiled_blocks_same_loss_and_gradients():
    model = random_llava("small", 64, "cuda", torch.float32, seed=0)
    model.config.use_cache = False
    model = add_lora(model, RunConfig(lora_r=8, lora_alpha=16, lora_dropout=0.0))
    batch = sft_batch(model, 4, 16, 24, seed=0)
    labels = batch.pop("labels")
    params = [p for p in model.parameters() if p.requires_grad]
    def loss_and_grads():
        model.zero_grad(set_to_none=True)
        loss = answer_cross_entropy(model, batch, labels)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in params]
    want, want_g = loss_and_grads()
    assert compile_blocks(model) == 4
    got, got_g = loss_and_grads()
    assert torch.allclose(got, want, rtol=1e-4)
    assert all(torch.allclose(a, b, rtol=1e-3, atol=1e-5) for a, b in zip(got_g, want_g))
