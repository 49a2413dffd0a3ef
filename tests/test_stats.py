"Tests of selfsynth.stats: intervals against known values, paired tests that can fail, and claims whose verdicts flip."
import numpy as np
import pytest

from selfsynth.stats import CLAIMS, claim_verdict, holm, judge_claims, mcnemar, paired_permutation, seed_interval, wilson


def test_wilson_matches_the_closed_form():
    k, n, z = 57, 160, 1.959963984540054
    p = k / n
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert wilson(k, n) == pytest.approx((centre - half, centre + half), abs=1e-9)
    assert wilson(0, 0) is None and wilson(160, 160)[1] == pytest.approx(1.0)


def test_seed_interval_is_a_t_interval():
    r = seed_interval([60.0, 64.0, 68.0])
    assert r["mean"] == 64.0 and r["ci"] == pytest.approx([64 - 4.302653 * 4 / np.sqrt(3), 64 + 4.302653 * 4 / np.sqrt(3)], abs=1e-3)
    assert seed_interval([60.0])["ci"] is None and seed_interval([])["mean"] is None


def test_mcnemar_uses_only_discordant_pairs_and_refuses_unpaired_lists():
    a = [True] * 30 + [False] * 10 + [True] * 100  # 30 right only under a, 10 only under b, 100 both
    b = [False] * 30 + [True] * 10 + [True] * 100
    r = mcnemar(a, b)
    assert r["discordant"] == [30, 10] and r["difference"] == pytest.approx(100 * 20 / 140, abs=1e-3)
    assert r["p"] == pytest.approx(0.00222, abs=1e-4)  # exact binomial: 2 * P(X <= 10 | 40, 1/2)
    assert mcnemar(b, a)["difference"] < 0 and mcnemar(b, a)["p"] == r["p"]
    with pytest.raises(ValueError, match="not pairs"): mcnemar([True], [True, False])


def test_paired_permutation_detects_a_shift_and_not_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=300)
    assert paired_permutation(x + 0.3, x)["p"] < 0.001
    assert paired_permutation(x + rng.normal(scale=0.01, size=300), x)["p"] > 0.05
    assert paired_permutation([0.5, None, 1.0, 0.0], [0.5, 1.0, None, 0.0])["n"] == 2


def test_holm_step_down():
    assert holm([0.01, 0.02, 0.03, 0.2]) == pytest.approx([0.04, 0.06, 0.06, 0.2])
    assert holm([0.5, 0.9]) == [1.0, 1.0]


@pytest.mark.parametrize("components,verdict", [
    ([dict(what="x", difference=3.0, p=1e-5)], "supported"),
    ([dict(what="x", difference=-3.0, p=1e-5)], "contradicted"),
    ([dict(what="x", difference=3.0, p=0.4)], "inconclusive"),
    ([dict(what="x", difference=3.0, p=1e-5), dict(what="y", difference=1.0, p=0.3)], "inconclusive"),  # all must hold
    ([dict(what="x", difference=3.0, p=1e-5), dict(what="y", difference=-1.0, p=1e-4)], "contradicted"),
    ([dict(what="x", difference=None, p=None)], "inconclusive"),
])
def test_claim_verdicts_flip_with_the_data(components, verdict):
    assert judge_claims({"C1": components}, 4, claims=CLAIMS[:1])[0]["verdict"] == verdict


def test_holm_over_the_claims_can_turn_a_lone_significance_inconclusive():
    comps = {c.id: [dict(what="x", difference=1.0, p=0.5)] for c in CLAIMS}
    comps["C1"] = [dict(what="x", difference=1.0, p=0.02)]  # significant alone, not after x5 (Holm's first step)
    out = {c["id"]: c for c in judge_claims(comps, 4)}
    assert out["C1"]["verdict"] == "inconclusive" and out["C1"]["p_holm"] == pytest.approx(0.1)
    assert claim_verdict(comps["C1"], 0.02) == "supported"
    assert all(c["round"] == (1 if c["id"] == "C4" else 4) for c in out.values())
