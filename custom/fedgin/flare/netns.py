"""Hosts on one machine: one Linux network namespace per participant, on a private virtual LAN.

``Hosts`` gives every participant (server, each site, each admin) its own network stack with one address on a
bridge that lives in a namespace of its own (``<tag>-lan``), so nothing is added to the machine's own network:
no interface, route or address outside the namespaces, and no traffic leaves the machine. Each host resolves the
names it is given (the server's FQDN) through its own hosts file (``/etc/netns/<namespace>/hosts``, which
``ip netns exec`` mounts over ``/etc/hosts`` for that process only). ``close`` kills every process in the
namespaces, then removes them (with them the links and the bridge) and their hosts files.

Needs Linux, ``ip`` (iproute2) and the rights to create namespaces (root, or CAP_SYS_ADMIN + CAP_NET_ADMIN):
``unavailable()`` says why not, for a test to skip with that reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

__all__ = ["Hosts", "HostsError", "unavailable", "NETNS_ETC"]

NETNS_ETC = Path("/etc/netns")  # where ``ip netns exec`` finds a namespace's own /etc files


class HostsError(RuntimeError):
    pass


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and result.returncode != 0:
        raise HostsError(f"`ip {' '.join(args)}` failed ({result.returncode}): {result.stderr.strip()}")
    return result


def unavailable() -> str | None:
    """Why network namespaces cannot be made here (``None`` if they can): probes by making and removing one."""
    if not Path("/proc/self/ns/net").exists():
        return "no Linux network namespaces on this system"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = f"fgprobe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace (needs root or CAP_SYS_ADMIN): {made.stderr.strip()}"
    try:
        link = _ip("-n", probe, "link", "add", "fgp0", "type", "veth", "peer", "name", "fgp1", check=False)
        if link.returncode != 0:
            return f"cannot create a virtual link in a namespace: {link.stderr.strip()}"
        if not os.access(NETNS_ETC.parent, os.W_OK):
            return f"cannot write a namespace's hosts file under {NETNS_ETC}"
    finally:
        _ip("netns", "del", probe, check=False)
    return None


class Hosts:
    """Namespaces ``<tag>-<host>`` on a private /24, each with ``eth0`` on a bridge in ``<tag>-lan``.

    Args:
        hosts: short host names (``server``, ``site-ct``, ...), at most 12 characters with the tag.
        names: ``{fqdn: host}``: what every host's hosts file resolves (the server's FQDN to its address).
        subnet: the first three octets of the private /24 (addresses .2, .3, ... in the order of ``hosts``).
        tag: namespace prefix (default ``fg`` + 4 random hex digits), so that runs never collide.

    Use as a context manager (``with Hosts(...) as net:``): ``close`` runs whatever happens inside.
    """

    def __init__(self, hosts: list[str], names: dict[str, str] | None = None, subnet: str = "10.213.7",
                 tag: str | None = None):
        if len(set(hosts)) != len(hosts) or not hosts:
            raise ValueError(f"hosts must be distinct and not empty: {hosts}")
        if len(hosts) > 250:
            raise ValueError("at most 250 hosts on one /24")
        self.tag = tag or f"fg{uuid.uuid4().hex[:4]}"
        self.hosts = list(hosts)
        self.address = {h: f"{subnet}.{i + 2}" for i, h in enumerate(self.hosts)}
        unknown = {h for h in (names or {}).values() if h not in self.address}
        if unknown:
            raise ValueError(f"names resolve to unknown hosts {sorted(unknown)}")
        self.names = dict(names or {})
        self.created: list[str] = []
        self._made_etc = False

    def ns(self, host: str) -> str:
        return f"{self.tag}-{host}"

    @property
    def lan(self) -> str:
        return f"{self.tag}-lan"

    def __enter__(self) -> "Hosts":
        try:
            self.create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def create(self) -> None:
        """Make the LAN namespace with its bridge, then each host's namespace, link, address and hosts file."""
        self._made_etc = not NETNS_ETC.exists()
        _ip("netns", "add", self.lan)
        self.created.append(self.lan)
        _ip("-n", self.lan, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.lan, "link", "set", "br0", "up")
        _ip("-n", self.lan, "link", "set", "lo", "up")
        hosts_file = "127.0.0.1\tlocalhost\n" + "".join(f"{self.address[h]}\t{fqdn}\n"
                                                       for fqdn, h in self.names.items())
        for i, host in enumerate(self.hosts):
            ns = self.ns(host)
            _ip("netns", "add", ns)
            self.created.append(ns)
            etc = NETNS_ETC / ns
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(hosts_file)
            _ip("-n", self.lan, "link", "add", f"p{i}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", self.lan, "link", "set", f"p{i}", "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{self.address[host]}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def command(self, host: str, argv: list[str]) -> list[str]:
        """``argv`` run inside ``host``'s namespace (with its hosts file)."""
        return ["ip", "netns", "exec", self.ns(host), *argv]

    def run(self, host: str, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        """``subprocess.run`` of ``argv`` inside ``host`` (keyword arguments as for ``subprocess.run``)."""
        return subprocess.run(self.command(host, argv), **kwargs)

    def popen(self, host: str, argv: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.command(host, argv), **kwargs)

    def pids(self, host: str) -> list[int]:
        """Every process whose network namespace is ``host``'s (what ``ip netns pids`` lists)."""
        out = _ip("netns", "pids", self.ns(host), check=False).stdout
        return [int(p) for p in out.split() if p.isdigit()]

    def kill(self, host: str, sig: int = signal.SIGKILL, timeout: float = 30) -> list[int]:
        """Send ``sig`` to every process in ``host``'s namespace (a host that crashes); returns their PIDs once
        they are gone and reaped (or after ``timeout`` s)."""
        pids = self.pids(host)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        # until reaped: a killed process stays a zombie (no namespace, but ``kill -0`` still succeeds, so a kit's
        # start.sh would take it for a running instance) until its parent, often PID 1, collects it
        deadline = time.monotonic() + timeout
        while (self.pids(host) or any(Path(f"/proc/{p}").exists() for p in pids)) and time.monotonic() < deadline:
            time.sleep(0.1)
        return pids

    def leftovers(self) -> dict[str, list]:
        """What of this run still exists: its namespaces, their processes, its hosts-file folders."""
        listed = _ip("netns", "list", check=False).stdout.split()
        spaces = [n for n in listed if n.startswith(f"{self.tag}-")]
        return {"namespaces": spaces,
                "processes": [p for n in spaces for p in _ip("netns", "pids", n, check=False).stdout.split()],
                "hosts_files": sorted(str(p) for p in NETNS_ETC.glob(f"{self.tag}-*"))}

    def close(self) -> None:
        """Kill every process in the namespaces, remove the namespaces (their links and bridge go with them)
        and the hosts files. Safe to call twice."""
        for ns in reversed(self.created):
            host = ns[len(self.tag) + 1:]
            if ns != self.lan:
                self.kill(host)
            _ip("netns", "del", ns, check=False)
            shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)
        self.created.clear()
        if self._made_etc:
            try:
                NETNS_ETC.rmdir()  # only if empty: it may hold other namespaces' files by now
            except OSError:
                pass
