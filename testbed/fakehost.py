"""Stand-ins for the system commands apply runs, acting on a throwaway root, for tests.

`prepare(root)` turns a copied machine root into a throwaway host: it adds what a booted
kernel shows but the modelled trees leave out (default sysctls, module parameters), a
GRUB configuration matching /proc/cmdline, and one script per command under
`<root>/.nodeagent/bin/` that runs this file. It returns the `commands` map that points
apply at those scripts instead of the real update-grub, sysctl, modprobe, systemctl, ...

Each stand-in logs its argv to `.nodeagent/commands.log` and changes the root the way the
real command changes a machine, as far as verify can see: sysctl -p writes /proc/sys,
systemd-tmpfiles writes sysfs (moving the [brackets] of a selection file like the kernel),
systemctl links .wants and /run/systemd/units, a reboot boots the generated GRUB entry.
A file `.nodeagent/fail/<command>` makes that command fail, for failure tests.

Only the standard library: each call starts a fresh interpreter.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

COMMANDS = (
    "update_grub",
    "grubby",
    "sysctl",
    "systemd_tmpfiles",
    "modprobe",
    "systemctl",
    "mdadm",
    "mkfs_ext4",
    "mkfs_xfs",
    "reboot",
)
# What a booted kernel shows that the modelled trees do not carry: defaults of a stock kernel.
KERNEL_SYSCTLS = {
    "vm/swappiness": "60",
    "vm/zone_reclaim_mode": "0",
    "vm/max_map_count": "65530",
    "net/core/rmem_max": "212992",
    "net/core/wmem_max": "212992",
    "net/core/netdev_max_backlog": "1000",
    "kernel/nmi_watchdog": "1",
}
MODULE_PARAMS = {"nvidia_uvm": {"uvm_disable_hmm": "N"}}
ASPM = "[default] performance powersave powersupersave"
_BOOT_ONLY = ("BOOT_IMAGE=", "root=", "ro", "rw")


class Host:
    def __init__(self, root: Path) -> None:
        self.root = root

    def p(self, path: str) -> Path:
        """A node path (absolute, or already under the root) as a path in the root."""
        s = str(path)
        if s.startswith(str(self.root) + "/"):
            return Path(s)
        return self.root / s.lstrip("/")

    def read(self, rel: str, default: str = "") -> str:
        try:
            return self.p(rel).read_text()
        except OSError:
            return default

    def write(self, rel: str, text: str) -> None:
        path = self.p(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            path.unlink()
        path.write_text(text)

    def link(self, rel: str, target: str) -> None:
        path = self.p(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()
        path.symlink_to(target)

    # -------------------------------------------------------------- kernel-side effects
    def set_sysfs(self, pattern: str, value: str) -> None:
        for match in sorted(glob.glob(str(self.p(pattern)))):
            rel = match[len(str(self.root)) :]
            old = self.read(rel)
            if "[" in old:  # a selection file: the kernel moves the brackets
                words = [w.strip("[]") for w in old.split()]
                value_text = " ".join(f"[{w}]" if w == value else w for w in words)
                self.write(rel, value_text + "\n")
            else:
                self.write(rel, value + "\n")

    def sysctl_file(self, path: str) -> None:
        for line in self.read(path).splitlines():
            line = line.split("#", 1)[0].strip()
            if "=" in line:
                key, value = (x.strip() for x in line.split("=", 1))
                self.write("proc/sys/" + key.replace(".", "/"), value + "\n")

    def tmpfiles(self, path: str) -> None:
        for line in self.read(path).splitlines():
            parts = line.split(None, 6)
            if len(parts) == 7 and parts[0] == "w":
                self.set_sysfs(parts[1], parts[6])

    def modprobe_options(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for conf in sorted(self.p("etc/modprobe.d").glob("*.conf")):
            for line in conf.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 3 and parts[0] == "options":
                    opts = out.setdefault(parts[1], {})
                    for kv in parts[2:]:
                        key, _, value = kv.partition("=")
                        opts[key] = value
        return out

    def load_module(self, name: str) -> None:
        name = name.replace("-", "_")
        modules = self.read("proc/modules")
        if not any(line.split()[0] == name for line in modules.splitlines() if line):
            self.write("proc/modules", modules + f"{name} 16384 0 - Live 0x0000000000000000\n")
        params = dict(MODULE_PARAMS.get(name, {}))
        params.update(self.modprobe_options().get(name, {}))
        for key, value in params.items():
            shown = {"1": "Y", "0": "N"}.get(value, value) if key.startswith("uvm_") else value
            self.write(f"sys/module/{name}/parameters/{key}", shown + "\n")
        self.p(f"sys/module/{name}").mkdir(parents=True, exist_ok=True)

    def grub_args(self) -> str:
        """Source /etc/default/grub and its drop-ins in a shell, as update-grub does."""
        script = (
            '. "$1"/etc/default/grub; for f in "$1"/etc/default/grub.d/*.cfg; do '
            '[ -e "$f" ] && . "$f"; done; printf %s "$GRUB_CMDLINE_LINUX '
            '$GRUB_CMDLINE_LINUX_DEFAULT"'
        )
        out = subprocess.run(
            ["sh", "-c", script, "sh", str(self.root)], check=True, capture_output=True, text=True
        )
        return " ".join(out.stdout.split())

    def boot_params(self) -> tuple[str, str]:
        """(kernel image, root= argument) of the running kernel, from /proc/cmdline."""
        tokens = self.read("proc/cmdline").split()
        image = next(
            (t.split("=", 1)[1] for t in tokens if t.startswith("BOOT_IMAGE=")), "/vmlinuz"
        )
        root = next((t for t in tokens if t.startswith("root=")), "root=/dev/sda1")
        return image, root

    def update_grub(self) -> None:
        image, root = self.boot_params()
        entry = f"menuentry 'Linux' {{\n\tlinux\t{image} {root} ro {self.grub_args()}\n}}\n"
        self.write("boot/grub/grub.cfg", "### generated by update-grub\n" + entry)

    def grubby(self, args: list[str]) -> None:
        add = [a.split("=", 1)[1] for a in args if a.startswith("--args=")]
        for entry in sorted(self.p("boot/loader/entries").glob("*.conf")):
            lines = entry.read_text().splitlines()
            out = []
            for line in lines:
                if line.startswith("options "):
                    have = line.split()[1:]
                    for token in " ".join(add).split():
                        key = token.split("=", 1)[0]
                        have = [t for t in have if t.split("=", 1)[0] != key] + [token]
                    line = "options " + " ".join(have)
                out.append(line)
            entry.write_text("\n".join(out) + "\n")

    def systemctl(self, args: list[str]) -> None:
        if not args or args[0] in ("daemon-reload", "daemon-reexec"):
            return
        now = "--now" in args
        units = [a for a in args[1:] if not a.startswith("-")]
        for unit in units:
            if args[0] in ("enable", "start", "restart"):
                if args[0] == "enable":
                    self.link(
                        f"etc/systemd/system/multi-user.target.wants/{unit}",
                        f"/etc/systemd/system/{unit}",
                    )
                if args[0] != "enable" or now:
                    self.start(unit)

    def start(self, unit: str) -> None:
        self.link(f"run/systemd/units/invocation:{unit}", os.urandom(16).hex())
        if unit.endswith(".mount"):
            body = self.read(f"etc/systemd/system/{unit}")
            fields = dict(re.findall(r"^(What|Where|Type)=(.*)$", body, re.M))
            source = fields.get("What", "")
            if source.startswith("/dev/md/"):
                source = "/dev/" + source.rsplit("/", 1)[1]
            self.p(fields["Where"]).mkdir(parents=True, exist_ok=True)
            line = f"{source} {fields['Where']} {fields.get('Type', 'auto')} rw,noatime 0 0\n"
            self.write("proc/mounts", self.read("proc/mounts") + line)

    def mdadm(self, args: list[str]) -> None:
        if "--create" not in args:
            return
        device = args[args.index("--create") + 1].rsplit("/", 1)[1]
        level = next(a.split("=", 1)[1] for a in args if a.startswith("--level="))
        wwids = {
            self.read(f"sys/block/{b.name}/wwid").strip(): b.name
            for b in sorted(self.p("sys/block").iterdir())
        }
        members = [
            wwids[a.removeprefix("/dev/disk/by-id/nvme-")]
            for a in args
            if a.startswith("/dev/disk/by-id/")
        ]
        parts = " ".join(f"{m}[{i}]" for i, m in enumerate(members))
        line = f"{device} : active raid{level} {parts}\n      {len(members)} blocks super 1.2\n"
        base = self.read("proc/mdstat", "Personalities : [raid0]\n")
        self.write("proc/mdstat", base + line + "\n")

    def reboot(self) -> None:
        """Boot what the boot loader holds: the generated cmdline, then what systemd does."""
        image, _ = self.boot_params()
        grub = self.read("boot/grub/grub.cfg")
        m = re.search(r"^\s*linux\s+(\S+)\s+(.*)$", grub, re.M)
        bls = sorted(self.p("boot/loader/entries").glob("*.conf"))
        if m:
            tokens = m.group(2).split()
        elif bls:
            opts = re.search(r"^options (.*)$", bls[0].read_text(), re.M)
            tokens = opts.group(1).split() if opts else []
        else:
            tokens = self.read("proc/cmdline").split()[1:]
        self.write("proc/cmdline", " ".join([f"BOOT_IMAGE={image}", *tokens]) + "\n")
        size = "2048kB"
        for token in tokens:
            key, _, value = token.partition("=")
            if "." in key and value:  # module.param=value for built-in modules
                module, param = key.split(".", 1)
                path = f"sys/module/{module}/parameters/{param}"
                if self.p(path).exists():
                    self.set_sysfs(path, value)
            if key == "hugepagesz":
                size = {"1G": "1048576kB", "2M": "2048kB"}.get(value, size)
            if key == "hugepages":
                self.write(f"sys/kernel/mm/hugepages/hugepages-{size}/nr_hugepages", value + "\n")
        for name in self.modprobe_options():
            if self.p(f"sys/module/{name}").exists():
                self.load_module(name)  # reloaded at boot: modprobe.d options apply
        for conf in sorted(self.p("etc/modules-load.d").glob("*.conf")):
            for line in conf.read_text().splitlines():
                if line.strip() and not line.startswith("#"):
                    self.load_module(line.strip())
        for conf in sorted(self.p("etc/sysctl.d").glob("*.conf")):
            self.sysctl_file(str(conf))
        for conf in sorted(self.p("etc/tmpfiles.d").glob("*.conf")):
            self.tmpfiles(str(conf))
        for link in self.p("run/systemd/units").glob("invocation:*"):
            link.unlink()
        if self.p("proc/mounts").exists():
            self.write("proc/mounts", "")
        for wants in sorted(self.p("etc/systemd/system/multi-user.target.wants").glob("*")):
            self.start(wants.name)


def run(root: Path, command: str, args: list[str]) -> int:
    host = Host(root)
    log = root / ".nodeagent" / "commands.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as fh:
        fh.write(" ".join([command, *map(shlex.quote, args)]) + "\n")
    if (root / ".nodeagent" / "fail" / command).exists():
        print(f"{command}: simulated failure", file=sys.stderr)
        return 1
    if command == "update_grub":
        host.update_grub()
    elif command == "grubby":
        host.grubby(args)
    elif command == "sysctl":
        for i, a in enumerate(args):
            if a == "-p" and i + 1 < len(args):
                host.sysctl_file(args[i + 1])
    elif command == "systemd_tmpfiles":
        for a in args:
            if not a.startswith("-"):
                host.tmpfiles(a)
    elif command == "modprobe":
        for a in args:
            if not a.startswith("-"):
                host.load_module(a)
    elif command == "systemctl":
        host.systemctl(args)
    elif command == "mdadm":
        host.mdadm(args)
    elif command == "reboot":
        host.reboot()
    return 0


def prepare(root: Path) -> dict[str, list[str]]:
    """Make a copied machine root a throwaway host; return the `commands` map for apply."""
    host = Host(root)
    for rel, value in KERNEL_SYSCTLS.items():
        if not host.p(f"proc/sys/{rel}").exists():
            host.write(f"proc/sys/{rel}", value + "\n")
    host.write("sys/module/pcie_aspm/parameters/policy", ASPM + "\n")
    host.write("sys/module/processor/parameters/max_cstate", "9\n")
    if host.read("sys/devices/system/cpu/cpuidle/current_driver").strip() == "intel_idle":
        host.write("sys/module/intel_idle/parameters/max_cstate", "9\n")
    for line in host.read("proc/modules").splitlines():
        name = line.split()[0] if line else ""
        for key, value in MODULE_PARAMS.get(name, {}).items():
            host.write(f"sys/module/{name}/parameters/{key}", value + "\n")
    if not host.p("proc/mounts").exists():
        image, boot_root = host.boot_params()
        host.write("proc/mounts", f"{boot_root.split('=', 1)[1]} / ext4 rw,relatime 0 0\n")
    args = [t for t in host.read("proc/cmdline").split() if not t.startswith(_BOOT_ONLY)]
    os_release = host.read("etc/os-release")
    if re.search(r"^ID_LIKE=.*(fedora|rhel)", os_release, re.M):
        image, boot_root = host.boot_params()
        release = image.rsplit("vmlinuz-", 1)[-1]
        host.write(
            f"boot/loader/entries/0000-{release}.conf",
            f"title Linux\nversion {release}\nlinux /vmlinuz-{release}\n"
            f"options {boot_root} ro {' '.join(args)}\n",
        )
    else:
        host.write(
            "etc/default/grub",
            f'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=""\n'
            f'GRUB_CMDLINE_LINUX="{" ".join(args)}"\n',
        )
        host.update_grub()
    bindir = root / ".nodeagent" / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    commands: dict[str, list[str]] = {}
    for name in COMMANDS:
        script = bindir / name
        script.write_text(
            f"#!/bin/sh\nexec {shlex.quote(sys.executable)} "
            f"{shlex.quote(os.path.abspath(__file__))} {shlex.quote(str(root))} "
            f'{name} "$@"\n'
        )
        script.chmod(0o755)
        commands[name] = [str(script)]
    commands["systemd_tmpfiles"].append("--create")
    (root / ".nodeagent" / "commands.json").write_text(json.dumps(commands, indent=2) + "\n")
    return commands


def commands_log(root: Path) -> list[str]:
    path = root / ".nodeagent" / "commands.log"
    return path.read_text().splitlines() if path.exists() else []


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1]), sys.argv[2], sys.argv[3:]))
