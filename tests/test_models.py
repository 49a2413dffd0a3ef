"Tests of selfsynth.models: building, saving and loading LLaVA folders, sampling, the text encoder."
import json, shutil
import pytest, torch
from PIL import Image
from selfsynth.models import (make_random_llava, load_vlm, load_image, chat_prompt, generate, load_text_encoder, embed,
                              resolve_device, resolve_dtype, train_tokenizer, GENERIC_TEXT)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_random_llava(tmp_path_factory.mktemp("m") / "tiny", seed=0)


@pytest.fixture(scope="module")
def loaded(tiny):
    return load_vlm(tiny, device="cpu")


def _imgs():
    return [Image.new("RGB", (40, 36), (200, 30, 30)), Image.new("RGB", (50, 50), (20, 40, 220)), Image.new("RGB", (32, 32), "white")]


def test_folder_loads_through_auto_classes(tiny):
    from transformers import AutoProcessor, AutoModelForImageTextToText, LlavaForConditionalGeneration, LlavaProcessor
    proc, model = AutoProcessor.from_pretrained(tiny), AutoModelForImageTextToText.from_pretrained(tiny)
    assert isinstance(proc, LlavaProcessor) and isinstance(model, LlavaForConditionalGeneration)
    assert proc.tokenizer.convert_tokens_to_ids("<image>") == model.config.image_token_index
    # the processor expands one <image> into as many tokens as the vision tower yields patches (CLS dropped)
    enc = proc(images=_imgs()[:1], text=["USER: <image>\nhi ASSISTANT:"], return_tensors="pt")
    n_img = (enc.input_ids == model.config.image_token_index).sum().item()
    assert n_img == (model.config.vision_config.image_size // model.config.vision_config.patch_size) ** 2
    assert model(**enc).logits.shape[-1] == len(proc.tokenizer)


def test_chat_prompt_is_llava15_format(loaded):
    _, proc = loaded
    assert chat_prompt(proc, "What colour is the crown?") == "USER: <image>\nWhat colour is the crown? ASSISTANT:"


def test_tokenizer_covers_any_text():
    tok = train_tokenizer(GENERIC_TEXT, vocab_size=300)
    text = "Zxqvörð's crown — 42% teal!"
    ids = tok(text).input_ids
    assert ids[0] == tok.bos_token_id and tok.unk_token_id not in ids
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_generate_n_per_prompt_and_seeded(loaded):
    model, proc = loaded
    qs = ["Describe the bird.", "What colour is the crown?", "Name it."]
    a = generate(model, proc, _imgs(), qs, n=4, max_new_tokens=8, seed=3, batch_size=2)
    assert len(a) == 3 and all(len(x) == 4 and all(isinstance(s, str) for s in x) for x in a)
    assert a == generate(model, proc, _imgs(), qs, n=4, max_new_tokens=8, seed=3, batch_size=2)
    b = generate(model, proc, _imgs(), qs, n=4, max_new_tokens=8, seed=4, batch_size=2)
    assert a != b
    # samples of one prompt differ (a random model spreads its mass over ~400 tokens)
    assert len(set(a[0])) > 1


def test_generate_leaves_global_rng_alone(loaded):
    model, proc = loaded
    torch.manual_seed(123); x = torch.rand(3)
    torch.manual_seed(123); generate(model, proc, _imgs()[:1], ["hi"], n=2, max_new_tokens=4, seed=9); y = torch.rand(3)
    assert torch.equal(x, y)


def test_greedy_reproducible_and_independent_of_batching(loaded):
    model, proc = loaded
    qs = ["Describe the bird.", "What colour is the crown?", "Name it."]
    g1 = generate(model, proc, _imgs(), qs, n=2, do_sample=False, max_new_tokens=8, batch_size=3)
    g2 = generate(model, proc, _imgs(), qs, n=2, do_sample=False, max_new_tokens=8, batch_size=1, seed=7)
    assert g1 == g2 and all(x[0] == x[1] for x in g1)


def test_generate_accepts_paths_and_checks_lengths(loaded, tmp_path):
    model, proc = loaded
    p = tmp_path / "a.png"; _imgs()[0].save(p)
    assert generate(model, proc, [p], ["hi"], do_sample=False, max_new_tokens=4) == \
        generate(model, proc, _imgs()[:1], ["hi"], do_sample=False, max_new_tokens=4)
    with pytest.raises(ValueError, match="2 images but 1 questions"): generate(model, proc, [p, p], ["hi"])


def test_bad_model_folders_name_the_path(tiny, tmp_path):
    with pytest.raises(ValueError, match="missing-model"): load_vlm(tmp_path / "missing-model")
    notllava = tmp_path / "notllava"; notllava.mkdir()
    (notllava / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    with pytest.raises(ValueError, match="notllava.*not a LLaVA-like"): load_vlm(notllava)
    noproc = tmp_path / "noproc"; shutil.copytree(tiny, noproc); (noproc / "processor_config.json").unlink()
    with pytest.raises(ValueError, match="noproc.*no processor"): load_vlm(noproc)


def test_load_image(tmp_path):
    p = tmp_path / "x.png"; Image.new("L", (5, 4), 128).save(p)
    assert load_image(p).mode == "RGB" and load_image(p).size == (5, 4)
    with pytest.raises(ValueError, match="nope.png"): load_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"; bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.png"): load_image(bad)


def test_device_and_dtype():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32 and resolve_dtype("auto", "cuda") == torch.bfloat16
    with pytest.raises(ValueError, match="float8"): resolve_dtype("float8", "cpu")


@pytest.fixture(scope="module")
def encoder():
    return load_text_encoder(device="cpu")


def test_embed_normalised_and_semantic(encoder):
    e = embed(encoder, ["the crown is bright red", "a red patch on top of its head", "the tail is long and forked",
                        "known for its melodious song"])
    assert e.dtype == torch.float32 and e.shape[0] == 4
    assert torch.allclose(e.norm(dim=1), torch.ones(4), atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2] and e[0] @ e[1] > e[0] @ e[3]
    assert embed(encoder, []).shape == (0, e.shape[1])


def test_text_encoder_bad_folder(tmp_path):
    with pytest.raises(ValueError, match="empty-enc"): (tmp_path / "empty-enc").mkdir() or load_text_encoder(tmp_path / "empty-enc")
