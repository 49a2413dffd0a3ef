"Tests of step 2 (selfsynth.tune): loss mask, LoRA placement, merge, schedule, batching, and a 2-process run."
import random
from pathlib import Path
import pytest, torch
from PIL import Image
from selfsynth.config import RunConfig
from selfsynth.models import make_random_llava, load_vlm, generate
from selfsynth.tune import (AUGMENTATIONS, answer_cross_entropy, augment, encode_batch, add_lora, lr_at, plan_batches, micro_batches, train,
                            launch_train, load_samples)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_random_llava(tmp_path_factory.mktemp("m") / "tiny")

@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    d = tmp_path_factory.mktemp("img")
    out = []
    for i in range(6):
        Image.new("RGB", (32, 32), [(200, 30, 30), (30, 160, 40), (40, 40, 200)][i % 3]).save(d / f"{i}.png")
        out.append(dict(image=str(d / f"{i}.png"), question="What bird is this?",
                        answer=["A red finch.", "A green parrot with a long tail.", "Blue."][i % 3]))
    return out

def test_loss_mask_is_exactly_the_answer(tiny):
    _, proc = load_vlm(tiny, device="cpu")
    tok = proc.tokenizer
    ims = [Image.new("RGB", (32, 32), (i * 50, 0, 0)) for i in range(3)]
    answers = ["A red finch.", "It is a green parrot, by its long green tail and curved beak.", "Wren"]
    b = encode_batch(proc, ims, ["What bird is this?", "Name it.", "And this one, with a longer question?"], answers)
    for i, a in enumerate(answers):
        n = int(b["attention_mask"][i].sum())  # right padding: real tokens first
        assert b["attention_mask"][i, :n].all() and not b["attention_mask"][i, n:].any()
        want = tok(" " + a + tok.eos_token, add_special_tokens=False).input_ids
        kept = (b["labels"][i] != -100).nonzero().flatten().tolist()
        assert kept == list(range(n - len(want), n))  # exactly the last len(answer) real positions
        assert b["labels"][i, kept].tolist() == want == b["input_ids"][i, n - len(want):n].tolist()
    assert (b["labels"][b["input_ids"] == proc.tokenizer.convert_tokens_to_ids("<image>")] == -100).all()

def test_answer_cross_entropy_equals_the_full_logits_loss(tiny):
    import torch.nn.functional as F
    model, proc = load_vlm(tiny, device="cpu")
    ims = [Image.new("RGB", (32, 32), (i * 60, 20, 0)) for i in range(3)]
    b = encode_batch(proc, ims, ["What bird is this?", "Name it.", "And this one, with a much longer question than the others?"],
                     ["A red finch.", "It is a green parrot, by its long green tail and curved beak.", "Wren"])
    labels = b.pop("labels")
    full = F.cross_entropy(model(**b).logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100, reduction="sum")
    kept = answer_cross_entropy(model, b, labels)
    assert torch.allclose(kept, full, rtol=1e-5) and full > 0
    wrong = labels.clone(); wrong[0, (labels[0] != -100).nonzero()[0]] = 5  # one answer token changed: the loss must see it
    assert not torch.allclose(answer_cross_entropy(model, b, wrong), full, rtol=1e-5)

def test_lora_only_on_language_model(tiny):
    model, _ = load_vlm(tiny, device="cpu")
    lm_linear = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".language_model." in n}
    pm = add_lora(model, RunConfig(lora_r=4, lora_alpha=8))
    lora = {n.split(".lora_")[0].removeprefix("base_model.model.") for n, p in pm.named_parameters() if p.requires_grad and ".lora_" in n}
    assert len(lm_linear) == 14 and lora == lm_linear  # 2 layers x q,k,v,o,gate,up,down; none in the vision tower
    other = [n for n, p in pm.named_parameters() if p.requires_grad and ".lora_" not in n]
    assert other and all("multi_modal_projector" in n for n in other)

def test_train_merge_and_frozen_parts(tiny, samples, tmp_path):
    cfg = RunConfig(device="cpu", lora_r=4, lora_alpha=8, lora_dropout=0.0, lr=1e-2, epochs=3, batch_size=3, augment=False,
                    grad_checkpointing=False)
    res = train(tiny, samples, tmp_path, cfg)
    assert res["steps"] == 6 and len(res["loss"]) == 6 and res["loss"][-1] < res["loss"][0] - 0.05
    base, _ = load_vlm(tiny, device="cpu")
    merged, proc = load_vlm(tmp_path / "merged", device="cpu")
    b, m = dict(base.named_parameters()), dict(merged.named_parameters())
    changed = {n for n in b if not torch.equal(b[n], m[n])}
    assert not any("vision_tower" in n or "embed_tokens" in n or "lm_head" in n for n in changed)
    assert any("multi_modal_projector" in n for n in changed) and any("language_model" in n and "q_proj" in n for n in changed)
    # the merged model computes what base + adapter computes
    from peft import PeftModel
    pm = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    enc = encode_batch(proc, [Image.open(s["image"]) for s in samples[:2]], ["Q?", "Q?"], ["a", "b"])
    enc.pop("labels")
    with torch.no_grad(): assert torch.allclose(pm(**enc).logits, merged(**enc).logits, atol=1e-4)
    assert len(generate(merged, proc, [samples[0]["image"]], ["What bird is this?"], max_new_tokens=4)[0]) == 1

