"`reproduce --jobs`: rounds of different methods side by side, each method's rounds in order (notebooks faked)."
import threading, time
import pytest
import selfsynth.cli as cli
from selfsynth.runner import NotebookFailed

class FakeRounds:
    "Stands in for `execute`: records when each round notebook starts and ends, and checks a method never overlaps itself."
    def __init__(self, fail=None):
        self.lock, self.live, self.log, self.peak, self.fail = threading.Lock(), set(), [], 0, fail

    def __call__(self, store, name, out, method, round, threads):
        with self.lock:
            assert not any(m == method for m, _ in self.live), f"{method} round {round} started while another of its rounds runs"
            self.live.add((method, round)); self.peak = max(self.peak, len(self.live))
            self.log.append(("start", method, round, threads))
        time.sleep(0.01 if method == "nl" else 0.03)
        with self.lock:
            self.live.discard((method, round)); self.log.append(("end", method, round, threads))
        if (method, round) == self.fail: raise NotebookFailed(f"{out}: cell 3 failed")

def test_lanes_keep_each_methods_rounds_in_order_and_fill_every_lane(monkeypatch):
    fake = FakeRounds()
    monkeypatch.setattr(cli, "execute", fake)
    left = {"ours": [2, 3, 4], "nl": [1, 2, 3, 4], "lge": [1, 2, 3, 4], "ours_nofilter": [1, 2, 3, 4]}
    cli.run_rounds(None, left, jobs=2)
    assert fake.peak == 2
    for m, ks in left.items():
        starts = [e[2] for e in fake.log if e[0] == "start" and e[1] == m]
        assert starts == ks  # every round once, in order
        for k in ks[1:]:  # round k starts after round k-1 ended
            assert fake.log.index(("end", m, k - 1, cli.lane_threads(2))) < fake.log.index(("start", m, k, cli.lane_threads(2)))
    assert {e[3] for e in fake.log} == {cli.lane_threads(2)} and cli.lane_threads(2) >= 1
    assert [e[1] for e in fake.log if e[0] == "start"][-1] == "nl"  # label-only rounds fill the end

def test_a_failed_round_stops_new_rounds_but_lets_running_ones_finish(monkeypatch):
    fake = FakeRounds(fail=("lge", 2))
    monkeypatch.setattr(cli, "execute", fake)
    with pytest.raises(NotebookFailed, match="lge-round-2"):
        cli.run_rounds(None, {"lge": [1, 2, 3, 4], "ours_nofilter": [1, 2, 3, 4], "nl": [1, 2]}, jobs=2)
    started = [(e[1], e[2]) for e in fake.log if e[0] == "start"]
    ended = [(e[1], e[2]) for e in fake.log if e[0] == "end"]
    assert ("lge", 3) not in started and sorted(started) == sorted(ended)  # nothing left half-run
