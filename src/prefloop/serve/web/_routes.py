"""The web app's routes under ``/app``: pages rendered on the server, a little htmx."""

from __future__ import annotations

import difflib
import html
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markdown_it import MarkdownIt
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session

from prefloop.errors import InvalidInputError, NotFoundError, PrefloopError
from prefloop.feedback import rater_agreement, task_agreement
from prefloop.reward import load_reward_model
from prefloop.serve import ops
from prefloop.serve.app import ServiceContext
from prefloop.serve.web import _dashboard, queue
from prefloop.serve.web._session import (
    COOKIE,
    LOGIN_COOKIE,
    SignInError,
    WebUser,
    current_user,
    new_login_token,
    same_token,
    sign_in,
    sign_out,
)
from prefloop.store import RewardModelRecord, Task, repo

_HERE = Path(__file__).parent
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
MESSAGES = {
    "stored": "Saved.",
    "duplicate": "That answer was already saved; nothing was stored twice.",
    "closed": "That item was closed while you had it (it already has its labels); your answer "
    "was not stored. Here is the next one.",
    "skipped": "Skipped; you will not see that item again.",
    "discarded": "Discarded as unusable; nobody will see that item again.",
    "expired": "Your session expired. Sign in again.",
    "ended": "You were signed out. Sign in again.",
    "missing": "Sign in with your API key.",
    "signed_out": "Signed out.",
}

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False})
_env = Environment(
    loader=FileSystemLoader(_HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def render_markdown(text: str) -> Markup:
    """Markdown with raw HTML turned off (shown as text) and unsafe link schemes refused."""
    return Markup(_markdown.render(text or ""))


_env.filters["markdown"] = render_markdown
_env.filters["num"] = lambda v, f="+.2f": "–" if v is None else format(v, f)
_env.filters["pct"] = lambda v: "–" if v is None else f"{100 * v:.0f}%"

router = APIRouter(prefix="/app", include_in_schema=False)


class PageError(Exception):
    """Ends a request with an HTML page: ``status`` and a message for the person."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _ctx(request: Request) -> ServiceContext:
    context: ServiceContext = request.app.state.prefloop
    return context


def _page(
    request: Request,
    template: str,
    *,
    status: int = 200,
    user: WebUser | None = None,
    **values: Any,
) -> HTMLResponse:
    body = _env.get_template(template).render(user=user, request=request, **values)
    response = HTMLResponse(body, status_code=status)
    response.headers.update(SECURITY_HEADERS)
    return response


def _fragment(template: str, **values: Any) -> HTMLResponse:
    response = HTMLResponse(_env.get_template(template).render(**values))
    response.headers.update(SECURITY_HEADERS)
    return response


def _secure(request: Request) -> bool:
    chosen = _ctx(request).settings.app_secure_cookie
    return request.url.scheme == "https" if chosen is None else chosen


def _to_login(request: Request, reason: str) -> Response:
    url = f"/app/login?m={reason}"
    if request.headers.get("HX-Request"):
        response = Response(status_code=200, headers={"HX-Redirect": url})
    else:
        response = RedirectResponse(url, status_code=303)
    response.delete_cookie(COOKIE, path="/app")
    return response


async def _form(request: Request) -> dict[str, list[str]]:
    """The url-encoded form body (every form of the app is url-encoded)."""
    body = (await request.body()).decode("utf-8", errors="replace")
    values: dict[str, list[str]] = {}
    for key, value in parse_qsl(body, keep_blank_values=True, max_num_fields=200):
        values.setdefault(key, []).append(value)
    return values


def _one(form: dict[str, list[str]], name: str) -> str | None:
    found = form.get(name)
    return found[0] if found else None


def _user(request: Request) -> tuple[WebUser | None, str | None]:
    ctx = _ctx(request)
    return ctx.read(lambda s: current_user(s, ctx.authenticator, request.cookies.get(COOKIE)))


@dataclass
class WebState:
    """The web app's caches (a few seconds each): arm statistics and verdicts, plots."""

    stats: _dashboard.TtlCache
    plots: _dashboard.TtlCache
    models: dict[str, Any] = field(default_factory=dict)
    """Loaded reward models by folder (``None``: it failed to load)."""
    scores: dict[tuple[str, str], float] = field(default_factory=dict)
    """Reward model scores by (folder, generation id): each output is scored once."""
    lock: threading.Lock = field(default_factory=threading.Lock)


def _web(ctx: ServiceContext) -> WebState:
    state: WebState = ctx.web
    return state


_MAX_SCORES = 200_000
log = logging.getLogger("prefloop.serve.web")


def _scorer(ctx: ServiceContext, session: Session, task: Task) -> queue.Scorer | None:
    """The newest reward model registered for ``task`` as a scorer (None: none, or it cannot
    be loaded; then the reward estimates choose, and the page says so)."""
    record = session.scalars(
        select(RewardModelRecord)
        .where(RewardModelRecord.task_id == task.id)
        .order_by(RewardModelRecord.created_at.desc(), RewardModelRecord.id.desc())
        .limit(1)
    ).first()
    if record is None:
        return None
    web, folder = _web(ctx), record.path
    with web.lock:
        known = folder in web.models
        model = web.models.get(folder)
    if not known:
        try:
            model = load_reward_model(folder)
        except (PrefloopError, OSError, ValueError) as exc:
            log.warning(
                "reward model %s v%s (%s) cannot be loaded: %s; the web app chooses pairs "
                "from the reward estimates instead",
                record.name,
                record.version,
                folder,
                exc,
            )
            model = None
        with web.lock:
            web.models[folder] = model
    if model is None:
        return None

    def score(outputs: Sequence[tuple[str, str, str | None]]) -> dict[str, float]:
        with web.lock:
            missing = [o for o in outputs if (folder, o[0]) not in web.scores]
        if missing:
            try:
                values = model.score([text for _, text, _ in missing], [p for _, _, p in missing])
            except Exception as exc:  # a broken model must not stop the labelers
                log.warning(
                    "reward model %s v%s (%s) failed to score outputs: %s; it is not used "
                    "again until the server restarts, the reward estimates choose instead",
                    record.name,
                    record.version,
                    folder,
                    exc,
                )
                with web.lock:
                    web.models[folder] = None
                return {}
            with web.lock:
                if len(web.scores) > _MAX_SCORES:
                    web.scores.clear()
                for (gid, _, _), value in zip(missing, values, strict=True):
                    web.scores[(folder, gid)] = float(value)
        with web.lock:
            return {
                gid: web.scores[(folder, gid)]
                for gid, _, _ in outputs
                if (folder, gid) in web.scores
            }

    return score


def _summary(ctx: ServiceContext, task_name: str) -> _dashboard.Summary:
    """The task's statistics and verdict, recounted in the background every few seconds."""

    def count() -> _dashboard.Summary:
        return ctx.read(lambda s: _dashboard.summarise(s, repo.get_task(s, task_name)))

    return _web(ctx).stats.get(task_name, count)


def _guard(request: Request, *, admin: bool = False) -> tuple[WebUser | None, Response | None]:
    user, reason = _user(request)
    if user is None:
        return None, _to_login(request, reason or "missing")
    if admin and not user.admin:
        raise PageError(403, "This page is for admins; your key's role is labeler.")
    return user, None


def _check_csrf(user: WebUser, form: dict[str, list[str]], request: Request) -> None:
    given = _one(form, "csrf") or request.headers.get("X-CSRF-Token")
    if not same_token(given, user.csrf):
        raise PageError(
            403,
            "This form is out of date (its security token does not match your session). "
            "Nothing was saved: reload the page and try again.",
        )


def _error_page(request: Request, user: WebUser | None, exc: PageError) -> HTMLResponse:
    return _page(request, "error.html", status=exc.status, user=user, message=exc.message)


# -- sign in and out ---------------------------------------------------------------------------
@router.get("/login")
def login_page(request: Request, m: str | None = None) -> HTMLResponse:
    token = new_login_token()
    response = _page(request, "login.html", message=MESSAGES.get(m or ""), login_csrf=token)
    response.set_cookie(
        LOGIN_COOKIE, token, httponly=True, samesite="strict", secure=_secure(request), path="/app"
    )
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    form = await _form(request)
    ctx = _ctx(request)
    if not same_token(_one(form, "csrf"), request.cookies.get(LOGIN_COOKIE)):
        token = new_login_token()
        response: Response = _page(
            request,
            "login.html",
            status=403,
            error="The sign-in form was out of date; nothing was sent. Try again.",
            login_csrf=token,
        )
        response.set_cookie(
            LOGIN_COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=_secure(request),
            path="/app",
        )
        return response
    key = _one(form, "key") or ""
    minutes = ctx.settings.app_session_minutes
    try:
        token, _ = ctx.transaction(lambda s: sign_in(s, ctx.authenticator, key, minutes=minutes))
    except SignInError as exc:
        fresh = new_login_token()
        response = _page(request, "login.html", status=401, error=str(exc), login_csrf=fresh)
        response.set_cookie(
            LOGIN_COOKIE,
            fresh,
            httponly=True,
            samesite="strict",
            secure=_secure(request),
            path="/app",
        )
        return response
    response = RedirectResponse("/app", status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        max_age=minutes * 60,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path="/app",
    )
    response.delete_cookie(LOGIN_COOKIE, path="/app")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    ctx = _ctx(request)
    form = await _form(request)
    user, denied = _guard(request)
    if denied is not None or user is None:
        return denied or _to_login(request, "missing")
    try:
        _check_csrf(user, form, request)
    except PageError as exc:
        return _error_page(request, user, exc)
    ctx.transaction(lambda s: sign_out(s, request.cookies.get(COOKIE)))
    return _to_login(request, "signed_out")


# -- home ---------------------------------------------------------------------------------------
@router.get("")
@router.get("/")
def home(request: Request) -> Response:
    ctx = _ctx(request)
    user, denied = _guard(request)
    if denied is not None:
        return denied
    tasks = ctx.read(lambda s: [(t.name, t.description) for t in ops.list_tasks(s)])
    return _page(request, "home.html", user=user, tasks=tasks)


# -- labeling -----------------------------------------------------------------------------------
def _queue_overview(ctx: ServiceContext, task_name: str, user: WebUser) -> dict[str, Any]:
    def read(session: Session) -> dict[str, Any]:
        task = repo.get_task(session, task_name)
        return {
            "task": task.name,
            "description": task.description,
            "settings": queue.queue_settings(session, task),
            "progress": queue.progress(session, task, user.name),
        }

    return ctx.read(read)


@router.get("/label/{task}")
def label_home(request: Request, task: str) -> Response:
    ctx = _ctx(request)
    user, denied = _guard(request)
    if denied is not None or user is None:
        return denied or _to_login(request, "missing")
    try:
        overview = _queue_overview(ctx, task, user)
    except NotFoundError as exc:
        return _error_page(request, user, PageError(404, str(exc)))
    return _page(request, "queues.html", user=user, kinds=queue.ITEM_KINDS, **overview)


def _item_page(
    request: Request,
    user: WebUser,
    task_name: str,
    kind: str,
    *,
    message: str | None = None,
    error: str | None = None,
    status: int = 200,
    lease_id: int | None = None,
) -> HTMLResponse:
    """The page of the labeler's current item in the queue (a new lease when needed)."""
    ctx = _ctx(request)
    queue.check_kind(kind)

    def work(session: Session) -> dict[str, Any]:
        task = repo.get_task(session, task_name)
        settings = queue.queue_settings(session, task)
        item: queue.ItemView | None
        if lease_id is not None:
            item = queue.lease_view(session, task, lease_id, user.name)
        else:
            decisive = settings.strategy == "decisive"
            stats = _summary(ctx, task.name).stats if decisive else None
            scorer = (
                _scorer(ctx, session, task) if decisive and kind in ("compare", "rank") else None
            )
            item = queue.next_item(
                session, task, kind, user.name, settings=settings, stats=stats, scorer=scorer
            )
        return {
            "task": task.name,
            "scale": [float(v) for v in task.scale],
            "rubric": task.rubric,
            "settings": settings,
            "item": item,
            "progress": queue.progress(session, task, user.name),
        }

    values = ctx.transaction(work)
    levels = [
        (n + 1, value, values["settings"].level_texts.get(_level_key(value), ""))
        for n, value in enumerate(values["scale"])
    ]
    response = _page(
        request,
        "item.html",
        status=status,
        user=user,
        kind=kind,
        levels=levels,
        message=message,
        error=error,
        **values,
    )
    response.headers["HX-Push-Url"] = f"/app/label/{task_name}/{kind}"
    return response


def _level_key(value: float) -> str:
    return f"{value:g}"


@router.get("/label/{task}/{kind}")
def label_next(request: Request, task: str, kind: str, m: str | None = None) -> Response:
    user, denied = _guard(request)
    if denied is not None or user is None:
        return denied or _to_login(request, "missing")
    try:
        return _item_page(request, user, task, kind, message=MESSAGES.get(m or ""))
    except NotFoundError as exc:
        return _error_page(request, user, PageError(404, str(exc)))


@router.post("/label/{task}/{kind}/{lease_id}")
async def label_submit(request: Request, task: str, kind: str, lease_id: int) -> Response:
    ctx = _ctx(request)
    form = await _form(request)
    user, denied = _guard(request)
    if denied is not None or user is None:
        return denied or _to_login(request, "missing")
    try:
        _check_csrf(user, form, request)
        queue.check_kind(kind)
        action = _one(form, "action") or "submit"
        answer = {
            "value": _one(form, "value"),
            "choice": _one(form, "choice"),
            "order": form.get("order", []),
            "text": _one(form, "text"),
        }

        def work(session: Session) -> str:
            loaded = repo.get_task(session, task)
            if action in ("skip", "discard"):
                return queue.release(
                    session, loaded, lease_id, user.name, discard=action == "discard"
                )
            outcome = queue.submit(
                session,
                loaded,
                lease_id,
                user.name,
                answer,
                catalog=ctx.catalog,
                policies=ctx.policies,
            )
            return outcome.status

        try:
            status = ctx.transaction(work)
        except InvalidInputError as exc:  # nothing was stored: the same item, with why
            return _item_page(
                request, user, task, kind, error=str(exc), status=422, lease_id=lease_id
            )
        return _item_page(request, user, task, kind, message=MESSAGES.get(status))
    except queue.ForbiddenItem as exc:
        return _error_page(request, user, PageError(403, str(exc)))
    except NotFoundError as exc:
        return _error_page(request, user, PageError(404, str(exc)))
    except PageError as exc:
        return _error_page(request, user, exc)


@router.post("/label/{task}/edit/{lease_id}/diff")
async def edit_diff(request: Request, task: str, lease_id: int) -> Response:
    ctx = _ctx(request)
    form = await _form(request)
    user, denied = _guard(request)
    if denied is not None or user is None:
        return denied or _to_login(request, "missing")
    try:
        _check_csrf(user, form, request)
        view = ctx.read(lambda s: queue.lease_view(s, repo.get_task(s, task), lease_id, user.name))
    except (PageError, queue.ForbiddenItem, NotFoundError) as exc:
        return _fragment("_message.html", text=str(exc))
    return _fragment("_diff.html", diff=word_diff(view.outputs[0][1], _one(form, "text") or ""))


def word_diff(before: str, after: str) -> Markup:
    """The words removed (``<del>``) and added (``<ins>``) from ``before`` to ``after``,
    every piece of text escaped."""
    old, new = before.split(" "), after.split(" ")
    parts: list[str] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        if op == "equal":
            parts.append(html.escape(" ".join(old[i1:i2])))
            continue
        if i2 > i1:
            parts.append(f"<del>{html.escape(' '.join(old[i1:i2]))}</del>")
        if j2 > j1:
            parts.append(f"<ins>{html.escape(' '.join(new[j1:j2]))}</ins>")
    return Markup(" ".join(parts))


@router.get("/label/{task}/me/agreement")
def my_agreement(request: Request, task: str) -> Response:
    ctx = _ctx(request)
    user, denied = _guard(request)
    if denied is not None or user is None:
        return denied or _to_login(request, "missing")

    def read(session: Session) -> dict[str, Any]:
        loaded = repo.get_task(session, task)
        return {
            "agreement": rater_agreement(session, loaded, user.name),
            "bias": queue.position_bias(session, loaded, user.name),
        }

    try:
        return _fragment("_agreement.html", **ctx.read(read))
    except NotFoundError as exc:
        return _fragment("_message.html", text=str(exc))


# -- dashboard (admins) -------------------------------------------------------------------------
def _dashboard_values(ctx: ServiceContext, task_name: str) -> dict[str, Any]:
    def read(session: Session) -> dict[str, Any]:
        task = repo.get_task(session, task_name)
        summary = _summary(ctx, task.name)
        return {
            "task": task.name,
            "description": task.description,
            "stats": summary.stats,
            "recommendation": summary.recommendation,
            "models": _dashboard.reward_models(session, task),
            "runs": _dashboard.training_runs(session, task),
            "bias": queue.position_bias(session, task),
            "settings": queue.queue_settings(session, task),
            "scale": [float(v) for v in task.scale],
        }

    return ctx.read(read)


@router.get("/tasks/{task}")
def dashboard(request: Request, task: str) -> Response:
    ctx = _ctx(request)
    try:
        user, denied = _guard(request, admin=True)
        if denied is not None or user is None:
            return denied or _to_login(request, "missing")
        values = _dashboard_values(ctx, task)
    except PageError as exc:
        return _error_page(request, _user(request)[0], exc)
    except NotFoundError as exc:
        return _error_page(request, None, PageError(404, str(exc)))
    generations = ctx.read(lambda s: _dashboard.recent_generations(s, repo.get_task(s, task)))
    return _page(
        request,
        "dashboard.html",
        user=user,
        generations=generations,
        strategies=queue.STRATEGIES,
        query="",
        **values,
    )


@router.get("/tasks/{task}/live")
def dashboard_live(request: Request, task: str) -> Response:
    ctx = _ctx(request)
    try:
        _, denied = _guard(request, admin=True)
        if denied is not None:
            return denied
        return _fragment("_live.html", **_dashboard_values(ctx, task))
    except (PageError, NotFoundError) as exc:
        return _fragment("_message.html", text=str(exc))


@router.get("/tasks/{task}/generations")
def dashboard_generations(request: Request, task: str, q: str = "") -> Response:
    ctx = _ctx(request)
    try:
        _, denied = _guard(request, admin=True)
        if denied is not None:
            return denied
        rows = ctx.read(lambda s: _dashboard.recent_generations(s, repo.get_task(s, task), q[:200]))
    except (PageError, NotFoundError) as exc:
        return _fragment("_message.html", text=str(exc))
    return _fragment("_generations.html", generations=rows, query=q)


@router.get("/tasks/{task}/agreement")
def dashboard_agreement(request: Request, task: str) -> Response:
    ctx = _ctx(request)
    try:
        _, denied = _guard(request, admin=True)
        if denied is not None:
            return denied
        agreement = _web(ctx).stats.get(
            ("agreement", task),
            lambda: ctx.read(lambda s: task_agreement(s, repo.get_task(s, task))),
        )
    except (PageError, NotFoundError) as exc:
        return _fragment("_message.html", text=str(exc))
    return _fragment("_agreement.html", agreement=agreement, bias=None)


@router.get("/tasks/{task}/plots/{name}.png")
def dashboard_plot(request: Request, task: str, name: str) -> Response:
    ctx = _ctx(request)
    try:
        _, denied = _guard(request, admin=True)
    except PageError as exc:
        return Response(exc.message, status_code=exc.status, media_type="text/plain")
    if denied is not None:
        return Response("sign in first", status_code=401, media_type="text/plain")
    if name not in _dashboard.PLOTS:
        return Response(f"no plot {name!r}", status_code=404, media_type="text/plain")

    def draw(session: Session) -> bytes:
        loaded = repo.get_task(session, task)
        return _dashboard.plot(session, loaded, name, _summary(ctx, loaded.name).stats)

    try:
        png = _web(ctx).plots.get((task, name), lambda: ctx.read(draw))
    except NotFoundError as exc:
        return Response(str(exc), status_code=404, media_type="text/plain")
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.get("/tasks/{task}/labelers")
def labelers_page(request: Request, task: str) -> Response:
    ctx = _ctx(request)
    try:
        user, denied = _guard(request, admin=True)
        if denied is not None or user is None:
            return denied or _to_login(request, "missing")

        def read(session: Session) -> dict[str, Any]:
            loaded = repo.get_task(session, task)
            summaries = queue.labeler_summaries(session, loaded)
            return {
                "task": loaded.name,
                "summaries": summaries,
                "agreements": {
                    s.labeler: rater_agreement(session, loaded, s.labeler) for s in summaries
                },
                "review": queue.disagreements(session, loaded),
            }

        values = _web(ctx).stats.get(("labelers", task), lambda: ctx.read(read))
    except PageError as exc:
        return _error_page(request, _user(request)[0], exc)
    except NotFoundError as exc:
        return _error_page(request, None, PageError(404, str(exc)))
    return _page(request, "labelers.html", user=user, **values)


@router.post("/tasks/{task}/settings")
async def save_settings(request: Request, task: str) -> Response:
    ctx = _ctx(request)
    form = await _form(request)
    try:
        user, denied = _guard(request, admin=True)
        if denied is not None or user is None:
            return denied or _to_login(request, "missing")
        _check_csrf(user, form, request)

        def work(session: Session) -> None:
            loaded = repo.get_task(session, task)
            texts = {
                _level_key(float(v)): (_one(form, f"level_{_level_key(float(v))}") or "")[:500]
                for v in loaded.scale
            }
            settings = queue.QueueSettings(
                overlap=_int(_one(form, "overlap"), "overlap k"),
                lease_seconds=_int(_one(form, "lease_seconds"), "lease time"),
                strategy=_one(form, "strategy") or "decisive",
                rank_size=_int(_one(form, "rank_size"), "rank size K"),
                level_texts={k: v for k, v in texts.items() if v.strip()},
                guidelines=(_one(form, "guidelines") or "")[:20_000],
            )
            queue.update_settings(session, loaded, settings)

        ctx.transaction(work)
    except PageError as exc:
        return _error_page(request, _user(request)[0], exc)
    except (InvalidInputError, NotFoundError) as exc:
        return _error_page(request, _user(request)[0], PageError(422, str(exc)))
    return RedirectResponse(f"/app/tasks/{task}", status_code=303)


def _int(value: str | None, what: str) -> int:
    try:
        return int(value or "")
    except ValueError:
        raise InvalidInputError(f"{what} must be a whole number, got {value!r}") from None


@router.post("/tasks/{task}/gold")
async def save_gold(request: Request, task: str) -> Response:
    ctx = _ctx(request)
    form = await _form(request)
    try:
        user, denied = _guard(request, admin=True)
        if denied is not None or user is None:
            return denied or _to_login(request, "missing")
        _check_csrf(user, form, request)
        item_id = _int(_one(form, "item"), "item")
        kind, raw = _one(form, "kind") or "", _one(form, "answer") or ""
        answers: dict[str, dict[str, Any]] = {
            "rate": {"value": _float(raw)},
            "compare": {"winner": raw},
            "rank": {"order": [raw]},
        }
        answer = answers.get(kind, {})
        ctx.transaction(lambda s: queue.mark_gold(s, repo.get_task(s, task), item_id, answer))
        _web(ctx).stats.forget(("labelers", task))
    except PageError as exc:
        return _error_page(request, _user(request)[0], exc)
    except (InvalidInputError, NotFoundError) as exc:
        return _error_page(request, _user(request)[0], PageError(422, str(exc)))
    return RedirectResponse(f"/app/tasks/{task}/labelers", status_code=303)


def _float(raw: str) -> float | None:
    try:
        return float(raw)
    except ValueError:
        return None
