"""``prefloop serve`` (the web service) and ``prefloop keys`` (its API keys)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from prefloop.cli._output import DbOption, console, fail, print_json, redact_url

keys_app = typer.Typer(
    name="keys",
    help="API keys of the web service (stored as SHA-256 hashes; a new key is shown once).",
    no_args_is_help=True,
)


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 8000,
    db: DbOption = None,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.", min=1)] = 1,
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="Log every request.")
    ] = True,
    insecure_no_auth: Annotated[
        bool,
        typer.Option(
            "--insecure-no-auth",
            help="Accept every request as admin without a key (local development only).",
        ),
    ] = False,
    limit_concurrency: Annotated[
        int | None,
        typer.Option(
            help="At most this many connections and requests at once per worker; beyond it "
            "requests get 503 at once instead of queueing (uvicorn's limit). Default: none.",
            min=1,
        ),
    ] = None,
) -> None:
    """Run the web service: tasks and arms, /v1/select, /v1/generate, /v1/feedback, /v1/stats.

    Needs an API key: one in the store (`prefloop keys create`) or PREFLOOP_ADMIN_KEY. Other
    settings come from PREFLOOP_* variables (see docs/serve.md); OpenAPI at /docs.
    """
    import uvicorn

    from prefloop.serve.app import _check_auth_configured
    from prefloop.serve.settings import ServeSettings
    from prefloop.store import Store, database_url

    url = database_url(db)
    # uvicorn's workers build the app from the environment; pass the options on that way.
    os.environ["PREFLOOP_DATABASE_URL"] = url
    if insecure_no_auth:
        os.environ["PREFLOOP_INSECURE_NO_AUTH"] = "1"
    settings = ServeSettings()
    # Create or migrate the schema once, here, rather than racing in every worker, and refuse
    # to start without a key before any worker is spawned.
    with Store.open(url) as store:
        _check_auth_configured(settings, store)
    console.print(
        f"prefloop serve on http://{host}:{port} (store {redact_url(url)}, {workers} worker(s))"
    )
    uvicorn.run(
        "prefloop.serve.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        access_log=access_log,
        limit_concurrency=limit_concurrency,
    )


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="admin, labeler or client.")],
    name: Annotated[str, typer.Option(help="Who or what uses the key.")],
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    from prefloop.serve.auth import ROLES, create_api_key
    from prefloop.store import Store

    if role not in ROLES:
        raise fail(f"--role must be one of {', '.join(ROLES)}, not {role!r}")
    with Store.open(db) as store, store.session() as session:
        created = create_api_key(session, name=name, role=role)
    if as_json:
        print_json({"key": created.key, "prefix": created.prefix, "name": name, "role": role})
        return
    console.print(f"[bold]{created.key}[/]", highlight=False, soft_wrap=True)
    console.print(
        f"{role} key {created.prefix}… for {name!r}. Store it now: it is not shown again.",
        highlight=False,
    )


@keys_app.command("list")
def keys_list(
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """List the keys (prefix, name, role, revoked) — never the keys themselves."""
    from rich.table import Table

    from prefloop.serve.auth import list_api_keys
    from prefloop.store import Store

    with Store.open(db) as store, store.session(readonly=True) as session:
        rows = [
            {
                "prefix": key.prefix,
                "name": key.name,
                "role": key.role,
                "created_at": key.created_at.isoformat(),
                "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
            }
            for key in list_api_keys(session)
        ]
    if as_json:
        print_json({"keys": rows})
        return
    table = Table("prefix", "name", "role", "created", "revoked")
    for row in rows:
        table.add_row(
            row["prefix"], row["name"], row["role"], row["created_at"], row["revoked_at"] or ""
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    prefix: Annotated[str, typer.Argument(help="The key's prefix, as `keys list` shows it.")],
    db: DbOption = None,
) -> None:
    """Revoke a key; servers stop accepting it within PREFLOOP_KEY_CACHE_SECONDS."""
    from prefloop.serve.auth import revoke_api_key
    from prefloop.store import Store

    with Store.open(db) as store, store.session() as session:
        key = revoke_api_key(session, prefix)
        console.print(f"revoked {key.role} key {key.prefix}… of {key.name!r}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the main prefloop app."""
    app.command("serve")(serve)
    app.add_typer(keys_app)
