"""The web app over HTTP (no browser): sign-in, CSRF, roles, bad input, queues and strategies.

Each test runs on SQLite and PostgreSQL (the ``store`` fixture)."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from prefloop.bandit import arm_stats
from prefloop.errors import InvalidInputError
from prefloop.feedback import PairwiseEvent, RatingEvent, rater_agreement
from prefloop.feedback.agreement import krippendorff_alpha
from prefloop.serve import ServeSettings, create_app, ops
from prefloop.serve.web import queue, render_markdown, word_diff
from prefloop.store import Arm, Feedback, Generation, RewardModelRecord, Store, Task
from prefloop.store.models import AppSession, LabelItem, LabelLease, utcnow
from tests.support.web import (
    app_events,
    bandit_matches_recomputation,
    csrf_of,
    form_action,
    make_keys,
    messages,
    seed_task,
    sign_in,
)


@pytest.fixture
def keys(store: Store) -> dict[str, str]:
    return make_keys(store, ("ana", "labeler"), ("ben", "labeler"), ("boss", "admin"))


@pytest.fixture
def client(store: Store, keys: dict[str, str]) -> Iterator[TestClient]:
    app = create_app(ServeSettings(database_url=store.url, key_cache_seconds=0), store=store)
    with TestClient(app) as opened:
        yield opened


def _task(store: Store, name: str = "diary") -> Task:
    with store.session(readonly=True) as session:
        task = session.scalar(select(Task).where(Task.name == name))
        assert task is not None
        session.expunge(task)
        return task


def _feedback_count(store: Store) -> int:
    with store.session(readonly=True) as session:
        return int(session.scalar(select(func.count()).select_from(Feedback)) or 0)


def test_sign_in_sets_a_strict_http_only_cookie_and_csp(
    client: TestClient, keys: dict[str, str]
) -> None:
    page = client.get("/app/login")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "unsafe" not in page.headers["content-security-policy"]
    answer = client.post(
        "/app/login", data={"csrf": csrf_of(page.text), "key": keys["ana"]}, follow_redirects=False
    )
    cookie = answer.headers["set-cookie"].lower()
    assert "prefloop_session=" in cookie and "httponly" in cookie and "samesite=strict" in cookie


def test_wrong_key_and_stale_login_form_are_refused(client: TestClient) -> None:
    page = client.get("/app/login").text
    wrong = client.post("/app/login", data={"csrf": csrf_of(page), "key": "pfk_nope"})
    assert wrong.status_code == 401 and "unknown or revoked" in wrong.text
    stale = client.post("/app/login", data={"csrf": "old", "key": "pfk_nope"})
    assert stale.status_code == 403 and "out of date" in stale.text


def test_a_client_key_cannot_sign_in(store: Store, client: TestClient) -> None:
    key = make_keys(store, ("robot", "client"))["robot"]
    page = client.get("/app/login").text
    answer = client.post("/app/login", data={"csrf": csrf_of(page), "key": key})
    assert answer.status_code == 401 and "cannot use the web app" in answer.text


def test_a_labeler_gets_403_on_admin_pages(
    store: Store, client: TestClient, keys: dict[str, str]
) -> None:
    seed_task(store, inputs=1, per_input=1)
    sign_in(client, keys["ana"])
    for path in ("/app/tasks/diary", "/app/tasks/diary/labelers"):
        answer = client.get(path)
        assert answer.status_code == 403 and "for admins" in answer.text
    assert client.get("/app/tasks/diary/plots/regret.png").status_code == 403


def test_stale_csrf_token_and_logout_store_nothing(
    store: Store, client: TestClient, keys: dict[str, str]
) -> None:
    seed_task(store, inputs=1, per_input=2)
    sign_in(client, keys["ana"])
    page = client.get("/app/label/diary/rate").text
    answer = client.post(form_action(page), data={"csrf": "stale", "value": "1"})
    assert answer.status_code == 403 and "out of date" in answer.text
    assert _feedback_count(store) == 0
    logout = client.post("/app/logout", data={"csrf": csrf_of(page)}, follow_redirects=False)
    assert logout.status_code == 303
    after = client.post(form_action(page), data={"csrf": csrf_of(page), "value": "1"})
    assert "/app/login" in str(after.url) and _feedback_count(store) == 0


def test_an_expired_session_goes_back_to_sign_in(
    store: Store, client: TestClient, keys: dict[str, str]
) -> None:
    seed_task(store, inputs=1, per_input=2)
    sign_in(client, keys["ana"])
    page = client.get("/app/label/diary/rate").text
    with store.session() as session:
        session.execute(update(AppSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    answer = client.post(form_action(page), data={"csrf": csrf_of(page), "value": "1"})
    assert answer.status_code == 200 and "Your session expired" in answer.text
    swapped = client.post(  # htmx's request: it is told to go to the sign-in page
        form_action(page),
        data={"csrf": csrf_of(page), "value": "1"},
        headers={"HX-Request": "true"},
        follow_redirects=False,
    )
    assert swapped.headers["HX-Redirect"] == "/app/login?m=missing"
    assert _feedback_count(store) == 0


def test_level_off_the_scale_shows_why_and_keeps_the_item(
    store: Store, client: TestClient, keys: dict[str, str]
) -> None:
    seed_task(store, inputs=1, per_input=2)
    sign_in(client, keys["ana"])
    page = client.get("/app/label/diary/rate").text
    answer = client.post(form_action(page), data={"csrf": csrf_of(page), "value": "7"})
    assert answer.status_code == 422
    assert any("scale" in m for m in messages(answer.text)), messages(answer.text)
    assert form_action(answer.text) == form_action(page)  # the same item, to answer again
    with store.session(readonly=True) as session:
        assert session.scalar(select(func.count()).select_from(Feedback)) == 0
        assert session.scalar(select(func.sum(LabelItem.done))) == 0


def test_double_submit_stores_one_event_and_bandit_matches(
    store: Store, client: TestClient, keys: dict[str, str]
) -> None:
    seed_task(store, inputs=2, per_input=2)
    sign_in(client, keys["ana"])
    page = client.get("/app/label/diary/rate").text
    data = {"csrf": csrf_of(page), "value": "0.5"}
    first = client.post(form_action(page), data=data)
    second = client.post(form_action(page), data=data)
    assert messages(first.text)[0] == "Saved."
    assert "nothing was stored twice" in messages(second.text)[0]
    assert len(app_events(store)) == 1
    stored, recomputed = bandit_matches_recomputation(store)
    assert stored == recomputed


def test_a_closed_item_stores_nothing(
    store: Store, client: TestClient, keys: dict[str, str]
) -> None:
    seed_task(store, inputs=1, per_input=2)
    sign_in(client, keys["ana"])
    page = client.get("/app/label/diary/rate").text
    with store.session() as session:  # someone else's labels closed it meanwhile
        session.execute(update(LabelItem).values(status="closed", done=1))
    answer = client.post(form_action(page), data={"csrf": csrf_of(page), "value": "1"})
    assert "closed while you had it" in messages(answer.text)[0]
    assert _feedback_count(store) == 0


def test_a_task_with_no_items_says_so(
    store: Store, client: TestClient, keys: dict[str, str]
) -> None:
    with store.session() as session:
        ops.create_task(session, "empty")
    sign_in(client, keys["ana"])
    for kind in queue.ITEM_KINDS:
        page = client.get(f"/app/label/empty/{kind}")
        assert page.status_code == 200 and "No items left for you" in page.text
    assert client.get("/app/label/nope/rate").status_code == 404


def test_no_answer_for_another_tasks_or_labelers_item(
    store: Store, client: TestClient, keys: dict[str, str]
) -> None:
    seed_task(store, inputs=1, per_input=2)
    seed_task(store, "other", inputs=1, per_input=2)
    sign_in(client, keys["ana"])
    page = client.get("/app/label/other/rate").text
    lease = form_action(page).rsplit("/", 1)[1]
    answer = client.post(f"/app/label/diary/rate/{lease}", data={"csrf": csrf_of(page), "value": 1})
    assert answer.status_code == 403 and "another task" in answer.text
    ben = TestClient(client.app)
    sign_in(ben, keys["ben"])
    ben_page = ben.get("/app/label/diary/rate").text
    stolen = ben.post(
        f"/app/label/other/rate/{lease}", data={"csrf": csrf_of(ben_page), "value": 1}
    )
    assert stolen.status_code == 403 and "another labeler" in stolen.text
    assert _feedback_count(store) == 0


def test_skip_and_discard(store: Store, client: TestClient, keys: dict[str, str]) -> None:
    seed_task(store, inputs=1, per_input=3, arms=("a",))
    sign_in(client, keys["ana"])
    page = client.get("/app/label/diary/rate").text
    skipped = client.post(form_action(page), data={"csrf": csrf_of(page), "action": "skip"})
    assert "Skipped" in messages(skipped.text)[0]
    discarded = client.post(
        form_action(skipped.text), data={"csrf": csrf_of(page), "action": "discard"}
    )
    assert "Discarded" in messages(discarded.text)[0]
    with store.session(readonly=True) as session:
        statuses = sorted(session.scalars(select(LabelItem.status)).all())
    assert statuses.count("discarded") == 1
    ben = TestClient(client.app)
    sign_in(ben, keys["ben"])
    seen = {form_action(ben.get("/app/label/diary/rate").text)}
    assert len(seen) == 1  # ben can get the skipped item but never the discarded one
    assert _feedback_count(store) == 0


def test_compare_both_bad_rates_both_lowest_and_position_is_recorded(store: Store) -> None:
    seed_task(store, inputs=2, per_input=2)
    task = _task(store)
    with store.session() as session:
        view = queue.next_item(session, task, "compare", "ana")
        assert view is not None
        outcome = queue.submit(session, task, view.lease_id, "ana", {"choice": "both_bad"})
        assert outcome.status == "stored" and len(outcome.feedback_ids) == 2
        second = queue.next_item(session, task, "compare", "ana")
        assert second is not None
        queue.submit(session, task, second.lease_id, "ana", {"choice": "left"})
        bias = queue.position_bias(session, task)
    assert (bias.left, bias.right) == (1, 0)
    events = app_events(store)
    assert [e.kind for e in events] == ["rating", "rating", "pairwise"]
    assert [e.value for e in events[:2]] == [-1.0, -1.0]
    assert events[2].generation_id == second.outputs[0][0]  # a = the left output


def test_overlap_k_and_leases(store: Store) -> None:
    seed_task(store, inputs=1, per_input=2, arms=("a",))
    task = _task(store)
    with store.session() as session:
        queue.update_settings(session, task, queue.QueueSettings(overlap=2, strategy="oldest"))
    with store.session() as session:
        ana = queue.next_item(session, task, "rate", "ana")
        ben = queue.next_item(session, task, "rate", "ben")
        cal = queue.next_item(session, task, "rate", "cal")
        assert ana and ben and cal
        assert ana.item_id == ben.item_id != cal.item_id  # two leases at most per item
        again_ana = queue.next_item(session, task, "rate", "ana")
        assert again_ana is not None and again_ana.lease_id == ana.lease_id  # the same lease
    with store.session() as session:  # ana's lease expires: cal's next item is that one
        session.execute(
            update(LabelLease)
            .where(LabelLease.id == ana.lease_id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        queue.submit(session, task, cal.lease_id, "cal", {"value": 1})
        again = queue.next_item(session, task, "rate", "cal")
        assert again is not None and again.item_id == ana.item_id
        queue.submit(session, task, ben.lease_id, "ben", {"value": 0})
        queue.submit(session, task, again.lease_id, "cal", {"value": 0})
        late = queue.submit(session, task, ana.lease_id, "ana", {"value": 1})
    assert late.status == "closed"  # k labels were in: ana's late answer is not stored
    assert len(app_events(store)) == 3


def test_decisive_strategy_prefers_open_arms_and_close_pairs(store: Store) -> None:
    seed_task(store, inputs=8, per_input=3, arms=("good", "bad", "close"))
    task = _task(store)
    with store.session() as session:  # "bad" is clearly worse; "good" and "close" overlap
        gens = session.execute(
            select(
                Generation.id,
                Generation.arm_id,
                Arm.name,
            ).join(Arm, Arm.id == Generation.arm_id)
        ).all()
    values = {"good": (1.0, 1.0), "bad": (-1.0, -1.0), "close": (1.0, 0.5)}
    with store.session() as session:
        for n, (gid, _, arm) in enumerate(gens):
            event = RatingEvent(generation_id=gid, value=values[arm][n % 2])
            ops.submit_feedback(session, "diary", event)
    with store.session() as session:
        stats = arm_stats(session, task)
        open_arms, _ = queue._estimates(stats)
        bad = next(a.arm_id for a in stats.arms if a.arm == "bad")
        assert open_arms and bad not in open_arms
        for labeler in ("p", "q", "r", "s"):
            view = queue.next_item(session, task, "rate", labeler, stats=stats)
            assert view is not None
            arm = session.get(Generation, view.outputs[0][0]).arm_id  # type: ignore[union-attr]
            assert arm in open_arms
        pair = queue.next_item(session, task, "compare", "p", stats=stats)
        oldest = queue.next_item(
            session,
            task,
            "compare",
            "z",
            settings=queue.QueueSettings(strategy="oldest"),
        )
        assert pair is not None and oldest is not None
        random_pick = queue.next_item(
            session,
            task,
            "rank",
            "y",
            settings=queue.QueueSettings(strategy="random"),
            rng=random.Random(3),
        )
        assert random_pick is not None


def test_gold_accuracy_and_review_queue(store: Store) -> None:
    seed_task(store, inputs=1, per_input=2, arms=("a",))
    task = _task(store)
    with store.session() as session:
        queue.update_settings(session, task, queue.QueueSettings(overlap=2, strategy="oldest"))
    with store.session() as session:
        ana = queue.next_item(session, task, "rate", "ana")
        ben = queue.next_item(session, task, "rate", "ben")
        assert ana and ben and ana.item_id == ben.item_id
        queue.mark_gold(session, task, ana.item_id, {"value": 1.0})
        queue.submit(session, task, ana.lease_id, "ana", {"value": 1})
        queue.submit(session, task, ben.lease_id, "ben", {"value": -1})
        summaries = {s.labeler: s for s in queue.labeler_summaries(session, task)}
        review = queue.disagreements(session, task)
        with pytest.raises(InvalidInputError, match="gold is for the others"):
            edit = queue.next_item(session, task, "edit", "ana")
            assert edit is not None
            queue.mark_gold(session, task, edit.item_id, {"text": "x"})
    assert summaries["ana"].gold_accuracy == 1.0 and summaries["ben"].gold_accuracy == 0.0
    assert [d.item_id for d in review] == [ana.item_id] and review[0].share == 0.5


def test_settings_are_validated() -> None:
    with pytest.raises(InvalidInputError, match="overlap"):
        queue.QueueSettings(overlap=0)
    with pytest.raises(InvalidInputError, match="strategy"):
        queue.QueueSettings(strategy="best")
    with pytest.raises(InvalidInputError, match="rank size"):
        queue.QueueSettings(rank_size=1)


def test_markdown_and_diff_escape_everything() -> None:
    shown = str(render_markdown("**hi** <script>x()</script> [a](javascript:alert(1))"))
    assert "<strong>hi</strong>" in shown and "<script>" not in shown
    assert "javascript:" not in re.sub(r"\[a\]\(javascript:alert\(1\)\)", "", shown)
    diff = str(word_diff("a <b> c", "a <i> c"))
    assert diff == "a <del>&lt;b&gt;</del> <ins>&lt;i&gt;</ins> c"


def test_admin_saves_settings_and_sees_the_dashboard(
    store: Store, client: TestClient, keys: dict[str, str]
) -> None:
    seed_task(store, inputs=2, per_input=2)
    sign_in(client, keys["boss"])
    page = client.get("/app/tasks/diary").text
    saved = client.post(
        "/app/tasks/diary/settings",
        data={
            "csrf": csrf_of(page),
            "overlap": "3",
            "lease_seconds": "120",
            "rank_size": "2",
            "strategy": "random",
            "level_1": "excellent",
            "guidelines": "# Be fair",
        },
        follow_redirects=False,
    )
    assert saved.status_code == 303
    with store.session(readonly=True) as session:
        settings = queue.queue_settings(session, session.scalar(select(Task)))  # type: ignore[arg-type]
    assert (settings.overlap, settings.strategy, settings.level_texts) == (
        3,
        "random",
        {"1": "excellent"},
    )
    bad = client.post(
        "/app/tasks/diary/settings",
        data={"csrf": csrf_of(page), "overlap": "0", "lease_seconds": "1", "rank_size": "2"},
    )
    assert bad.status_code == 422 and "overlap" in bad.text
    rate = client.get("/app/label/diary/rate").text
    assert "excellent" in rate and "<h1>Be fair</h1>" in rate
    for path in ("live", "agreement", "generations?q=place", "plots/arm_means.png"):
        assert client.get(f"/app/tasks/diary/{path}").status_code == 200, path


def test_decisive_compare_takes_the_pair_the_reward_model_is_least_sure_of(store: Store) -> None:
    seed_task(store, inputs=6, per_input=2, arms=("a", "b"))
    task = _task(store)
    with store.session() as session:
        queue.fill_queue(session, task, "compare")
        items = session.scalars(select(LabelItem).order_by(LabelItem.id)).all()
        # a scorer that finds every pair easy to order except the fourth one
        hard = set(items[3].generation_ids)
        scores = {
            gid: (0.5 if gid in hard else float(n % 2) * 2 - 1)
            for n, gid in enumerate(g for item in items for g in item.generation_ids)
        }
    seen: list[list[str]] = []

    def scorer(outputs: Any) -> dict[str, float]:
        seen.append([gid for gid, _, _ in outputs])
        return {gid: scores[gid] for gid, _, _ in outputs}

    with store.session() as session:
        view = queue.next_item(session, task, "compare", "ana", scorer=scorer)
        plain = queue.next_item(session, task, "compare", "ben")
    assert view is not None and view.item_id == items[3].id
    assert view.chosen_by == "the outputs the reward model is least sure how to order"
    assert seen and hard <= set(seen[0])
    assert plain is not None and plain.chosen_by.startswith(
        "the outputs whose reward estimates are closest"
    )


def test_the_app_steers_compare_by_the_registered_reward_model(
    store: Store, client: TestClient, keys: dict[str, str], tmp_path: Path
) -> None:
    from prefloop.reward import RatingData
    from prefloop.reward.rating import RatingModelConfig, SklearnRatingModel
    from prefloop.reward.registry import register_folder

    seed_task(store, inputs=3, per_input=2, arms=("a", "b"))
    texts = [
        f"{'Short.' if n % 2 else 'A much longer diary entry. ' * (n % 5 + 1)}" for n in range(30)
    ]
    ratings = np.array([-1.0 if n % 2 else 1.0 for n in range(30)])
    model = SklearnRatingModel(RatingModelConfig(model="ridge:stats"))
    model.fit(RatingData(texts=texts, ratings=ratings, prompts=[None] * 30))
    folder = model.save(tmp_path / "rm")
    register_folder(store, folder, name="diary-rm", task="diary")
    sign_in(client, keys["ana"])
    page = client.get("/app/label/diary/compare").text
    assert "Chosen: the outputs the reward model is least sure how to order." in page


def test_rater_agreement_counts_only_judgements_shared_with_the_rater(store: Store) -> None:
    gens = seed_task(store, inputs=2, per_input=3, arms=("a",))
    task = _task(store)
    g1, g2, g3, g4 = gens[:4]

    def rate(author: str, gid: str, value: float) -> None:
        event = RatingEvent(generation_id=gid, value=value, source="labeler", author=author)
        with store.session() as session:
            ops.submit_feedback(session, "diary", event)

    def prefer(author: str, a: str, b: str, winner: str) -> None:
        event = PairwiseEvent(a=a, b=b, winner=winner, source="labeler", author=author)  # type: ignore[arg-type]
        with store.session() as session:
            ops.submit_feedback(session, "diary", event)

    rate("ana", g1, 1.0)
    rate("ben", g1, 1.0)
    rate("ana", g2, 1.0)
    rate("ben", g2, -1.0)
    rate("ben", g3, 0.5)
    rate("cal", g3, -0.5)  # ana never rated g3: not her agreement
    prefer("ana", g1, g4, "a")
    prefer("ben", g4, g1, "b")  # the same preference, the pair the other way round
    prefer("cal", g1, g4, "b")
    with store.session(readonly=True) as session:
        ana = rater_agreement(session, task, "ana")
        cal = rater_agreement(session, task, "cal")
    assert ana.rated_units == 2
    assert ana.alpha == pytest.approx(krippendorff_alpha([[1.0, 1.0], [1.0, -1.0]]))
    assert (ana.judged_pairs, ana.pair_rate) == (1, 0.5)  # agrees with ben, not with cal
    assert (cal.rated_units, cal.pair_rate) == (1, 0.0)


def test_a_reward_model_that_cannot_load_leaves_the_choice_to_the_estimates(
    store: Store,
    client: TestClient,
    keys: dict[str, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    seed_task(store, inputs=2, per_input=2, arms=("a", "b"))
    with store.session() as session:
        task = session.scalar(select(Task).where(Task.name == "diary"))
        assert task is not None
        session.add(
            RewardModelRecord(
                task_id=task.id, name="gone", version=1, kind="rating", path=str(tmp_path / "gone")
            )
        )
    sign_in(client, keys["ana"])
    page = client.get("/app/label/diary/compare").text
    assert "Chosen: the outputs whose reward estimates are closest" in page
    assert any("gone v1" in r.getMessage() for r in caplog.records)


def test_the_dashboard_lists_the_tasks_training_runs(
    store: Store, client: TestClient, keys: dict[str, str]
) -> None:
    from prefloop.store import TrainingRun

    seed_task(store, inputs=2, per_input=2)
    sign_in(client, keys["boss"])
    assert "No model was trained on this task" in client.get("/app/tasks/diary/live").text
    with store.session() as session:
        task = session.scalar(select(Task))
        assert task is not None
        session.add(
            TrainingRun(
                task_id=task.id,
                method="kto",
                base="smollm2",
                config={},
                examples=96,
                metrics={"steps": 24, "loss_first": 0.5, "loss_last": 0.47},
                output_path="/models/kto",
                status="done",
            )
        )
    live = client.get("/app/tasks/diary/live").text
    assert "Training runs" in live and "kto" in live and "loss_last 0.47" in live
