"""Server inventories -> host entries: OpenSSH client config, Ansible (INI and YAML), CSV.

Pure parsing, no database and no file access: the API parses what a client
sent, and the CLI parses the same text to learn which key files to read.
A file that cannot be parsed raises ``InventoryError`` naming the line;
a host that parses but cannot become a server comes back with ``skip`` set
to the reason.

ssh_config is read by the small parser here rather than
``paramiko.SSHConfig``: paramiko resolves one host at a time and expands
tokens and canonical names, and its ``Match exec`` runs commands, which the
API must never do for text a client sent.  Semantics follow OpenSSH: Host
blocks with several patterns, case-insensitive keywords, ``Key value`` and
``Key=value``, ``#`` comments, and for each option the first value that
applies wins.  Only concrete aliases become servers; wildcard and negated
patterns are skipped with a reason.  ``Match`` blocks are conditional and
are ignored; ``Include`` is not followed (it names a path).
"""

from __future__ import annotations

import csv
import io
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from remora.errors import ValidationError

FORMATS = ("ssh_config", "ansible", "csv")
FORMAT_ALIASES = {"ssh_config": "ssh_config", "ssh-config": "ssh_config", "ansible": "ansible", "csv": "csv"}
MAX_HOSTS = 10000  # hosts in one inventory (after range expansion)
MAX_GROUP_DEPTH = 50
CSV_COLUMNS = ("name", "hostname", "port", "user", "tags", "auth_type", "key_file", "password", "pem_file", "jump_server")


class InventoryError(ValidationError):
    """The inventory text cannot be parsed; the message names the line (or YAML path)."""

    code = "INVENTORY_ERROR"


@dataclass
class Host:
    """One host of an inventory: the server fields it names, and where it was found."""

    name: str
    line: int = 0
    hostname: str = ""
    port: int | None = None
    user: str | None = None
    tags: list[str] = field(default_factory=list)
    identity_file: str | None = None  # a path on the client: only the CLI reads it
    auth_type: str | None = None
    password: str | None = field(default=None, repr=False)
    pem_file: str | None = None
    jump: str | None = None  # the server (an inventory host or an existing server's name) to connect through
    skip: str | None = None  # why this entry does not become a server

    def server_body(self, extra_tags: list[str], private_key: str | None = None) -> dict[str, Any]:
        """The server fields (as POST /servers takes them) this host sets."""
        body: dict[str, Any] = {"name": self.name, "hostname": self.hostname or self.name}
        if self.port is not None:
            body["port"] = self.port
        if self.user is not None:
            body["user"] = self.user
        body["tags"] = _unique([*self.tags, *extra_tags])
        if private_key:
            body["auth_type"] = "key"
            body["private_key"] = private_key
        elif self.password:
            body["auth_type"] = "password"
            body["password"] = self.password
        elif self.pem_file:
            body["auth_type"] = "pem"
            body["pem_file"] = self.pem_file
        if self.auth_type:
            body["auth_type"] = self.auth_type
        if self.jump:
            body["jump_server"] = self.jump
        return body


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))


def _error(line: int | str, message: str) -> InventoryError:
    where = f"line {line}" if isinstance(line, int) else line
    return InventoryError(f"{where}: {message}", details={"content": f"{where}: {message}"})


def normalize_format(fmt: str) -> str:
    try:
        return FORMAT_ALIASES[fmt.strip().lower()]
    except KeyError:
        raise ValidationError(
            f"unknown inventory format {fmt!r} (expected ssh-config, ansible or csv)", details={"format": "ssh_config, ansible or csv"}
        ) from None


def parse(fmt: str, text: str) -> list[Host]:
    """The hosts of an inventory in file order, one entry per name (skipped ones included)."""
    kind = normalize_format(fmt)
    if kind == "ssh_config":
        hosts = parse_ssh_config(text)
    elif kind == "csv":
        hosts = parse_csv(text)
    elif _looks_like_yaml(text):
        hosts = parse_ansible_yaml(text)
    else:
        hosts = parse_ansible_ini(text)
    if len(hosts) > MAX_HOSTS:
        raise InventoryError(f"too many hosts ({len(hosts)}; at most {MAX_HOSTS} per import)", details={"content": "too many hosts"})
    return hosts


