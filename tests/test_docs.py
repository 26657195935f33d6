"""The docs' shell blocks run: README.md and docs/*.md, as a reader would paste them.

Which blocks: every fenced block marked ``bash``, ``sh``, ``shell`` or ``console`` that talks
to prefloop (it mentions ``prefloop``, ``curl`` or ``make``). Each document's blocks run in
order as one bash script (``set -e -o pipefail``), so a block may use what an earlier block of
the same document made (a store, a running server, a variable), in a fresh temporary folder
with:

- ``prefloop`` and ``.venv/bin/prefloop`` the package under test, ``../shared`` the shared data;
- a line that starts ``prefloop serve`` (or ``.venv/bin/prefloop serve``) run in the background
  on a free port until the script ends; the script goes on once ``/healthz`` answers;
- ``localhost:8000``, ``127.0.0.1:8000`` and ``--port 8000`` pointed at that port, and the
  placeholder key ``pfk_…`` replaced by the key the server accepts (``PREFLOOP_ADMIN_KEY``).

**The convention for a block that must not run** (it takes minutes, needs the network or a
server of yours, or reads files of your own): put an HTML comment on the line before its
opening fence, saying why::

    <!-- docs-test: skip needs an OpenAI-compatible server at localhost:11434 -->
    ```bash
    PREFLOOP_LLM_BASE_URL=http://localhost:11434/v1 prefloop demo
    ```

The comment does not show on a rendered page. Each skipped block is reported as a skipped test
with that reason (``pytest -ra`` prints it). A block without the comment must run and succeed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.live_server import free_port

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ADMIN_KEY = "pfk_docs-test-admin-key-0123456789"
_FENCE = re.compile(r"^```(bash|sh|shell|console)[ \t]*\n(.*?)^```", re.S | re.M)
_SKIP = re.compile(r"<!--\s*docs-test:\s*skip\s+(.*?)\s*-->\s*$")
_TALKS_TO_PREFLOOP = re.compile(r"\bprefloop\b|\bcurl\b|^\s*make\b", re.M)
_SERVE = re.compile(r"^(\s*)((?:\.venv/bin/)?prefloop serve\b[^#\n]*)(#.*)?$", re.M)


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int
    code: str
    skip: str | None
    """Why the block must not run (its ``docs-test: skip`` comment), or None."""

    @property
    def name(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    text = doc.read_text(encoding="utf-8")
    found = []
    for match in _FENCE.finditer(text):
        code = match.group(2)
        if not _TALKS_TO_PREFLOOP.search(code):
            continue
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = _SKIP.search(before)
        line = text[: match.start()].count("\n") + 1
        found.append(Block(doc, line, code, marker.group(1) if marker else None))
    return found


ALL = [block for doc in DOCS for block in blocks(doc)]
RUNNABLE_DOCS = sorted({block.doc for block in ALL if block.skip is None})


def script(doc: Path, port: int) -> str:
    """The document's runnable blocks as one bash script (see the module's docstring)."""
    parts = [
        "set -e -o pipefail",
        "SERVE_PIDS=''",
        "trap 'for p in $SERVE_PIDS; do kill $p 2>/dev/null || true; done; wait' EXIT",
    ]
    for block in blocks(doc):
        if block.skip is not None:
            continue
        code = block.code.replace("pfk_…", ADMIN_KEY)
        code = re.sub(r"(localhost|127\.0\.0\.1):8000\b", f"127.0.0.1:{port}", code)
        code = re.sub(r"--port 8000\b", f"--port {port}", code)
        code = _SERVE.sub(
            lambda m: (
                f"{m.group(1)}{m.group(2).rstrip()} --no-access-log > serve-{port}.log 2>&1 &\n"
                f'SERVE_PIDS="$SERVE_PIDS $!"\n'
                f"for _ in $(seq 600); do curl -sf 127.0.0.1:{port}/healthz > /dev/null && break;"
                " sleep 0.1; done\n"
                f"curl -sf 127.0.0.1:{port}/healthz > /dev/null"
            ),
            code,
        )
        parts.append(f"# --- {block.name}\n{code}")
    return "\n".join(parts) + "\n"


@pytest.mark.parametrize("block", [b for b in ALL if b.skip is not None], ids=lambda b: b.name)
def test_a_marked_block_is_skipped_with_its_reason(block: Block) -> None:
    pytest.skip(f"{block.name}: {block.skip}")


@pytest.mark.parametrize("doc", RUNNABLE_DOCS, ids=lambda d: str(d.relative_to(ROOT)))
def test_the_shell_blocks_of_a_document_run(doc: Path, tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        message = "the docs' examples use curl: apt-get install curl"
        if os.environ.get("PREFLOOP_REQUIRE_POSTGRES") == "1":  # CI installs it: never skip
            pytest.fail(message)
        pytest.skip(message)
    work = tmp_path / "work"
    work.mkdir()
    (work / ".venv").symlink_to(sys.prefix)
    shared = ROOT.parent / "shared"
    if shared.exists():
        (tmp_path / "shared").symlink_to(shared)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PREFLOOP_") or key.startswith("PREFLOOP_TEST_")
    }
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")])),
        PREFLOOP_ADMIN_KEY=ADMIN_KEY,
    )
    body = script(doc, free_port())
    (work / "docs-test.sh").write_text(body)
    run = subprocess.run(
        ["bash", "docs-test.sh"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    logs = "".join(f"\n--- {p.name}\n{p.read_text()[-3000:]}" for p in work.glob("serve-*.log"))
    assert run.returncode == 0, (
        f"a shell block of {doc.relative_to(ROOT)} failed (exit {run.returncode}).\n"
        f"script:\n{body}\nstdout:\n{run.stdout[-5000:]}\nstderr:\n{run.stderr[-5000:]}{logs}"
    )


def test_every_document_is_found_and_the_marker_is_read() -> None:
    assert ROOT / "docs" / "serve.md" in RUNNABLE_DOCS, "the service's examples run"
    marked = Block(ROOT / "x.md", 1, "prefloop demo", "slow")
    assert marked.skip == "slow"
    assert (
        _SKIP.search("<!-- docs-test: skip needs the network -->").group(1) == "needs the network"
    )  # type: ignore[union-attr]
