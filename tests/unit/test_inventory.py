"""Inventory parsers: ssh_config semantics like OpenSSH, Ansible INI/YAML groups and variables, CSV; errors name the line."""

from __future__ import annotations

import hypothesis
import pytest
from hypothesis import strategies as st

from remora import inventory
from remora.inventory import InventoryError


def by_name(hosts: list[inventory.Host]) -> dict[str, inventory.Host]:
    return {h.name: h for h in hosts}


def test_ssh_config_blocks_aliases_equals_comments_and_first_value_wins():
    hosts = by_name(
        inventory.parse(
            "ssh-config",
            """
# a comment
Host web1 web2   # two aliases
  HOSTNAME %h.example.com
  user=deploy
  Port 2200
  Port 2300
Host db
  HostName "10.0.0.5"
  IdentityFile ~/.ssh/db_key
Host *.example.com !bastion.example.com
  User nobody
Host *
  User root
  Port 22
  IdentityFile ~/.ssh/id_default
Match host db
  User matched
""",
        )
    )
    assert (hosts["web1"].hostname, hosts["web1"].user, hosts["web1"].port) == ("web1.example.com", "deploy", 2200)
    assert hosts["web2"].hostname == "web2.example.com" and hosts["web2"].identity_file == "~/.ssh/id_default"
    assert (hosts["db"].hostname, hosts["db"].user, hosts["db"].port, hosts["db"].identity_file) == (
        "10.0.0.5",
        "root",
        22,
        "~/.ssh/db_key",
    )
    for pattern in ("*.example.com", "!bastion.example.com", "*"):
        assert "wildcard" in (hosts[pattern].skip or "")
    assert [h.name for h in inventory.parse("ssh_config", "Host a\nHost a\n")] == ["a"]


def test_ssh_config_proxyjump_becomes_the_jump_server_and_none_is_not_a_jump():
    text = (
        "Host inner\n ProxyJump bastion\nHost direct\n ProxyJump none\nHost two\n ProxyJump a,b\n"
        "Host spelled\n ProxyJump me@bastion:2222\nHost self\n ProxyJump self\n"
    )
    hosts = by_name(inventory.parse("ssh_config", text))
    assert hosts["inner"].skip is None and hosts["inner"].jump == "bastion"
    assert hosts["inner"].server_body([])["jump_server"] == "bastion"
    assert hosts["direct"].skip is None and hosts["direct"].jump is None and "jump_server" not in hosts["direct"].server_body([])
    assert "several hops" in (hosts["two"].skip or "")
    assert "not user@host:port" in (hosts["spelled"].skip or "")
    assert "cannot jump through itself" in (hosts["self"].skip or "")


def test_ansible_ssh_args_and_csv_name_the_jump_server():
    text = '[web]\nw1 ansible_ssh_common_args="-J bastion"\nw2 ansible_ssh_extra_args="-o ProxyJump=b2"\nw3\n'
    hosts = by_name(inventory.parse("ansible", text))
    assert (hosts["w1"].jump, hosts["w2"].jump, hosts["w3"].jump) == ("bastion", "b2", None)
    assert by_name(inventory.parse("csv", "name,jump_server\na,b\nc,\n"))["a"].jump == "b"


@pytest.mark.parametrize(
    ("fmt", "text", "where"),
    [
        ("ssh_config", 'Host ok\n  HostName x\n{"json": true}\n', "line 3"),
        ("ssh_config", "Host ok\n  Port twenty-two\n", "line 2"),
        ("ssh_config", "Host ok\n  User 'unclosed\n", "line 2"),
        ("ansible", "[web]\nweb1\n[broken\n", "line 3"),
        ("ansible", "[web]\nweb1 ansible_port\n", "line 2"),
        ("ansible", "all:\n  hosts:\n    a: [1\n", "line 4"),
        ("ansible", "all:\n  hosts: [a, b]\n", "group all"),
        ("ansible", "a: &a {children: {b: *a}}\n", "group b"),
        ("csv", "name,address\n", "line 1"),
        ("csv", "name,port\nweb1,22\nweb2,22,extra\n", "line 3"),
        ("csv", "name,port\nweb1,http\n", "line 2"),
    ],
)
def test_garbage_is_an_error_naming_the_line(fmt, text, where):
    with pytest.raises(InventoryError) as caught:
        inventory.parse(fmt, text)
    assert caught.value.message.startswith(f"{where}:"), caught.value.message