def _port(value: Any, line: int | str) -> int:
    text = str(value).strip()
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise _error(line, f"port {text!r} is not a number from 1 to 65535")
    return int(text)


# -- ssh_config ----------------------------------------------------------------

_SSH_LINE = re.compile(r"^([A-Za-z][A-Za-z0-9]*)(?:\s*=\s*|\s+)(.*)$")


@dataclass
class _Block:
    patterns: list[str]  # empty: options before the first Host (apply to every host)
    options: dict[str, tuple[str, int]] = field(default_factory=dict)


def _pattern_re(pattern: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern) + r"\Z", re.IGNORECASE)


def _applies(block: _Block, alias: str) -> bool:
    if not block.patterns:
        return True
    matched = False
    for pattern in block.patterns:
        negated = pattern.startswith("!")
        if _pattern_re(pattern[1:] if negated else pattern).match(alias):
            if negated:
                return False
            matched = True
    return matched


def parse_ssh_config(text: str) -> list[Host]:
    blocks: list[_Block] = [_Block([])]
    current: _Block | None = blocks[0]
    aliases: dict[str, int] = {}  # alias -> line of its first Host line
    skipped: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _SSH_LINE.match(line)
        if not match or not match.group(2).strip():
            raise _error(number, f"expected 'Keyword value' or 'Keyword=value', got {_excerpt(line)}")
        keyword, value = match.group(1).lower(), match.group(2).strip()
        try:
            args = shlex.split(value, comments=True)
        except ValueError as exc:
            raise _error(number, f"{match.group(1)}: {exc}") from None
        if not args:
            raise _error(number, f"{match.group(1)} needs a value")
        if keyword == "host":
            current = _Block(args)
            blocks.append(current)
            for pattern in args:
                if not pattern:
                    raise _error(number, "Host names an empty pattern")
                if any(c in pattern for c in "*?!"):
                    skipped.setdefault(pattern, "wildcard pattern: its options apply to matching hosts; it is not a server")
                else:
                    aliases.setdefault(pattern, number)
        elif keyword == "match":
            current = None  # conditional on things only the connecting client knows
        elif keyword == "include":
            skipped.setdefault(f"Include {value}", "Include is not followed (paste the included file into the inventory)")
        elif current is not None:
            current.options.setdefault(keyword, (" ".join(args) if keyword == "proxyjump" else args[0], number))
    hosts = [Host(name=pattern, skip=reason) for pattern, reason in skipped.items()]
    for alias, number in aliases.items():
        options: dict[str, tuple[str, int]] = {}
        for block in blocks:
            if _applies(block, alias):
                for key, item in block.options.items():
                    options.setdefault(key, item)
        host = Host(name=alias, line=number)
        hostname = options.get("hostname", (alias, number))[0]
        host.hostname = hostname.replace("%h", alias).replace("%%", "%")
        if "port" in options:
            host.port = _port(options["port"][0], options["port"][1])
        if "user" in options:
            host.user = options["user"][0]
        if "identityfile" in options and options["identityfile"][0].lower() != "none":
            host.identity_file = options["identityfile"][0]
        if "proxyjump" in options and options["proxyjump"][0].lower() != "none":
            _set_jump(host, options["proxyjump"][0], "ProxyJump")
        hosts.append(host)
    return hosts


def _set_jump(host: Host, value: str, what: str) -> None:
    """A ProxyJump that names one host alias becomes the host's jump server; other forms skip the host."""
    value = value.strip()
    if "," in value:
        host.skip = (
            f"{what} {value}: several hops in one line are not imported "
            "(give each hop its own Host with a one-hop ProxyJump to the hop before)"
        )
    elif "@" in value or ":" in value or "/" in value or " " in value:
        host.skip = f"{what} {value}: name a Host of this inventory or an existing server (not user@host:port)"
    elif value == host.name:
        host.skip = f"{what} {value}: the host cannot jump through itself"
    else:
        host.jump = value


