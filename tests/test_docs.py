"""The README and docs/ against the code: the command lines they show parse with the real
parser, their links resolve inside the repository and nothing points outside it, the
configuration samples list every key with its default, and the permission tables are the
code's."""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nodeagent.agent import config as agent_config
from nodeagent.agent import permissions as agent_permissions
from nodeagent.api import auth
from nodeagent.cli.main import build_parser
from nodeagent.inventory import auth as inventory_auth
from nodeagent.inventory import config as inventory_config
from nodeagent.labels import config as labels_config
from nodeagent.tomlconfig import flatten

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Languages of fenced blocks that never hold shell commands.
NOT_SHELL = {"toml", "yaml", "yml", "json", "ini", "python", "py", "text"}
# Shell words that end one command and start another, or redirect its output.
SEPARATORS = {"&&", "||", ";", "|"}
REDIRECTS = re.compile(r"^(\d?>>?|<<?|\d?>&\d|&>)")
PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*(?:[=:][A-Z][A-Z0-9_]*)*")
OUTSIDE = re.compile(r"DESIGN\.md|\.\./shared|\bshared/(?:fixtures|reference|context|hooks)|/work/")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*```")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    lines: tuple[str, ...]


def blocks(page: Path) -> Iterator[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    start, lang = -1, ""
    body: list[str] = []
    for i, line in enumerate(lines):
        if FENCE.match(line):
            if start < 0:
                start, lang, body = i, line.strip().strip("`").strip().lower(), []
            else:
                yield Block(page, start + 1, lang, tuple(body))
                start = -1
        elif start >= 0:
            body.append(line)


def prose(page: Path) -> str:
    """The page without its fenced blocks (links in code are not links)."""
    out, inside = [], False
    for line in page.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            inside = not inside
        elif not inside:
            out.append(line)
    return "\n".join(out)


def logical_lines(block: Block) -> Iterator[tuple[int, str]]:
    """Lines with backslash continuations joined, each with its line number."""
    pending, first = "", 0
    for offset, raw in enumerate(block.lines, start=block.line + 1):
        line = raw.strip()
        if not pending:
            first = offset
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield first, pending + line
        pending = ""
    if pending:
        yield first, pending


def substituted(line: str) -> tuple[str, list[str]]:
    """The line with each `$(...)` replaced by a word, and the commands found inside them."""
    inner: list[str] = []
    while m := re.search(r"\$\(([^()]*)\)", line):
        inner.append(m.group(1))
        line = line[: m.start()] + "x" + line[m.end() :]
    return line, inner


def commands(text: str) -> Iterator[list[str]]:
    """The argv after `nodeagent` of every nodeagent command in one shell line."""
    text = text.removeprefix("$ ")
    text, inner = substituted(text)
    for command in inner:
        yield from commands(command)
    try:
        words = shlex.split(text, comments=True)
    except ValueError:
        if re.match(r"(sudo\s+)?(\S*/)?nodeagent\s", text):
            raise
        return  # not shell (a diagram, output), and no nodeagent command
    segment: list[str] = []
    for word in [*words, ";"]:
        if word not in SEPARATORS:
            segment.append(word)
            continue
        while segment and (segment[0] == "sudo" or re.fullmatch(r"\w+=\S*", segment[0])):
            segment.pop(0)
        if segment and segment[0].rsplit("/", 1)[-1] == "nodeagent":
            argv = []
            for arg in segment[1:]:
                if REDIRECTS.match(arg):
                    break
                argv.append(arg)
            yield argv
        segment = []


def concrete(argv: list[str]) -> list[str]:
    """Synopsis and placeholders made into words the parser takes: [optional] groups opened,
    `a|b` alternatives reduced to the first, `...` dropped, NODE, <id> and $VAR made plain."""
    out = []
    for word in argv:
        word = word.replace("[", "").replace("]", "").removesuffix("...")
        if not word:
            continue
        if "|" in word:
            word = word.split("|", 1)[0]
        word = re.sub(r"<[^<>]+>", "x", word)
        word = re.sub(r"\$\{?\w+\}?", "x", word)
        if PLACEHOLDER.fullmatch(word):
            word = "x"
        out.append(word)
    return out