def test_ansible_ini_groups_children_vars_ranges_and_ports():
    hosts = by_name(
        inventory.parse(
            "ansible",
            """
lonely ansible_host=192.0.2.9
[web]
web[01:03].example.com ansible_user=deploy
[db]
db1:2222 ansible_ssh_private_key_file=keys/db.pem
[prod:children]
web
db
[prod:vars]
ansible_user=root
ansible_port=2200
""",
        )
    )
    assert sorted(hosts) == ["db1", "lonely", "web01.example.com", "web02.example.com", "web03.example.com"]
    assert hosts["lonely"].tags == [] and hosts["lonely"].hostname == "192.0.2.9"
    web = hosts["web02.example.com"]
    assert (web.tags, web.user, web.port) == (["prod", "web"], "deploy", 2200)
    assert (hosts["db1"].tags, hosts["db1"].user, hosts["db1"].port) == (["prod", "db"], "root", 2222)
    assert hosts["db1"].identity_file == "keys/db.pem"


def test_ansible_yaml_groups_become_tags_and_host_vars_win():
    hosts = by_name(
        inventory.parse(
            "ansible",
            """
all:
  vars: {ansible_user: admin}
  hosts:
    solo: {ansible_host: 192.0.2.1, ansible_port: 2201}
  children:
    web:
      hosts:
        w[1:2]:
      children:
        canary:
          hosts:
            w3: {ansible_user: canary}
    db:
      vars: {ansible_user: pg}
      hosts:
        d1:
        local1: {ansible_connection: local}
""",
        )
    )
    assert (hosts["solo"].hostname, hosts["solo"].port, hosts["solo"].tags) == ("192.0.2.1", 2201, [])
    assert (hosts["w1"].tags, hosts["w1"].user) == (["web"], "admin")
    assert (hosts["w3"].tags, hosts["w3"].user) == (["web", "canary"], "canary")
    assert (hosts["d1"].tags, hosts["d1"].user) == (["db"], "pg")
    assert "local" in (hosts["local1"].skip or "")


def test_csv_header_columns_tags_and_duplicate_rows():
    hosts = inventory.parse(
        "csv",
        'name,hostname,port,user,tags,auth_type,password\nweb1,10.0.0.1,2222,deploy,"web; eu",,\n'
        "db1,,,postgres,,password,pw-1\nweb1,10.0.0.9,22,x,,,\n",
    )
    assert [(h.name, h.hostname, h.port, h.user, h.tags) for h in hosts[:2]] == [
        ("web1", "10.0.0.1", 2222, "deploy", ["web", "eu"]),
        ("db1", "db1", None, "postgres", []),
    ]
    assert hosts[1].server_body([])["auth_type"] == "password" and "pw-1" not in repr(hosts[1])
    assert hosts[2].skip == "the name appears again on line 4 (first on line 2)"


PIECES = ["Host", "host=", "*", "!", "[web]", "[g:vars]", "[g:children]", "all:", "  hosts:", "    h1:", "  children:", "- x",
          "&a", "*a", "{", "}", "[1:3]", "[a:", "=", "ansible_port=", "99999", "'", '"', ",", ";", "name,port", "\n", " ", "#", "%h"]  # fmt: skip


@hypothesis.settings(max_examples=400, deadline=None, derandomize=True)
@hypothesis.given(
    fmt=st.sampled_from(["ssh_config", "ansible", "csv"]),
    text=st.one_of(st.text(max_size=200), st.lists(st.sampled_from(PIECES), max_size=40).map("".join)),
)
def test_any_text_parses_or_is_an_inventory_error(fmt, text):
    try:
        hosts = inventory.parse(fmt, text)
    except InventoryError as exc:
        assert exc.message and exc.details
        return
    for host in hosts:
        assert host.name and (host.skip or host.port is None or 1 <= host.port <= 65535)