def test_two_processes_match_one(tiny, samples, tmp_path, cpu2_launch):
    "2 gloo processes (accelerate launch) train the same steps as 1 process with accumulation, and save a working model."
    cfg = RunConfig(device="cpu", lora_r=4, lora_alpha=8, lora_dropout=0.0, lr=1e-2, epochs=2, batch_size=4, micro_batch_size=1,
                    grad_checkpointing=True)
    one = train(tiny, samples, tmp_path / "one", cfg)
    two = launch_train(tiny, samples, tmp_path / "two", cfg, cpu2_launch)
    assert two["processes"] == 2 and one["processes"] == 1 and two["accumulation"] == 2 and one["accumulation"] == 4
    assert two["steps"] == one["steps"] == 4 and two["answer_tokens"] == one["answer_tokens"]
    assert max(abs(a - b) for a, b in zip(one["loss"], two["loss"])) < 2e-3, (one["loss"], two["loss"])
    model, proc = load_vlm(tmp_path / "two" / "merged", device="cpu")
    assert (tmp_path / "two" / "adapter" / "adapter_config.json").exists()
    out = generate(model, proc, [samples[0]["image"]] * 2, ["What bird is this?"] * 2, n=2, max_new_tokens=5)
    assert [len(o) for o in out] == [2, 2]

def test_lr_schedule():
    lrs = [lr_at(s, 40, 1.0, 0.05) for s in range(40)]
    assert lrs[:2] == [0.5, 1.0] and lrs[-1] < 0.01 and all(a >= b for a, b in zip(lrs[1:], lrs[2:]))
    assert abs(lr_at(21, 40, 1.0, 0.05) - 0.5) < 0.05  # half-way through the cosine

def test_batches_cover_every_sample_once_per_epoch():
    steps = plan_batches(11, 4, 3, seed=1, world=2)
    for e in range(3):
        epoch = steps[e * 3:(e + 1) * 3]
        assert sorted(sum(epoch, [])) == list(range(11))
    assert steps[:3] != steps[3:6]  # reshuffled each epoch
    assert [len(s) for s in plan_batches(9, 4, 1, 0, world=2)] == [4, 5]  # a lone last sample joins the previous batch
    mb = micro_batches(list(range(8)), 1, 2, 3)
    assert mb == [[1, 3, 5], [7]]

def test_augmentations():
    im = Image.new("RGB", (48, 40), (230, 230, 210)); im.paste((200, 30, 30), (5, 5, 20, 15))
    assert AUGMENTATIONS["hflip"](AUGMENTATIONS["hflip"](im, None), None).tobytes() == im.tobytes()
    counts = set()
    for s in range(40):
        out, names = augment(im, random.Random(s))
        assert out.size == im.size and 1 <= len(names) <= 4 and len(set(names)) == len(names)
        counts.add(len(names))
    assert counts == {1, 2, 3, 4}
    rot = AUGMENTATIONS["rotate"](im, random.Random(0))
    assert rot.getpixel((0, 0)) == im.getpixel((0, 0))  # corners filled with the background, not black

def test_general_data_mixed_in_equal_number(tmp_path, samples):
    from selfsynth.store import write_jsonl, write_json
    write_jsonl(tmp_path / "qa.jsonl", [dict(s, image=Path(s["image"]).name) for s in samples])
    write_json(tmp_path / "gen.json", [dict(image="g.png", question=f"q{i}", answer="a") for i in range(20)])
    got = load_samples(tmp_path / "qa.jsonl", Path(samples[0]["image"]).parent, tmp_path / "gen.json")
    assert len(got) == 12 and sum(g["question"].startswith("q") for g in got) == 6
    assert got[-1]["image"] == str(tmp_path / "g.png")
    write_jsonl(tmp_path / "bad.jsonl", [dict(image="x.png", question="q")])
    with pytest.raises(ValueError, match="bad.jsonl: row 1: field 'answer'"): load_samples(tmp_path / "bad.jsonl", tmp_path)


def test_compiled_blocks_by_default_only_on_a_gpu_without_checkpointing():
    from selfsynth.config import ConfigError
    from selfsynth.tune import use_compiled_blocks
    assert use_compiled_blocks(RunConfig(grad_checkpointing=False), "cuda")
    assert not use_compiled_blocks(RunConfig(grad_checkpointing=True), "cuda")  # the paper's setting: checkpointing wins
    assert not use_compiled_blocks(RunConfig(grad_checkpointing=False), "cpu")
    assert use_compiled_blocks(RunConfig(grad_checkpointing=False, compile_blocks=True), "cpu")
    with pytest.raises(ConfigError, match="compile_blocks.*grad_checkpointing"):
        use_compiled_blocks(RunConfig(grad_checkpointing=True, compile_blocks=True), "cuda")