def _excerpt(line: str) -> str:
    return repr(line if len(line) <= 60 else line[:57] + "...")


# -- Ansible ---------------------------------------------------------------------

_RANGE = re.compile(r"\[([0-9]+|[a-z]):([0-9]+|[a-z])(?::([0-9]+))?\]")


def _expand(pattern: str, where: int | str) -> list[str]:
    """Ansible host ranges: ``web[01:03]`` -> web01, web02, web03; ``db-[a:c]`` -> db-a, db-b, db-c."""
    match = _RANGE.search(pattern)
    if not match:
        return [pattern]
    start, end, step_text = match.group(1), match.group(2), match.group(3)
    step = int(step_text) if step_text else 1
    if step < 1 or start.isdigit() != end.isdigit():
        raise _error(where, f"bad host range in {pattern!r}")
    if start.isdigit():
        width = len(start) if start.startswith("0") and len(start) > 1 else 0
        if int(end) - int(start) > MAX_HOSTS:
            raise _error(where, f"host range in {pattern!r} is larger than {MAX_HOSTS}")
        values = [str(i).zfill(width) for i in range(int(start), int(end) + 1, step)]
    else:
        values = [chr(i) for i in range(ord(start), ord(end) + 1, step)]
    if not values:
        raise _error(where, f"empty host range in {pattern!r}")
    head, tail = pattern[: match.start()], pattern[match.end() :]
    result: list[str] = []
    for value in values:
        result += _expand(head + value + tail, where)
        if len(result) > MAX_HOSTS:
            raise _error(where, f"host range in {pattern!r} is larger than {MAX_HOSTS}")
    return result


def _looks_like_yaml(text: str) -> bool:
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith(("#", ";")) else ""
        if not line:
            continue
        return line.startswith(("---", "{", "- ")) or re.match(r"^[^\s=\[]+:(\s|$)", line) is not None
    return False


@dataclass
class _Inventory:
    """Groups and hosts as Ansible sees them, before variables are resolved."""

    group_vars: dict[str, dict[str, Any]] = field(default_factory=dict)
    children: dict[str, list[str]] = field(default_factory=dict)
    members: dict[str, list[str]] = field(default_factory=dict)  # group -> hosts directly in it
    host_vars: dict[str, dict[str, Any]] = field(default_factory=dict)
    host_line: dict[str, int] = field(default_factory=dict)
    visits: int = 0  # groups walked (YAML aliases can repeat a subtree)

    def add_host(self, name: str, group: str, variables: dict[str, Any], line: int) -> None:
        self.host_vars.setdefault(name, {}).update(variables)
        self.host_line.setdefault(name, line)
        self.group(group)
        if name not in self.members[group]:
            self.members[group].append(name)

    def group(self, name: str) -> None:
        self.group_vars.setdefault(name, {})
        self.children.setdefault(name, [])
        self.members.setdefault(name, [])

    def hosts(self) -> list[Host]:
        parents: dict[str, set[str]] = {}
        for group, kids in self.children.items():
            for kid in kids:
                parents.setdefault(kid, set()).add(group)

        def ancestors(group: str) -> list[str]:
            """The group and every group above it, outermost first (their variables apply in this order)."""
            seen: dict[str, int] = {}
            stack = [(group, 0)]
            while stack:
                name, depth = stack.pop()
                if depth > MAX_GROUP_DEPTH:
                    raise _error(f"group {group}", "groups nest too deep (a children loop?)")
                if seen.get(name, -1) >= depth:
                    continue
                seen[name] = depth
                stack += [(p, depth + 1) for p in parents.get(name, ())]
            return sorted(seen, key=lambda g: (-seen[g], g))

        direct: dict[str, list[str]] = {}
        for group, names in self.members.items():
            for name in names:
                direct.setdefault(name, []).append(group)
        result = []
        for name, groups in direct.items():
            chain: list[str] = []
            for group in groups:
                chain += [g for g in ancestors(group) if g not in chain]
            chain.sort(key=lambda g: len(ancestors(g)))
            variables: dict[str, Any] = {}
            for group in ["all", *chain]:
                variables.update(self.group_vars.get(group, {}))
            variables.update(self.host_vars.get(name, {}))
            tags = [g for g in chain if g not in ("all", "ungrouped")]
            result.append(_ansible_host(name, self.host_line.get(name, 0), variables, tags))
        return result


