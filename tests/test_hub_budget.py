"""One Hub request budget for the whole survey (:class:`hubscan.hub.HubBudget`): the bucket rule against a brute
count over every window, seeding from the Hub's IETF ``RateLimit`` headers, and a 4-actor survey through the
fake Hub whose own request log never holds more than the budget in any window."""

from __future__ import annotations

import os
import random
import time

import numpy as np
import pytest

from hub_server import FakeHub, isolated_hf_client

from hubscan.hub import PLANS, BudgetGate, HubBudget, parse_budget


def _max_in_window(times, window: float) -> int:
    """The most of ``times`` inside any half-open interval [t, t + window) (brute force over every start)."""
    times = sorted(times)
    return max((sum(1 for u in times if t <= u < t + window) for t in times), default=0)


def test_no_window_of_the_grants_exceeds_the_budget():
    budget = HubBudget({"resolvers": (7, 10.0)}, slack=0.5)
    rng = random.Random(0)
    now, sent = 1000.0, []
    for _ in range(60):  # callers arriving at random, each sending once its wait is over
        now += rng.expovariate(3.0)
        sent.append(now + budget.take("resolvers", now))
    assert _max_in_window(sent, 10.0) == 7
    # bound: after the first 7, one request per (window + slack) / limit seconds
    assert sent[-1] - sent[0] == pytest.approx((60 // 7 - (60 % 7 == 0)) * 10.5, abs=10.5)
    assert budget.take("api", now) == 0.0  # a kind without a limit is not held back


def test_headers_seed_a_kind_and_a_429_closes_it():
    budget = HubBudget({"api": (3, 60.0)})
    # the policy of a kind given by the caller is not overridden; an unknown kind is seeded from it
    budget.observe("api", 1000, 300, 999, 100, now=0.0)
    assert budget.limits["api"] == (3, 60.0)
    budget.observe("resolvers", 10, 300, 4, 100, now=0.0)  # 6 spent in a window that began at t = -200
    assert budget.limits["resolvers"] == (10, 300.0)
    waits = [budget.take("resolvers", 0.0) for _ in range(5)]
    assert waits[:4] == [0.0] * 4 and waits[4] == pytest.approx(100 + budget.slack)
    budget.observe("api", None, None, 0, 30, now=5.0)  # a 429: nothing before t + 30 (+ slack)
    assert budget.take("api", 5.0) == pytest.approx(30 + budget.slack)


def test_gate_counts_the_hubs_host_only_and_passes_news_on():
    seen, budget = [], HubBudget()
    gate = BudgetGate("http://127.0.0.1:9", budget.take, lambda *a: seen.append(a), sleep=lambda s: None)
    assert gate.kind("http://127.0.0.1:9/org/m/resolve/abc/model.safetensors") == "resolvers"
    assert gate.kind("http://127.0.0.1:9/api/models?limit=5") == "api"
    assert gate.kind("http://127.0.0.1:10/_cdn/ab12") is None  # the CDN a resolve redirects to
    h = {"RateLimit": '"resolvers";r=9;t=50', "RateLimit-Policy": '"fixed window";"resolvers";q=10;w=60'}
    gate.saw("resolvers", 200, h)
    gate.saw("resolvers", 200, h)  # the same policy again: nothing to tell
    gate.saw("resolvers", 429, {**h, "RateLimit": '"resolvers";r=0;t=12'})
    assert [(a[0], a[1], a[2], a[3], a[4]) for a in seen] == [("resolvers", 10, 60, 9, 50), ("resolvers", 10, 60, 0, 12)]


def test_parse_budget():
    assert parse_budget(["free"]) == {k: (n, 300.0) for k, n in PLANS["free"].items()}
    assert parse_budget(["pro", "api=10/2.5"]) == {"api": (10, 2.5), "resolvers": (12000, 300.0)}
    for bad in ("gold", "api=10", "cdn=10/5", "api=0/5", "api=x/5"):
        with pytest.raises(ValueError, match="hub budget"):
            parse_budget([bad])


def test_four_actors_keep_the_fake_hubs_windows_within_the_budget(tmp_path):
    """B resolver requests per W seconds for the survey (4 actors + driver): the fake Hub, limiting at the same
    B per fixed window, answers no 429 and its own log holds ≤ B requests in every W-second interval."""
    import ray
    from safetensors.numpy import save_file
    from hubscan.survey import SurveyConfig, survey

    os.environ["RAY_AUTH_MODE"] = "disabled"
    B, W = 12, 2.0
    rng = np.random.default_rng(0)
    with isolated_hf_client(tmp_path / "hf"), FakeHub(rate_limits={"resolvers": (B, W)}) as hub:
        for i in range(12):
            path = tmp_path / f"m{i}.safetensors"
            save_file({f"l{j}.weight": rng.standard_t(3, (40, 24)).astype("float32") for j in range(2)}, str(path))
            hub.add_model(f"org/m{i}", {"model.safetensors": path}, info={"downloads": 100 - i})
        hub.reset_stats()
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
        try:
            s = survey(SurveyConfig(source="hf", out=str(tmp_path / "ds"), actors=4, cpus_per_actor=1, progress=False,
                                    keep_esd=False, hub={"endpoint": hub.endpoint}, hub_budget={"resolvers": (B, W)}))
        finally:
            ray.shutdown()
        log = [r for r in hub.requests() if r.rate_kind == "resolvers"]
    assert s["num_success"] == 12
    assert [r.status for r in log if r.status == 429] == []
    assert _max_in_window([r.time for r in log], W) <= B
    assert len(log) > 2 * B  # the budget bound: the requests took three windows at least
    assert max(r.time for r in log) - min(r.time for r in log) >= (len(log) // B - 1) * W


def test_a_gone_budget_actor_fails_a_request_in_one_readable_line(tmp_path):
    """A request through the gate of a budget whose Ray actor is gone fails with hubscan's one line naming the
    budget — not Ray's text (actor id, pid, namespace …) — and the driver's budget taken back from a live actor
    holds its grants (:meth:`hubscan.survey.Survey._stop_pool`)."""
    import ray

    import hubscan
    from hubscan.errors import HubscanError
    from hubscan.hub import HubClient, install_http_client
    from hubscan.survey import budget_gate

    os.environ["RAY_AUTH_MODE"] = "disabled"
    path = tmp_path / "m.safetensors"
    from safetensors.numpy import save_file
    save_file({"l.weight": np.ones((8, 4), dtype="float32")}, str(path))
    with isolated_hf_client(tmp_path / "hf"), FakeHub() as hub:
        hub.add_model("org/m", {"model.safetensors": path})
        ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
        try:
            actor = ray.remote(HubBudget).options(num_cpus=0).remote({"resolvers": (2, 60.0)})
            gate = budget_gate(hub.endpoint, actor)
            assert gate._take("resolvers", 100.0) == 0.0 and gate._take("resolvers", 100.0) == 0.0
            back = HubBudget(state=ray.get(actor.snapshot.remote()))
            assert back.take("resolvers", 100.0) == pytest.approx(60.0 + back.slack)  # the actor's 2 grants kept
            ray.kill(actor)
            install_http_client(10.0, budget=gate)
            with pytest.raises(HubscanError) as err:
                hubscan.analyze("hf:org/m", client=HubClient(endpoint=hub.endpoint, max_retries=0, cache_dir=None))
        finally:
            install_http_client(10.0)
            ray.shutdown()
    text = str(err.value)
    assert "the survey's Hub request budget: its Ray actor is gone" in text, text
    assert "\n" not in text and "actor_id" not in text and "pid" not in text, text


def test_a_killed_budget_actor_is_restarted_and_requests_go_on():
    """The survey's budget actor (:func:`hubscan.survey.service_actor`) killed — a process killed, a spot node
    lost — is restarted by Ray from its first arguments and the gate's next request is answered (a fresh
    window: the two grants before the kill are gone), instead of every later request failing."""
    import ray

    from hubscan.survey import budget_gate, service_actor

    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        actor = service_actor(HubBudget).remote({"resolvers": (2, 60.0)})
        gate = budget_gate("https://hub.invalid", actor)
        assert gate._take("resolvers", 100.0) == 0.0 and gate._take("resolvers", 100.0) == 0.0
        assert gate._take("resolvers", 100.0) > 59.0  # the window is spent: wait for it
        pid = ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))
        ray.kill(actor, no_restart=False)  # (asynchronous: calls sent at once may still reach the old process)
        t0 = time.monotonic()
        while ray.get(actor.__ray_call__.remote(lambda self: os.getpid())) == pid:  # wait for the new process
            assert time.monotonic() - t0 < 120, "the budget actor was not restarted"
            time.sleep(0.1)
        assert gate._take("resolvers", 100.0) == 0.0  # restarted: a fresh window
    finally:
        ray.shutdown()


def test_one_line_cuts_after_a_whole_word():
    from hubscan.errors import one_line

    assert one_line("a  b\n c") == "a b c"
    assert one_line("The actor died unexpectedly before finishing", 20) == "The actor died…"
    assert one_line("abcdefghij klm", 10) == "abcdefghi…"  # one word longer than the limit: cut inside it
    assert one_line("short", 10) == "short" and len(one_line("x " * 300, 200)) <= 200