def all_command_lines() -> list[tuple[str, list[str]]]:
    found = []
    for page in PAGES:
        for block in blocks(page):
            if block.lang in NOT_SHELL:
                continue
            for number, line in logical_lines(block):
                for argv in commands(line):
                    where = f"{page.relative_to(REPO)}:{number}"
                    found.append((where, argv))
    return found


COMMAND_LINES = all_command_lines()


def test_the_pages_show_commands() -> None:
    readme = [argv for where, argv in COMMAND_LINES if where.startswith("README.md:")]
    assert len(readme) >= 15
    issue = readme[[a[:2] for a in readme].index(["inventory", "issue-admin-cert"])]
    assert issue[:7] == ["inventory", "issue-admin-cert", "--role", "admin", "--name", "you", "-d"]


@pytest.mark.parametrize(("where", "argv"), COMMAND_LINES, ids=[w for w, _ in COMMAND_LINES])
def test_every_command_line_parses(
    where: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    words = concrete(argv)
    try:
        build_parser(words).parse_args(words)
    except SystemExit as exc:
        message = capsys.readouterr().err.strip().splitlines()
        pytest.fail(f"{where}: nodeagent {shlex.join(argv)}: {message[-1] if message else exc}")


def test_the_helpers_read_synopses_and_pipelines() -> None:
    line = "TOKEN=$(nodeagent admin tokens create --ttl 60) && nodeagent discover -o json | jq ."
    assert list(commands(line)) == [
        ["admin", "tokens", "create", "--ttl", "60"],
        ["discover", "-o", "json"],
    ]
    assert list(commands("systemctl enable --now nodeagent")) == []
    assert concrete(["nodes", "hold|release", "NODE", "[--reason", "TEXT]", "FILE..."]) == [
        "nodes",
        "hold",
        "x",
        "--reason",
        "x",
        "x",
    ]
    assert concrete(["--taint", "KEY=VALUE:EFFECT", "<id>", "$NODE"]) == [
        "--taint",
        "x",
        "x",
        "x",
    ]


def test_nothing_points_outside_the_repository() -> None:
    for page in PAGES:
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
            m = OUTSIDE.search(line)
            assert not m, f"{page.relative_to(REPO)}:{number}: refers outside the repository: {m}"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in prose(page).splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def test_relative_links_resolve_inside_the_repository() -> None:
    checked = 0
    for page in PAGES:
        for target in LINK.findall(prose(page)):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(REPO)}: ({target})"
            assert dest.is_relative_to(REPO), f"{where} leaves the repository"
            assert dest.exists(), f"{where}: no such file"
            if anchor:
                assert dest.suffix == ".md", f"{where}: an anchor into a file that is not markdown"
                assert anchor in anchors(dest), f"{where}: no heading with that anchor"
            checked += 1
    assert checked >= 30


def test_every_page_in_docs_is_linked_from_the_readme() -> None:
    readme = prose(REPO / "README.md")
    linked = {Path(t.partition("#")[0]).name for t in LINK.findall(readme)}
    assert {p.name for p in (REPO / "docs").glob("*.md")} <= linked


def toml_sample(page: str, first_line: str) -> dict[str, Any]:
    """The TOML block of a page that opens with `first_line`."""
    for block in blocks(REPO / "docs" / page):
        if block.lang == "toml" and block.lines and block.lines[0] == first_line:
            return tomllib.loads("\n".join(block.lines))
    raise AssertionError(f"docs/{page}: no toml block opening with {first_line!r}")


def flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _uncommented(path: Path) -> str:
    return re.sub(r"(?m)^#([a-z_]+ = )", r"\1", path.read_text(encoding="utf-8"))