def _ansible_host(name: str, line: int, variables: dict[str, Any], tags: list[str]) -> Host:
    where: int | str = line or f"host {name}"

    def var(*names: str) -> str | None:
        for key in names:
            value = variables.get(key)
            if value is not None and str(value).strip():
                return str(value).strip()
        return None

    host = Host(name=name, line=line, tags=tags)
    host.hostname = var("ansible_host", "ansible_ssh_host") or name
    port = var("ansible_port", "ansible_ssh_port")
    if port is not None:
        host.port = _port(port, where)
    host.user = var("ansible_user", "ansible_ssh_user")
    host.identity_file = var("ansible_ssh_private_key_file", "ansible_private_key_file")
    host.password = var("ansible_password", "ansible_ssh_pass")
    jump = _ansible_jump(" ".join(v for v in (var("ansible_ssh_common_args"), var("ansible_ssh_extra_args")) if v))
    if jump:
        _set_jump(host, jump, "ProxyJump")
    connection = var("ansible_connection")
    if connection == "local":
        host.skip = "ansible_connection=local (use the built-in local server)"
    elif connection not in (None, "ssh", "smart", "paramiko"):
        host.skip = f"ansible_connection={connection} is not SSH"
    return host


def _ansible_jump(args: str) -> str | None:
    """The ProxyJump of ssh arguments (``-J HOST``, ``-JHOST`` or ``-o ProxyJump=HOST``), if any."""
    try:
        words = shlex.split(args)
    except ValueError:
        return None
    for i, word in enumerate(words):
        if word == "-J" and i + 1 < len(words):
            return words[i + 1]
        if word.startswith("-J") and len(word) > 2:
            return word[2:]
        option = word[2:] if word.startswith("-o") and len(word) > 2 else words[i + 1] if word == "-o" and i + 1 < len(words) else ""
        key, _, value = option.replace(" ", "=", 1).partition("=")
        if key.lower() == "proxyjump" and value.strip().lower() != "none":
            return value.strip()
    return None


_INI_SECTION = re.compile(r"^\[([^\[\]:\s]+)(?::(vars|children))?\]$")


def parse_ansible_ini(text: str) -> list[Host]:
    inv = _Inventory()
    inv.group("all")
    group, kind = "ungrouped", "hosts"
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            match = _INI_SECTION.match(line)
            if not match:
                raise _error(number, f"a section header is [group], [group:vars] or [group:children], got {_excerpt(line)}")
            group, kind = match.group(1), match.group(2) or "hosts"
            inv.group(group)
            continue
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError as exc:
            raise _error(number, f"{exc} in {_excerpt(line)}") from None
        if not tokens:
            continue
        if kind == "children":
            if len(tokens) != 1:
                raise _error(number, f"[{group}:children] lists one group per line, got {_excerpt(line)}")
            inv.group(tokens[0])
            if tokens[0] not in inv.children[group]:
                inv.children[group].append(tokens[0])
            continue
        if kind == "vars":
            key, eq, value = line.partition("=")
            if not eq or not key.strip():
                raise _error(number, f"[{group}:vars] holds key=value lines, got {_excerpt(line)}")
            inv.group_vars[group][key.strip()] = value.strip().strip("'\"")
            continue
        variables: dict[str, Any] = {}
        for token in tokens[1:]:
            key, eq, value = token.partition("=")
            if not eq or not key:
                raise _error(number, f"expected key=value after the host name, got {token!r}")
            variables[key] = value
        pattern = tokens[0]
        if not pattern or "=" in pattern:
            raise _error(number, f"a host line starts with the host name, got {pattern!r}")
        port = re.match(r"^([^:\[\]]+):([0-9]+)$", pattern)
        if port:
            pattern = port.group(1)
            variables.setdefault("ansible_port", port.group(2))
        for name in _expand(pattern, number):
            inv.add_host(name, group, variables, number)
    return inv.hosts()


