"Vectorised InfoNCE scores: ragged images and classes, any chunk, against a per-image float64 loop."
import math
import pytest, torch
from selfsynth.select import SelectionInputs, infonce_scores, image_logsumexp, leave_one_out_logsumexp


def ragged(seed=0, n_images=11, dim=5):
    "Images with 1-5 descriptions in shuffled row order; classes of 1, 3 and 4 concepts sharing one concept."
    g = torch.Generator().manual_seed(seed)
    owner = torch.tensor([i for i in range(n_images) for _ in range(1 + (3 * i) % 5)])
    perm = torch.randperm(len(owner), generator=g)
    owner = owner[perm]
    pos = torch.zeros_like(owner)
    for i in range(n_images): pos[owner == i] = torch.arange(int((owner == i).sum()))
    unit = lambda x: x / x.norm(dim=1, keepdim=True)
    table = {"one": [4], "three": [0, 1, 2], "four": [3, 2, 5, 6]}
    return SelectionInputs([f"i{i}" for i in range(n_images)], [list(table)[i % 3] for i in range(n_images)],
                           unit(torch.randn(len(owner), dim, generator=g)), owner, pos, [f"z{k}" for k in range(7)],
                           unit(torch.randn(7, dim, generator=g)), table)


def per_image_loop(inp, tau, first_n=None):
    "The scores image by image, each image's descriptions in row order."
    keep = torch.ones(len(inp.owner), dtype=torch.bool) if first_n is None else inp.pos < first_n
    desc, owner = inp.desc_emb[keep].double(), inp.owner[keep]
    neg = leave_one_out_logsumexp(image_logsumexp(desc, owner, inp.concept_emb, len(inp.ids), tau))
    out = []
    for i in range(len(inp.ids)):
        J = torch.tensor(inp.image_concepts(i))
        p = desc[owner == i] @ inp.concept_emb[J].double().T / tau
        out.append((p - torch.logaddexp(p, neg[i, J])).sum(0).tolist())
    return out


@pytest.mark.parametrize("chunk", [1, 4, 7, 8192])
@pytest.mark.parametrize("tau", [0.1, 0.01])
def test_matches_per_image_loop_for_any_chunk(chunk, tau):
    inp = ragged(seed=chunk)
    got, want = infonce_scores(inp, tau=tau, chunk=chunk), per_image_loop(inp, tau)
    assert [len(s) for s in got] == [len(inp.image_concepts(i)) for i in range(len(inp.ids))] == [len(s) for s in want]
    for g, w in zip(got, want): assert g == pytest.approx(w, rel=1e-12, abs=1e-12)


def test_first_n_and_chunk_do_not_change_scores():
    inp = ragged(seed=5)
    for first_n in (1, 2, 4):
        want = per_image_loop(inp, 0.1, first_n)
        for chunk in (1, 3, 100):
            got = infonce_scores(inp, tau=0.1, chunk=chunk, first_n=first_n)
            for g, w in zip(got, want): assert g == pytest.approx(w, rel=1e-12, abs=1e-12)


def test_a_single_description_per_image_scores_each_term():
    "m = 1 everywhere: s(z) is one log-ratio, in (-inf, 0); a concept equal to the description scores near 0."
    e = torch.eye(3)
    inp = SelectionInputs(["a", "b", "c"], ["X", "X", "Y"], e, torch.arange(3), torch.zeros(3, dtype=torch.long),
                          ["za", "zc"], e[[0, 2]], {"X": [0], "Y": [1]})
    s = infonce_scores(inp, tau=0.01)
    assert s[0][0] == pytest.approx(-math.log1p(2 * math.exp(-100)), abs=1e-12)  # own logit 100, two others at 0
    assert s[1][0] == pytest.approx(-math.log1p(math.exp(100) + 1), rel=1e-12)  # "b" is orthogonal to za; "a" matches it
    assert s[2][0] == pytest.approx(s[0][0], abs=1e-12)