def test_the_agent_toml_sample_is_every_key_with_its_default(tmp_path: Path) -> None:
    """The agent's [labels] and [fabric] tables are labels.toml's, listed in labels.md."""
    sample = toml_sample("agent.md", "# /etc/nodeagent/agent.toml")
    labels = toml_sample("labels.md", "# /etc/nodeagent/labels.toml")
    assert set(flat(sample)) | set(flat(labels)) == set(flatten(agent_config.AgentConfig()))
    assert not set(flat(sample)) & set(flat(labels))
    path = tmp_path / "agent.toml"
    path.write_text(tomllib_dump(sample))
    assert agent_config.load(path, required=True) == agent_config.AgentConfig()
    shipped = tomllib.loads(_uncommented(REPO / "packaging" / "deb" / "agent.toml"))
    both = flat(sample) | flat(labels)
    assert flat(shipped) == both, "docs/agent.md + labels.md and the packaged file differ"


def test_the_inventory_toml_sample_is_every_key_with_its_default(tmp_path: Path) -> None:
    sample = toml_sample("inventory.md", "# /etc/nodeagent/inventory.toml")
    assert set(flat(sample)) == set(flatten(inventory_config.InventoryConfig()))
    path = tmp_path / "inventory.toml"
    path.write_text(tomllib_dump(sample))
    assert inventory_config.load(str(path)) == inventory_config.InventoryConfig()
    shipped = tomllib.loads(_uncommented(REPO / "packaging" / "deb" / "inventory.toml"))
    assert flat(shipped) == flat(sample), "docs/inventory.md and the packaged file differ"


def test_the_labels_toml_sample_is_every_key_with_its_default() -> None:
    sample = toml_sample("labels.md", "# /etc/nodeagent/labels.toml")
    assert set(flat(sample)) == set(flatten(labels_config.Config()))
    assert labels_config.parse(sample, "docs/labels.md") == labels_config.Config()


def tomllib_dump(data: dict[str, Any]) -> str:
    """Enough of a TOML writer for the samples: scalars, lists of strings, nested tables."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(i) for i in v) + "]"
        return repr(v)

    def table(d: dict[str, Any], name: str) -> list[str]:
        lines = [f"[{name}]"] if name else []
        lines += [f"{k} = {value(v)}" for k, v in d.items() if not isinstance(v, dict)]
        for k, v in d.items():
            if isinstance(v, dict):
                lines += table(v, f"{name}.{k}" if name else k)
        return lines

    return "\n".join(table(data, "")) + "\n"


def permission_table(page: str) -> dict[str, list[str]]:
    """method -> [viewer, operator, admin, node] cells of the page's permission table."""
    rows: dict[str, list[str]] = {}
    in_table = False
    for line in prose(REPO / "docs" / page).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|"):
            in_table = False
        elif cells == ["method", "viewer", "operator", "admin", "node"]:
            in_table = True
        elif in_table and not set(cells[0]) <= set("-: "):
            rows[cells[0].strip("`")] = cells[1:]
    assert rows, f"docs/{page}: no permission table"
    return rows


def expected_cells(allowed: frozenset[str] | None, node_word: str) -> list[str]:
    if allowed is None:
        return ["token"] * 4
    cells = ["yes" if role in allowed else "no" for role in auth.ROLES]
    return [*cells, node_word if auth.NODE in allowed else "no"]


def test_the_inventory_permission_table_is_the_codes() -> None:
    table = permission_table("inventory.md")
    expected = {m: expected_cells(a, "own") for m, a in inventory_auth.PERMISSIONS.items()}
    assert table == expected


def test_the_agent_permission_table_is_the_codes() -> None:
    table = permission_table("agent.md")
    expected = {m: expected_cells(a, "yes") for m, a in agent_permissions.PERMISSIONS.items()}
    assert table == expected
