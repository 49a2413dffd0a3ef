"`reproduce --jobs`: notebooks of different queues side by side, each queue's in order (notebooks faked)."
import threading, time
import pytest
import selfsynth.cli as cli
from selfsynth.runner import NotebookFailed

class FakeNotebooks:
    "Stands in for `execute`: records when each notebook starts and ends, and checks a queue never overlaps itself."
    def __init__(self, fail=None):
        self.lock, self.live, self.log, self.peak, self.fail = threading.Lock(), set(), [], 0, fail

    def __call__(self, store, name, out, threads=0, **params):
        q, k = params.get("method", name), params.get("round", 0)
        with self.lock:
            assert not any(m == q for m, _ in self.live), f"{out} started while another notebook of {q} runs"
            self.live.add((q, k)); self.peak = max(self.peak, len(self.live))
            self.log.append(("start", q, k, threads))
        time.sleep(0.01 if q in cli.LIGHT else 0.03)
        with self.lock:
            self.live.discard((q, k)); self.log.append(("end", q, k, threads))
        if (q, k) == self.fail: raise NotebookFailed(f"{out}: cell 3 failed")

def queues(spec: dict) -> dict:
    return {**{m: cli.round_jobs(m, ks) for m, ks in spec.items()}, "study": [("study", "study", {})]}

def test_lanes_keep_each_methods_rounds_in_order_and_fill_every_lane(monkeypatch):
    fake = FakeNotebooks()
    monkeypatch.setattr(cli, "execute", fake)
    spec = {"ours": [2, 3, 4], "nl": [1, 2, 3, 4], "lge": [1, 2, 3, 4], "ours_nofilter": [1, 2, 3, 4]}
    cli.run_jobs(None, queues(spec), jobs=2)
    assert fake.peak == 2
    t = cli.lane_threads(2)
    for m, ks in spec.items():
        assert [e[2] for e in fake.log if e[0] == "start" and e[1] == m] == ks  # every round once, in order
        for k in ks[1:]:  # round k starts after round k-1 ended
            assert fake.log.index(("end", m, k - 1, t)) < fake.log.index(("start", m, k, t))
    assert {e[3] for e in fake.log} == {t} and t >= 1
    starts = [e[1] for e in fake.log if e[0] == "start"]
    assert "study" in starts and set(starts[-3:]) <= set(cli.LIGHT)  # short notebooks fill the end

def test_one_lane_runs_queue_after_queue_with_torchs_own_threads(monkeypatch):
    fake = FakeNotebooks()
    monkeypatch.setattr(cli, "execute", fake)
    cli.run_jobs(None, queues({"ours": [1, 2], "nl": [1, 2]}), jobs=1)
    assert [(e[1], e[2], e[3]) for e in fake.log if e[0] == "start"] == [("ours", 1, 0), ("ours", 2, 0), ("nl", 1, 0), ("nl", 2, 0), ("study", 0, 0)]

def test_a_failed_round_stops_new_rounds_but_lets_running_ones_finish(monkeypatch):
    fake = FakeNotebooks(fail=("lge", 2))
    monkeypatch.setattr(cli, "execute", fake)
    with pytest.raises(NotebookFailed, match="lge-round-2"):
        cli.run_jobs(None, queues({"lge": [1, 2, 3, 4], "ours_nofilter": [1, 2, 3, 4], "nl": [1, 2]}), jobs=2)
    started = [(e[1], e[2]) for e in fake.log if e[0] == "start"]
    ended = [(e[1], e[2]) for e in fake.log if e[0] == "end"]
    assert ("lge", 3) not in started and sorted(started) == sorted(ended)  # nothing left half-run

def test_a_queue_waits_for_the_one_it_comes_after(monkeypatch):
    fake = FakeNotebooks()
    monkeypatch.setattr(cli, "execute", fake)
    qs = {**queues({"ours": [1, 2, 3], "lge": [1, 2, 3, 4]}), "theory": [("theory", "theory", {})]}
    cli.run_jobs(None, qs, jobs=2, after={"theory": "ours"})
    assert fake.log.index(("end", "ours", 3, cli.lane_threads(2))) < fake.log.index(("start", "theory", 0, cli.lane_threads(2)))
    assert fake.log.index(("start", "theory", 0, cli.lane_threads(2))) < fake.log.index(("end", "lge", 4, cli.lane_threads(2)))  # not held for the rest

def test_lanes_are_no_more_than_the_long_queues():
    four = {**queues({m: [1, 2, 3, 4] for m in ("ours", "nl", "lge", "ours_nofilter")}), "base": cli.round_jobs("base", [0])}
    assert cli.lanes_for(four, 2) == 2 and cli.lanes_for(four, 8) == 3  # ours, lge, ours_nofilter: nl is short
    assert cli.lanes_for(four, 1) == 1
    ours = {**queues({"ours": [1, 2, 3, 4]}), "base": cli.round_jobs("base", [0])}
    assert cli.lanes_for(ours, 2) == 1  # one long queue: a second lane would idle once the short ones are done
    assert cli.lanes_for(queues({"nl": [1, 2]}), 2) == 1

def test_an_interrupt_stops_new_rounds_but_lets_running_ones_finish(monkeypatch):
    import _thread, signal
    fake = FakeNotebooks()
    def interrupted(store, name, out, threads=0, **params):
        if not fake.log: _thread.interrupt_main()  # Ctrl-C while the first notebook runs
        fake(store, name, out, threads, **params)
    monkeypatch.setattr(cli, "execute", interrupted)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own: libraries loaded by earlier tests may ignore SIGINT
    try:
        with pytest.raises(KeyboardInterrupt):
            cli.run_jobs(None, queues({"lge": [1, 2, 3, 4], "ours_nofilter": [1, 2, 3, 4]}), jobs=2)
    finally: signal.signal(signal.SIGINT, previous)
    started = [(e[1], e[2]) for e in fake.log if e[0] == "start"]
    ended = [(e[1], e[2]) for e in fake.log if e[0] == "end"]
    assert len(started) <= 2 and sorted(started) == sorted(ended)  # the two first notebooks at most, both finished
