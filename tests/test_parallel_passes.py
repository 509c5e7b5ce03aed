"""The detector's passes run side by side (``agegender.engines.threads.parallel_map`` over a pool of MediaPipe tasks,
``agegender.detection.blazeface.TaskPool``): the same faces as one pass after another, results in order, no task used
by two threads at once, and no deadlock when a worker itself asks for parallel work."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import agegender.detection.blazeface as blazeface_task
import agegender.detection.detector as detection
from agegender.engines import threads


def test_parallel_map_keeps_order_and_raises():
    assert threads.parallel_map(lambda x: x * x, range(20)) == [x * x for x in range(20)]
    assert threads.parallel_map(lambda x: x, []) == []

    def boom(x):
        if x == 3:
            raise ValueError("three")
        return x

    with pytest.raises(ValueError, match="three"):
        threads.parallel_map(boom, range(6))


def test_parallel_map_uses_the_workers_and_runs_nested_calls_inline(monkeypatch):
    monkeypatch.setattr(threads, "concurrent_passes", lambda: 2)
    names = threads.parallel_map(lambda _: threading.current_thread().name, range(8))
    assert all(n.startswith("agegender-pass") for n in names)

    def outer(x):  # a worker that asks for parallel work must not wait on work queued behind itself
        return sum(threads.parallel_map(lambda y: y + x, range(4)))

    done: list = []
    t = threading.Thread(target=lambda: done.append(threads.parallel_map(outer, range(6))))
    t.start()
    t.join(10)
    assert done == [[sum(y + x for y in range(4)) for x in range(6)]]


def test_parallel_map_is_inline_on_one_core(monkeypatch):
    monkeypatch.setattr(threads, "concurrent_passes", lambda: 1)
    me = threading.current_thread().name
    assert threads.parallel_map(lambda _: threading.current_thread().name, range(5)) == [me] * 5


def test_a_busy_cpu_gets_two_workers_per_core_and_an_idle_one_one(monkeypatch):
    """pass_width: one worker per core unless at least as many other threads are runnable as there are cores;
    AGEGENDER_OVERSUBSCRIBE=1 (OVERSUBSCRIBE) and one-core workers never oversubscribe."""
    monkeypatch.setattr(threads, "concurrent_passes", lambda: 2)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    for others, width in ((0, 2), (1, 2), (2, 4), (7, 4)):
        monkeypatch.setattr(threads, "runnable_elsewhere", lambda at_least=1, others=others: others)
        assert threads.pass_width() == width
    monkeypatch.setattr(threads, "OVERSUBSCRIBE", 1)
    assert threads.pass_width() == 2
    monkeypatch.setattr(threads, "OVERSUBSCRIBE", 2)
    monkeypatch.setattr(threads, "concurrent_passes", lambda: 1)
    assert threads.pass_width() == 1


def test_parallel_map_runs_as_many_items_at_once_as_the_width(monkeypatch):
    """The width is the number of items in flight: four at once on a busy 2-core CPU (all four meet at a barrier),
    never more than two on an idle one."""
    if threads.concurrent_passes() * threads.OVERSUBSCRIBE < 4:
        pytest.skip("fewer than four workers in this process")
    monkeypatch.setattr(threads, "pass_width", lambda: 4)
    barrier = threading.Barrier(4, timeout=10)
    assert threads.parallel_map(lambda x: barrier.wait() is not None and x, range(8)) == list(range(8))
    monkeypatch.setattr(threads, "pass_width", lambda: 2)
    lock, now, peak = threading.Lock(), [0], [0]

    def item(x):
        with lock:
            now[0] += 1
            peak[0] = max(peak[0], now[0])
        time.sleep(0.02)
        with lock:
            now[0] -= 1
        return x

    assert threads.parallel_map(item, range(8)) == list(range(8)) and peak[0] == 2


@pytest.mark.skipif(not os.path.exists("/proc/loadavg"), reason="Linux /proc only")
def test_runnable_elsewhere_sees_busy_processes_and_not_our_own_threads():
    """Spinning processes beside us are counted (as many as the machine has cores, at least); the thread that
    reads is ours and never counts."""
    assert threads._running(f"/proc/self/task/{threading.get_native_id()}/stat")  # this thread, running now
    n = (os.cpu_count() or 1) + 1
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.5)
        seen, widths = [], []
        for _ in range(40):
            seen.append(threads.runnable_elsewhere())
            widths.append(threads.pass_width())
            time.sleep(0.01)
        assert max(seen) >= os.cpu_count()
        if threads.concurrent_passes() >= 2 and threads.OVERSUBSCRIBE >= 2:
            assert max(widths) == threads.concurrent_passes() * threads.OVERSUBSCRIBE
    finally:
        for p in spinners:
            p.kill()
            p.wait()


@pytest.mark.parametrize("mode", ["full", "auto"])
def test_parallel_passes_find_what_serial_passes_find(mode, mosaic, detectors, monkeypatch):
    img, _ = mosaic
    det = detectors(mode)
    parallel = det.detect(img)
    monkeypatch.setattr(detection, "parallel_map", lambda fn, items, width=None: [fn(x) for x in items])
    serial = det.detect(img)
    assert len(parallel) == len(serial) == 6
    for a, b in zip(parallel, serial):
        assert a.box == b.box and a.score == b.score and a.source == b.source
        np.testing.assert_array_equal(a.keypoints, b.keypoints)


def test_detection_passes_run_two_per_core_on_an_idle_cpu(astronaut, detectors, monkeypatch):
    """The detector's MediaPipe calls wait on MediaPipe's own threads, so its passes run two per core whatever the load
    (handoff_width), without reading it; the same faces as passes one after another; one core runs them inline."""
    if threads.concurrent_passes() < 2:
        pytest.skip("one core: the pool has no second worker per core")
    det = detectors("auto")
    with monkeypatch.context() as serial:
        serial.setattr(detection, "parallel_map", lambda fn, items, width=None: [fn(x) for x in items])
        reference = det.detect(astronaut)

    def no_reading():
        raise AssertionError("the detector read the load")

    monkeypatch.setattr(threads, "pass_width", no_reading)
    monkeypatch.setattr(threads, "concurrent_passes", lambda: 2)
    in_flight, peak, lock = [0], [0], threading.Lock()
    passes = []
    original = detection.FaceDetector._run_pass

    def counted(self, p):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        try:
            time.sleep(0.02)  # long enough for every free worker to take a pass
            return original(self, p)
        finally:
            with lock:
                in_flight[0] -= 1
                passes.append(p.label)

    monkeypatch.setattr(detection.FaceDetector, "_run_pass", counted)
    found = det.detect(astronaut)
    assert len(passes) == 7 and peak[0] == 2 * threads.OVERSUBSCRIBE
    assert [(d.box, d.score) for d in found] == [(d.box, d.score) for d in reference]
    monkeypatch.setattr(threads, "concurrent_passes", lambda: 1)
    assert threads.handoff_width() == 1


def test_task_pool_gives_each_task_to_one_caller_at_a_time(monkeypatch):
    active: dict[int, int] = {}
    overlaps: list[int] = []
    lock = threading.Lock()

    class FakeTask:
        def __init__(self, model_path, min_score, source):
            self.source = source

        def detect(self, rgb, offset=(0, 0)):
            with lock:
                active[id(self)] = active.get(id(self), 0) + 1
                if active[id(self)] > 1:
                    overlaps.append(id(self))
            time.sleep(0.002)
            with lock:
                active[id(self)] -= 1
            return [offset]

        def close(self):
            pass

    monkeypatch.setattr(blazeface_task, "_TaskDetector", FakeTask)
    pool = blazeface_task.TaskPool("model.tflite", 0.5, "full", size=2)
    assert len(pool._tasks) == 1  # one made at once; the second only when two calls overlap
    frame = np.zeros((8, 8, 3), np.uint8)
    out: list = []

    def caller(k: int) -> None:
        for i in range(25):
            out.append(pool.detect(frame, (k, i)))

    callers = [threading.Thread(target=caller, args=(k,)) for k in range(4)]
    for t in callers:
        t.start()
    for t in callers:
        t.join(20)
    assert len(out) == 100 and not overlaps
    assert len(pool._tasks) == 2  # never more than its size, however many callers


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="Linux /proc only")
def test_runnable_elsewhere_scans_our_threads_only_when_the_count_could_reach_the_question(monkeypatch):
    """With 2 runnable threads on the machine, one of them the caller, at most 1 is another's: pass_width's
    question (at least 2 others?) is answered without reading this process's thread states; with 5 they are read."""
    loadavg = {"text": ""}
    monkeypatch.setattr(threads, "open", lambda path, *a, **k: io.StringIO(loadavg["text"]), raising=False)
    scanned = []
    monkeypatch.setattr(threads, "_running", lambda path: scanned.append(path) or False)
    loadavg["text"] = "0.50 0.40 0.30 2/300 12345\n"
    assert threads.runnable_elsewhere(2) == 1 and scanned == []
    loadavg["text"] = "4.10 3.00 2.00 5/300 12345\n"
    assert threads.runnable_elsewhere(2) == 4 and len(scanned) == len(os.listdir("/proc/self/task"))


def test_a_few_items_never_read_the_load(monkeypatch):
    """No more workers than items: parallel_map of at most one item per core, and an Estimator pass of one face's two
    views, run without pass_width's reading (it costs /proc reads per call on a one-face photo)."""
    monkeypatch.setattr(threads, "concurrent_passes", lambda: 2)

    def no_reading():
        raise AssertionError("pass_width read for a workload of one item per core")

    monkeypatch.setattr(threads, "pass_width", no_reading)
    assert threads.parallel_map(lambda x: x * 2, [1, 2]) == [2, 4]
    from agegender import Estimator

    est = Estimator(detector="short")
    age_probs, _ = est.predict_batch(np.zeros((1, est.input_size, est.input_size, 3), np.uint8))
    assert age_probs.shape[0] == 1
    with pytest.raises(AssertionError, match="pass_width read"):
        threads.parallel_map(lambda x: x, [1, 2, 3])
