"""The ``prefloop`` command line. Each area registers its commands from its own module."""

from __future__ import annotations

import typer

from prefloop.cli import arms, bandit, cai, data, demo, llm, reward, serve, train
from prefloop.cli._output import run_app

app = typer.Typer(
    name="prefloop",
    help="Learn from human feedback on LLM outputs: collect feedback, fit reward models, "
    "pick the best prompt online, fine-tune open models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for _module in (data, arms, reward, bandit, llm, serve, train, cai, demo):
    _module.register(app)


def main() -> None:
    run_app(app)