def parse_ansible_yaml(text: str) -> list[Host]:
    from remora.jobfile import load_data

    try:
        data = load_data(text)
    except ValueError as exc:
        raise InventoryError(str(exc), details={"content": str(exc)}) from None
    if data is None:
        return []
    if not isinstance(data, dict):
        raise _error("line 1", "an Ansible YAML inventory is a mapping of groups (e.g. all: {hosts: ..., children: ...})")
    inv = _Inventory()
    inv.group("all")
    for name, body in data.items():
        _yaml_group(inv, str(name), body, (str(name),))
    return inv.hosts()


def _mapping(value: Any, path: str, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _error(path, f"{what} must be a mapping, got {type(value).__name__}")
    return {str(k): v for k, v in value.items()}


def _yaml_group(inv: _Inventory, name: str, body: Any, stack: tuple[str, ...]) -> None:
    path = f"group {name}"
    inv.visits += 1
    if len(stack) > MAX_GROUP_DEPTH or inv.visits > MAX_HOSTS:
        raise _error(path, "groups nest too deep or repeat too often")
    inv.group(name)
    group = _mapping(body, path, "a group")
    unknown = sorted(set(group) - {"hosts", "vars", "children"})
    if unknown:
        raise _error(path, f"unknown key {unknown[0]!r} (a group has hosts, vars and children)")
    inv.group_vars[name].update(_mapping(group.get("vars"), path, "vars"))
    for pattern, variables in _mapping(group.get("hosts"), path, "hosts").items():
        host_vars = _mapping(variables, f"{path}, host {pattern}", "host variables")
        for host in _expand(pattern, path):
            inv.add_host(host, name, host_vars, 0)
    for child, child_body in _mapping(group.get("children"), path, "children").items():
        if child not in inv.children[name]:
            inv.children[name].append(child)
        if child in stack:
            raise _error(path, f"children loop: {' > '.join([*stack, child])}")
        _yaml_group(inv, child, child_body, (*stack, child))


# -- CSV -------------------------------------------------------------------------


def parse_csv(text: str) -> list[Host]:
    """A header row (columns in ``CSV_COLUMNS``, ``name`` required), then one server per row."""
    reader = csv.reader(io.StringIO(text))
    hosts: list[Host] = []
    seen: dict[str, int] = {}
    header: list[str] | None = None
    try:
        for row in reader:
            number = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [cell.strip().lower() for cell in row]
                unknown = [c for c in header if c not in CSV_COLUMNS]
                if unknown:
                    raise _error(number, f"unknown column {unknown[0]!r} (columns: {', '.join(CSV_COLUMNS)})")
                if "name" not in header:
                    raise _error(number, "the header needs a name column")
                if len(set(header)) != len(header):
                    raise _error(number, "a column appears twice in the header")
                continue
            if len(row) != len(header):
                raise _error(number, f"expected {len(header)} fields like the header, got {len(row)}")
            cells = {key: cell.strip() for key, cell in zip(header, row, strict=True)}
            name = cells["name"]
            if not name:
                raise _error(number, "name is empty")
            if name in seen:
                hosts.append(Host(name=name, line=number, skip=f"the name appears again on line {number} (first on line {seen[name]})"))
                continue
            seen[name] = number
            host = Host(name=name, line=number, hostname=cells.get("hostname") or name)
            if cells.get("port"):
                host.port = _port(cells["port"], number)
            host.user = cells.get("user") or None
            host.tags = _unique([t.strip() for t in cells.get("tags", "").split(";")])
            host.auth_type = cells.get("auth_type") or None
            host.identity_file = cells.get("key_file") or None
            host.password = cells.get("password") or None
            host.pem_file = cells.get("pem_file") or None
            if cells.get("jump_server"):
                _set_jump(host, cells["jump_server"], "jump_server")
            hosts.append(host)
    except csv.Error as exc:
        raise _error(reader.line_num, str(exc)) from None
    if header is None and text.strip():
        raise _error(1, "no header row")
    return hosts
