#!/usr/bin/env python3
"""kiln's benchmark suite: the same workloads, on the same machine, in one
run, for kiln, buildah and BuildKit, interleaved, several repetitions.

Started by bench/run.sh, which installs the peers and builds kiln. Writes
every measurement to $KILN_BENCH_DIR/times.tsv and the table (medians,
spread, peak memory, kiln-to-peer ratios) to bench/results.md (a run of
some workloads, --only, to bench/results-WORKLOADS.md).

    bench/bench.py [--reps N] [--only WORKLOAD,...]
    bench/bench.py --table TIMES.TSV      (the table again, from a TSV)
"""

import argparse
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# KILN_BENCH_KILN: another kiln binary (an older build, for a before/after)
KILN = Path(os.environ.get("KILN_BENCH_KILN", REPO / "target/release/kiln"))
FLOOR = REPO / "target/release/examples/floor"
WORK = Path(os.environ.get("KILN_BENCH_DIR", "/var/tmp/kiln-bench"))
DOCKER = "/usr/bin/docker"  # Debian's client: classic `docker build` speaks BuildKit
PUBLISH_PORTS = {"kiln": 5055, "buildah": 5057, "buildkit": 5058}  # each tool's own, fresh each run
BASES_PORT = 5056  # the registry kiln bake takes the shared base from
TOOLS = ["kiln", "buildah", "buildkit"]
APT_PROXY = 'Acquire::http::Proxy "http://127.0.0.1:3142";'
APPS = ["a", "b", "c"]
CHAIN = ["tools"] + [f"app-{a}" for a in APPS]
WORKLOADS = ["chain", "bake", "large", "publish", "multistage", "aptbuild", "floor", "cross", "vm"]
ARM64 = "linux/arm64"
VM_PACKAGE = "curl"  # the package the VM workload adds to a server image
VM_SSH_PORT = 2299
VM_ROW = f"VM image: add {VM_PACKAGE}, to a boot-tested qcow2"
APTBUILD_ROW = "apt-installed compiler in a builder stage, binary to scratch: cold"
GAP_MARK = "kiln-bench-apt-step-done"


class Failed(Exception):
    pass


def log(msg):
    print(msg, flush=True)


def quiet(cmd, env=None, check=True):
    p = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if check and p.returncode != 0:
        raise Failed(f"{' '.join(map(str, cmd))}: exit {p.returncode}\n{p.stderr[-2000:]}")
    return p


def descendants_rss_kib(root):
    """RSS of a process and all its descendants, in KiB, from /proc."""
    children, rss = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/statm") as f:
                pages = int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = pages * os.sysconf("SC_PAGE_SIZE") // 1024
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total


class Sampler(threading.Thread):
    """Peak RSS of a daemon's process tree while a measurement runs (BuildKit
    works inside dockerd, so the client's own peak says little)."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, descendants_rss_kib(self.pid))
            self.stop.wait(0.05)

    def finish(self):
        self.stop.set()
        self.join()
        return self.peak


def timed(cmds, env=None, engine_pid=None):
    """Runs the commands one after another; returns (seconds, peak KiB).
    The peak is the largest max RSS of any command and its children, plus
    the engine's process tree when the work happens in a daemon."""
    sampler = Sampler(engine_pid) if engine_pid else None
    if sampler:
        sampler.start()
    peak = 0
    start = time.monotonic()
    for cmd in cmds:
        # /usr/bin/time forks the command from a small process: a child
        # forked from Python would count Python's own pages in its peak.
        rss = WORK / "rss"
        with open(WORK / "last.err", "w") as err:
            p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(rss)] + list(map(str, cmd)),
                               env=env, stdout=subprocess.DEVNULL, stderr=err)
        peak = max(peak, int(rss.read_text().split()[-1]))
        if p.returncode != 0:
            if sampler:
                sampler.finish()
            tail = (WORK / "last.err").read_text(errors="replace")[-3000:]
            raise Failed(f"{' '.join(map(str, cmd))}: exit {p.returncode}\n{tail}")
    secs = time.monotonic() - start
    if sampler:
        peak += sampler.finish()
    return secs, peak


class Kiln:
    name = "kiln"

    def __init__(self, store):
        # VM boot tests under software emulation, as the Packer-style loop
        # boots (kiln would use KVM where it works)
        self.env = dict(os.environ, KILN_STORE=str(store), KILN_ACCEL="tcg")

    def build(self, tag, ctx, platform=None):
        return [str(KILN), "build", "-t", tag] + (["--platform", platform] if platform else []) + [str(ctx)]

    def push(self, tag, ref):
        return [str(KILN), "push", tag, ref]

    def pull(self, ref):
        return [str(KILN), "pull", ref]

    def forget(self, tags):
        for t in tags:
            quiet([str(KILN), "rmi", t], env=self.env, check=False)
        quiet([str(KILN), "prune"], env=self.env)


class Buildah:
    name = "buildah"

    def __init__(self, root):
        self.env = dict(os.environ, BUILDAH_ISOLATION="chroot")
        self.cmd = ["buildah", "--root", str(root / "root"), "--runroot", str(root / "run"),
                    "--storage-driver", "overlay"]

    def build(self, tag, ctx, platform=None):
        return self.cmd + ["build", "-q", "--pull-never", "--layers", "-t", tag] + \
            (["--platform", platform] if platform else []) + [str(ctx)]

    def push(self, tag, ref):
        return self.cmd + ["push", "-q", "--tls-verify=false", tag, f"docker://{ref}"]

    def pull(self, ref):
        return self.cmd + ["pull", "-q", "--tls-verify=false", f"docker://{ref}"]

    def forget(self, tags):
        for t in tags:
            quiet(self.cmd + ["rmi", "-f", t], env=self.env, check=False)
        quiet(self.cmd + ["rmi", "--prune"], env=self.env, check=False)


class BuildKit:
    name = "buildkit"

    def __init__(self, engine_pid):
        self.env = dict(os.environ, DOCKER_BUILDKIT="1")
        self.engine_pid = engine_pid

    def build(self, tag, ctx, platform=None):
        # The engine runs with --bridge=none, so RUN steps use the host's network.
        return [DOCKER, "build", "-q", "--network", "host", "-t", tag] + \
            (["--platform", platform] if platform else []) + [str(ctx)]

    def push(self, tag, ref):
        return ["sh", "-c", f"{DOCKER} tag {tag} {ref} && {DOCKER} push -q {ref}"]

    def pull(self, ref):
        return [DOCKER, "pull", "-q", ref]

    def forget(self, tags):
        for t in tags:
            quiet([DOCKER, "rmi", "-f", t], env=self.env, check=False)
        quiet([DOCKER, "builder", "prune", "-af"], env=self.env)


class Registry:
    """A docker-registry on 127.0.0.1:PORT with its storage under WORK."""

    def __init__(self, port):
        self.port, self.proc = port, None
        self.dir = WORK / f"registry-{port}"

    def start(self, fresh=False):
        self.stop()
        if fresh:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        cfg = self.dir / "config.yml"
        cfg.write_text(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {self.dir / 'data'}\nhttp:\n  addr: 127.0.0.1:{self.port}\n"
        )
        self.proc = subprocess.Popen(["docker-registry", "serve", str(cfg)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if self.proc.poll() is not None:
                raise Failed(f"docker-registry on port {self.port} exited (is the port taken?)")
            if subprocess.run(["curl", "-sf", f"http://127.0.0.1:{self.port}/v2/"],
                              stdout=subprocess.DEVNULL).returncode == 0:
                return
            time.sleep(0.1)
        raise Failed(f"docker-registry on port {self.port} did not start")

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait()
            self.proc = None


def engine():
    """The Docker engine's pid, starting dockerd if none answers."""
    if quiet([DOCKER, "info"], check=False).returncode != 0:
        with open(WORK / "dockerd.log", "w") as out:
            subprocess.Popen(["dockerd", "--iptables=false", "--bridge=none"], stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True)
        for _ in range(150):
            if quiet([DOCKER, "info"], check=False).returncode == 0:
                break
            time.sleep(0.2)
        else:
            raise Failed("dockerd did not start; see " + str(WORK / "dockerd.log"))
    return int(subprocess.check_output(["pidof", "-s", "dockerd"]).split()[0])


def apt_cache(offline=False):
    """apt-cacher-ng on 127.0.0.1:3142, caching in WORK: every tool's
    apt-get goes through it (the base image is made with it as apt's proxy).
    Once the setup has fetched what the workloads install, it is restarted
    offline (answering from its cache only), so package downloads cost the
    same for every tool and the network's moods stay out of the numbers."""
    # Debian's package may have started one with its stock mirror list.
    subprocess.run(["pkill", "-x", "apt-cacher-ng"])
    time.sleep(0.5)
    acng = WORK / "apt-cacher-ng"
    conf = acng / "conf"
    shutil.copytree("/etc/apt-cacher-ng", conf, dirs_exist_ok=True)
    # The only Debian mirror this machine may reach.
    (conf / "backends_debian").write_text("http://deb.debian.org/debian/\n")
    for d in ["cache", "log"]:
        (acng / d).mkdir(parents=True, exist_ok=True)
    quiet(["/usr/sbin/apt-cacher-ng", "-c", str(conf), f"CacheDir={acng / 'cache'}", f"LogDir={acng / 'log'}",
           "Port=3142", "BindAddress=127.0.0.1", "ForeGround=0", f"PidFile={acng / 'pid'}",
           f"Offlinemode={int(offline)}"])
    for _ in range(50):
        if subprocess.run(["curl", "-s", "-o", "/dev/null", "http://127.0.0.1:3142/"]).returncode == 0:
            return
        time.sleep(0.1)
    raise Failed("apt-cacher-ng did not start; see " + str(acng / "log"))


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def make_inputs():
    """The shared bases and the contexts of every workload, made once."""
    base = WORK / "base"
    if not (base / "rootfs.tar").exists():
        log("making the shared Debian bookworm minbase with mmdebstrap")
        base.mkdir(parents=True, exist_ok=True)
        quiet(["mmdebstrap", "--variant=minbase", "--quiet", f"--aptopt={APT_PROXY}", "bookworm",
               str(base / "rootfs.tar.part")])
        (base / "rootfs.tar.part").rename(base / "rootfs.tar")
    write(base / "Dockerfile", 'FROM scratch\nADD rootfs.tar /\nCMD ["bash"]\n')
    # The compiler image for the multi-stage workload, made once from the base.
    write(WORK / "gcc/Dockerfile",
          "FROM bench/base:1\nRUN apt-get update && apt-get install -y --no-install-recommends"
          " gcc libc6-dev && rm -rf /var/lib/apt/lists/*\n")

    # Workload 1: tools installs packages; three apps on it copy ~1000 small
    # files each and run a short script. BASE is the same image for every
    # tool; kiln bake takes it from a registry (see bake()).
    chain = WORK / "chain"
    write(chain / "tools/Dockerfile",
          "ARG BASE=bench/base:1\nFROM ${BASE}\nRUN apt-get update && apt-get install -y"
          " --no-install-recommends jq tree less && rm -rf /var/lib/apt/lists/*\n")
    for app in APPS:
        d = chain / f"app-{app}"
        if not (d / "files").is_dir():
            (d / "files").mkdir(parents=True)
            for i in range(1, 1001):
                (d / "files" / f"f{i}.txt").write_text(f"{app} file {i}\n")
        write(d / "Dockerfile",
              "FROM bench/tools:1\nCOPY files /srv/files\nRUN find /srv/files -type f | wc -l >"
              f' /srv/count && jq -n \'{{app: "{app}"}}\' > /srv/app.json\n')
    write(chain / "kiln.toml",
          'kiln = 1\n\n[image.tools]\ncontext = "tools"\n'
          f'args = {{ BASE = "127.0.0.1:{BASES_PORT}/bench/base:1" }}\n'
          + "".join(f'\n[image.app-{a}]\ncontext = "app-{a}"\nbases = {{ "bench/tools:1" = "tools" }}\n'
                    for a in APPS))

    # Workload 2: ~1 GiB in 1500 files, half compressible text, half random.
    large = WORK / "large"
    if not (large / "data/done").exists():
        log("making the 1 GiB context")
        shutil.rmtree(large, ignore_errors=True)
        rng = random.Random(6)
        words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
                 for _ in range(2000)]
        text = b" ".join(rng.choice(words) for _ in range(900_000))  # ~5 MiB of prose-like words
        for i in range(1500):
            d = large / "data" / f"d{i // 100:02}"
            d.mkdir(parents=True, exist_ok=True)
            size = rng.randint(2 << 10, (1 << 30) // 1500 * 2 - (2 << 10))
            if i % 2 == 0:
                at = rng.randint(0, len(text) - size)
                body = text[at:at + size]
            else:
                body = rng.randbytes(size)
            (d / f"f{i:04}.bin").write_bytes(body)
        (large / "data/done").write_text("")
    write(large / "Dockerfile", "FROM bench/base:1\nCOPY data /data\n")
    write(large / ".dockerignore", "data/done\n")

    # Workload 3: a C program compiled in a builder stage, copied into scratch.
    ms = WORK / "multistage"
    write(ms / "hello.c", '#include <stdio.h>\nint main(void) { puts("hello from C"); return 0; }\n')
    write(ms / "Dockerfile",
          "FROM bench/gcc:1 AS build\nCOPY hello.c /src/\nRUN gcc -O2 -static -o /hello /src/hello.c\n"
          'FROM scratch\nCOPY --from=build /hello /hello\nENTRYPOINT ["/hello"]\n')

    # Workload 7: the builder stage installs its compiler with apt (through
    # the apt cache), compiles, and only the binary goes into scratch: no
    # image contains the builder's layers. The echo marks the apt step's end
    # for the step-gap measurement (see step_gap).
    ab = WORK / "aptbuild"
    write(ab / "hello.c", '#include <stdio.h>\nint main(void) { puts("hello from C"); return 0; }\n')
    write(ab / "Dockerfile",
          "FROM bench/base:1 AS build\nRUN apt-get update && apt-get install -y --no-install-recommends"
          f" gcc libc6-dev && echo {GAP_MARK}\nCOPY hello.c /src/\nRUN gcc -O2 -static -o /hello /src/hello.c\n"
          'FROM scratch\nCOPY --from=build /hello /hello\nENTRYPOINT ["/hello"]\n')

    # Workload 6: the same C program for arm64, compiled emulated (gcc of an
    # arm64 Debian, every instruction through QEMU) and cross (this
    # machine's aarch64-linux-gnu-gcc in a $BUILDPLATFORM stage).
    cross = WORK / "cross"
    for arch, packages in [("arm64", "gcc,libc6-dev"), ("amd64", "gcc-aarch64-linux-gnu,libc6-dev-arm64-cross")]:
        d = cross / f"toolchain-{arch}"
        if not (d / "rootfs.tar").exists():
            log(f"making the {arch} compiler base with mmdebstrap ({packages})")
            d.mkdir(parents=True, exist_ok=True)
            quiet(["mmdebstrap", "--variant=minbase", "--quiet", f"--architectures={arch}",
                   f"--include={packages}", f"--aptopt={APT_PROXY}", "bookworm", str(d / "rootfs.tar.part")])
            (d / "rootfs.tar.part").rename(d / "rootfs.tar")
        write(d / "Dockerfile", 'FROM scratch\nADD rootfs.tar /\nCMD ["bash"]\n')
    # 600 functions of loops and arithmetic: a few seconds of native gcc -O2
    body = "".join(
        f"static unsigned long f{i}(unsigned long x) {{ unsigned long s = {i};"
        f" for (int k = 0; k < (int)(x % {i + 7}); k++) {{ s = s * {i * 2 + 1} + (x >> (k % 13)) ^ {i * 31}; }}"
        f" return s; }}\n" for i in range(600))
    calls = " + ".join(f"f{i}(n)" for i in range(600))
    write(cross / "prog.c", f"#include <stdio.h>\n{body}int main(void) {{ unsigned long n = 12345;"
          f' printf("%lu\\n", {calls}); return 0; }}\n')
    tail = 'FROM scratch\nCOPY --from=build /prog /prog\nENTRYPOINT ["/prog"]\n'
    write(cross / "emulated/Dockerfile",
          "FROM bench/gcc-arm64:1 AS build\nCOPY prog.c /src/\nRUN gcc -O2 -static -o /prog /src/prog.c\n" + tail)
    write(cross / "cross/Dockerfile",
          "FROM --platform=$BUILDPLATFORM bench/cross-gcc:1 AS build\nCOPY prog.c /src/\n"
          "RUN aarch64-linux-gnu-gcc -O2 -static -o /prog /src/prog.c\n" + tail)
    for path in ["emulated", "cross"]:
        shutil.copy(cross / "prog.c", cross / path / "prog.c")


def make_vm_inputs():
    """Workload 7's inputs: a Debian with a kernel, systemd, an SSH server
    and DHCP on its NIC (the base of both paths), the package the workload
    adds fetched once into the apt cache, an SSH key the Packer-style path
    logs in with, and the factory kiln bakes."""
    vm = WORK / "vm"
    vm.mkdir(parents=True, exist_ok=True)
    key = vm / "key"
    if not key.exists():
        quiet(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f", str(key)])
    base = vm / "base"
    if not (base / "rootfs.tar").exists():
        log("making the VM base (kernel, systemd, SSH server) with mmdebstrap")
        base.mkdir(parents=True, exist_ok=True)
        pub = (vm / "key.pub").read_text().strip()
        hooks = [
            f'mkdir -m 700 -p "$1/root/.ssh" && echo "{pub}" > "$1/root/.ssh/authorized_keys"',
            'printf "[Match]\\nName=en*\\n\\n[Network]\\nDHCP=yes\\n" > "$1/etc/systemd/network/en.network"',
            'chroot "$1" systemctl enable systemd-networkd',
            f'chroot "$1" apt-get install --download-only -y --no-install-recommends {VM_PACKAGE}',
            'chroot "$1" apt-get clean',
        ]
        quiet(["mmdebstrap", "--variant=minbase", "--quiet", f"--aptopt={APT_PROXY}",
               "--include=linux-image-cloud-amd64,initramfs-tools,systemd-sysv,udev,openssh-server"]
              + [f"--customize-hook={h}" for h in hooks] + ["bookworm", str(base / "rootfs.tar.part")])
        (base / "rootfs.tar.part").rename(base / "rootfs.tar")
    write(base / "Dockerfile", "FROM scratch\nADD rootfs.tar /\n")
    factory = vm / "factory"
    write(factory / "kiln.toml",
          'kiln = 1\n\n[image.server]\ncontext = "server"\npublish = ["store"]\n\n'
          '[vm.server-disk]\nimage = "server"\nformats = ["qcow2"]\nboot_timeout = 600\n'
          # the baseline has no package; every changed run must have it
          f'test = ["grep -q baseline /etc/bench-run || dpkg -s {VM_PACKAGE} >/dev/null"]\npublish = ["store"]\n')
    server_dockerfile("echo baseline > /etc/bench-run")


def server_dockerfile(run):
    write(WORK / "vm/factory/server/Dockerfile",
          f"ARG BASE=127.0.0.1:{BASES_PORT}/bench/vm-base:1\nFROM ${{BASE}}\nRUN {run}\n")


def import_bases(kiln, buildah, buildkit):
    """The same base (and the compiler image made from it by kiln) in every tool."""
    log("importing the shared base into kiln, buildah and the Docker engine")
    quiet(kiln.build("bench/base:1", WORK / "base"), env=kiln.env)
    quiet(kiln.build("bench/gcc:1", WORK / "gcc"), env=kiln.env)
    quiet(kiln.build("bench/gcc-arm64:1", WORK / "cross/toolchain-arm64", ARM64), env=kiln.env)
    quiet(kiln.build("bench/cross-gcc:1", WORK / "cross/toolchain-amd64"), env=kiln.env)
    for tag in ["bench/base:1", "bench/gcc:1", "bench/gcc-arm64:1", "bench/cross-gcc:1"]:
        stem = tag.split("/")[1].replace(":", "-")
        quiet([str(KILN), "save", tag, "--format", "oci", "-o", str(WORK / f"{stem}-oci.tar")], env=kiln.env)
        quiet([str(KILN), "save", tag, "--format", "docker", "-o", str(WORK / f"{stem}-docker.tar")], env=kiln.env)
        image_id = subprocess.check_output(
            buildah.cmd + ["pull", "-q", f"oci-archive:{WORK / f'{stem}-oci.tar'}"], env=buildah.env, text=True
        ).split()[-1]
        quiet(buildah.cmd + ["tag", image_id, tag], env=buildah.env)
        quiet([DOCKER, "load", "-q", "-i", str(WORK / f"{stem}-docker.tar")], env=buildkit.env)
    quiet(kiln.push("bench/base:1", f"127.0.0.1:{BASES_PORT}/bench/base:1"), env=kiln.env)
    # The VM base: in kiln's store and the bases registry (the factory's
    # FROM), and as the Packer-style path's base disk.
    quiet(kiln.build("bench/vm-base:1", WORK / "vm/base"), env=kiln.env)
    quiet(kiln.push("bench/vm-base:1", f"127.0.0.1:{BASES_PORT}/bench/vm-base:1"), env=kiln.env)
    # made by this kiln every run, so both paths boot the same first-boot setup
    quiet([str(KILN), "vm", "build", "bench/vm-base:1", "--name", "base", "-o", str(WORK / "vm/base-disk")],
          env=kiln.env)
    # Fill the apt cache with what the chain installs, then go offline.
    quiet(kiln.build("bench/warm-up:1", WORK / "chain/tools"), env=kiln.env)
    kiln.forget(["bench/warm-up:1"])
    apt_cache(offline=True)


class Run:
    def __init__(self):
        self.results = WORK / "times.tsv"
        self.results.write_text("")

    def record(self, tool, workload, rep, secs, kib):
        with open(self.results, "a") as f:
            f.write(f"{tool}\t{workload}\t{rep}\t{secs:.3f}\t{kib}\n")
        log(f"{tool:9} {workload:40} run {rep}: {secs:7.2f}s  peak {kib // 1024} MiB")

    def measure(self, tool, workload, rep, cmds):
        # What earlier workloads wrote (gigabytes) is flushed first, so no
        # tool's fsyncs wait behind another's writeback.
        os.sync()
        secs, kib = timed(cmds, env=tool.env, engine_pid=getattr(tool, "engine_pid", None))
        self.record(tool.name, workload, rep, secs, kib)
        return secs


def chain_cmds(tool):
    ctx = WORK / "chain"
    return [tool.build(f"bench/{n}:1", ctx / n) for n in CHAIN]


def pushed(tool, name):
    return f"127.0.0.1:{PUBLISH_PORTS[tool.name]}/bench/{name}:{tool.name}"


def everything(tool):
    """Every name a workload gives an image, for forgetting between runs."""
    names = [f"bench/{n}:1" for n in CHAIN + ["large"]]
    return names + [pushed(tool, n) for n in CHAIN + ["large"]]


def settle(seconds):
    """After a cleanup, flush and wait: on ext4 without a journal (this
    machine's root), new files skip inodes deleted in the last minute, which
    makes the first files created after deleting thousands slow for any
    tool. Cold runs measure building, not that."""
    os.sync()
    time.sleep(seconds)


def phase(tools, names, seconds, workload):
    """Every tool forgets the images (None: all of its images), the disk
    settles, then each tool runs the workload in turn."""
    for tool in tools:
        tool.forget(everything(tool) if names is None else names)
    settle(seconds)
    for tool in tools:
        workload(tool)


def workload_chain(run, tool, rep):
    run.measure(tool, "chain: cold", rep, chain_cmds(tool))
    run.measure(tool, "chain: warm, nothing changed", rep, chain_cmds(tool))
    changed = WORK / "chain/app-b/files/f1.txt"
    changed.write_text(f"changed in run {rep}\n")
    try:
        run.measure(tool, "chain: one app file changed", rep, chain_cmds(tool))
    finally:
        changed.write_text("b file 1\n")


def bake_forget():
    """Forgets every image of the factory in kiln bake's own store
    (NAME:VERSION and moving tags) and its lock; the base and its snapshot
    stay, as the other workloads keep theirs."""
    kiln = Kiln(WORK / "kiln-bake-store")
    base = f"127.0.0.1:{BASES_PORT}/bench/base:1"
    listing = subprocess.run([str(KILN), "images"], env=kiln.env, capture_output=True, text=True).stdout
    kiln.forget([line.split()[0] for line in listing.splitlines()[1:]
                 if line.split()[0].split(":")[0] in CHAIN])
    quiet(kiln.pull(base), env=kiln.env)
    quiet([str(KILN), "run", base, "--", "true"], env=kiln.env)  # unpacks its snapshot
    (WORK / "chain/kiln.lock").unlink(missing_ok=True)
    return kiln


def workload_bake(run, kiln, rep):
    """Workload 5: the chain as a factory, baked by kiln from a kiln.toml."""
    chain = WORK / "chain"
    bake = [str(KILN), "bake", "-f", str(chain / "kiln.toml")]
    run.measure(kiln, "bake: cold", rep, [bake])
    run.measure(kiln, "bake: nothing changed", rep, [bake])
    changed = chain / "app-b/files/f1.txt"
    changed.write_text(f"changed in run {rep}\n")
    try:
        run.measure(kiln, "bake: one app file changed", rep, [bake])
    finally:
        changed.write_text("b file 1\n")
        (chain / "kiln.lock").unlink(missing_ok=True)


def workload_large(run, tool, rep):
    run.measure(tool, "large COPY (1 GiB, 1500 files): cold build", rep,
                [tool.build("bench/large:1", WORK / "large")])
    run.measure(tool, "large COPY (1 GiB, 1500 files): warm, nothing changed", rep,
                [tool.build("bench/large:1", WORK / "large")])


def workload_push(run, tool, rep, registry):
    """Push the large image and the chain to the tool's own empty registry."""
    registry.start(fresh=True)
    run.measure(tool, "push: large image", rep, [tool.push("bench/large:1", pushed(tool, "large"))])
    run.measure(tool, "push: chain (4 images)", rep,
                [tool.push(f"bench/{n}:1", pushed(tool, n)) for n in CHAIN])


def workload_pull(run, tool, rep):
    """Pull back what workload_push pushed, after the tool forgot it."""
    run.measure(tool, "pull: large image", rep, [tool.pull(pushed(tool, "large"))])
    run.measure(tool, "pull: chain (4 images)", rep, [tool.pull(pushed(tool, n)) for n in CHAIN])


def workload_multistage(run, tool, rep):
    run.measure(tool, "multi-stage C program to scratch: cold", rep,
                [tool.build("bench/hello:1", WORK / "multistage")])


def workload_aptbuild(run, tool, rep):
    run.measure(tool, APTBUILD_ROW, rep, [tool.build("bench/apthello:1", WORK / "aptbuild")])


def step_gap(kiln):
    """Seconds from the apt RUN's last line to the next step's first line
    in a cold kiln build of the aptbuild workload: what kiln does with the
    step's result before the next step may start."""
    kiln.forget(["bench/apthello:1"])
    p = subprocess.Popen(kiln.build("bench/apthello:1", WORK / "aptbuild"), env=kiln.env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    done, gap = None, None
    for line in p.stdout:
        now = time.monotonic()
        if GAP_MARK in line and "RUN" not in line:
            done = now
        elif done is not None and gap is None and line.startswith("#"):  # kiln's next step line
            gap = now - done
    if p.wait() != 0 or gap is None:
        raise Failed("the step-gap build failed or printed no COPY step after the apt step")
    with open(WORK / "gaps.tsv", "a") as f:
        f.write(f"{gap:.3f}\n")
    log(f"kiln      apt RUN exit → next step: {gap:.2f}s")


def workload_cross(run, tool, rep):
    """The same arm64 program: every compiler instruction emulated, then
    cross-compiled natively in a $BUILDPLATFORM stage. buildah 1.28 (Debian
    12) cannot build the cross path from local images: under --platform
    linux/arm64 it looks for the $BUILDPLATFORM base as arm64 and says
    "image not known", so it runs the emulated path only."""
    for path in ["emulated"] + ([] if tool.name == "buildah" else ["cross"]):
        run.measure(tool, f"arm64 C program, {path}: cold", rep,
                    [tool.build(f"bench/prog-{path}:1", WORK / "cross" / path, ARM64)])


PACKER_STYLE = r"""#!/bin/bash
# The Packer-style loop, as a Packer qemu builder does it: boot the base VM
# (a qcow2 overlay on the base disk), wait for SSH, install the package
# inside it, power it off, convert the disk.
set -euo pipefail
w=$1 base=$2 key=$3 pkg=$4 port=$5
rm -rf "$w" && mkdir -p "$w"
qemu-img create -q -f qcow2 -b "$base" -F raw "$w/work.qcow2"
# the firmware kiln's boot test uses: the 2 MiB OVMF build when installed
fw=/usr/share/OVMF/OVMF_CODE.fd vars=/usr/share/OVMF/OVMF_VARS.fd
[ -f "$fw" ] && [ -f "$vars" ] || fw=/usr/share/OVMF/OVMF_CODE_4M.fd vars=/usr/share/OVMF/OVMF_VARS_4M.fd
cp "$vars" "$w/vars.fd"
qemu-system-x86_64 -accel tcg -cpu max -m 1024 -smp 2 -display none -no-reboot \
  -drive if=pflash,format=raw,readonly=on,file="$fw" \
  -drive if=pflash,format=raw,file="$w/vars.fd" \
  -drive file="$w/work.qcow2",format=qcow2,if=virtio \
  -device virtio-rng-pci -nic user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:$port-:22 \
  -serial file:"$w/console.log" -monitor none &
qemu=$!
trap 'kill $qemu 2>/dev/null || true' EXIT
in_vm=(ssh -i "$key" -p "$port" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
       -o ConnectTimeout=5 -o LogLevel=ERROR root@127.0.0.1)
for _ in $(seq 600); do "${in_vm[@]}" true 2>/dev/null && break; sleep 1; done
"${in_vm[@]}" "apt-get -o Acquire::http::Proxy=http://10.0.2.2:3142 update -q \
  && DEBIAN_FRONTEND=noninteractive apt-get -o Acquire::http::Proxy=http://10.0.2.2:3142 \
     install -y -q --no-install-recommends $pkg && rm -rf /var/lib/apt/lists/*"
"${in_vm[@]}" "systemctl poweroff" || true
for _ in $(seq 300); do kill -0 $qemu 2>/dev/null || break; sleep 0.5; done
trap - EXIT
if kill -0 $qemu 2>/dev/null; then kill $qemu; echo "the VM did not power off" >&2; exit 1; fi
qemu-img convert -O qcow2 "$w/work.qcow2" "$w/out.qcow2"
"""


def workload_vm(run, kiln, rep):
    """Workload 7: a server image gains one package, and the VM image made
    from it must follow. kiln: the Dockerfile changes, `kiln bake` rebuilds
    the image (apt-get on this machine), writes the disk from its layers,
    converts it to qcow2 and boot-tests it in QEMU. Packer-style: boot the
    base VM disk in QEMU, install the package over SSH inside it, power off,
    convert the disk to qcow2 (no boot test afterwards). Both under
    software emulation, the same base, the same apt cache."""
    factory = WORK / "vm/factory"
    forget_old_vm_versions(kiln)
    server_dockerfile("apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y"
                      f" --no-install-recommends {VM_PACKAGE} && rm -rf /var/lib/apt/lists/*"
                      f" && echo run-{rep}-{time.time_ns()} > /etc/bench-run")
    run.measure(kiln, VM_ROW, rep, [[str(KILN), "bake", "-f", str(factory / "kiln.toml")]])
    script = WORK / "vm/packer-style.sh"
    script.write_text(PACKER_STYLE)

    class Packer:
        name, env = "packer-style", None
    run.measure(Packer, VM_ROW, rep,
                [["bash", str(script), str(WORK / "vm/packer-run"), str(WORK / "vm/base-disk/base.raw"),
                  str(WORK / "vm/key"), VM_PACKAGE, str(VM_SSH_PORT)]])


def forget_old_vm_versions(kiln):
    """Every kept version of the VM image but the newest, removed (not
    measured): each run keeps a disk of about 1 GiB."""
    kept = json.loads(subprocess.check_output([str(KILN), "vm", "ls", "--json"], env=kiln.env, text=True))
    versions = sorted((v["version"] for v in kept if v["name"] == "server-disk"), key=lambda v: [int(x) for x in v.split(".")])
    for v in versions[:-1]:
        quiet([str(KILN), "vm", "rm", f"server-disk:{v}"], env=kiln.env)


def vm_baseline(kiln):
    """The server image and its VM image as they were before the change,
    baked once (not measured), so each run is a changed definition."""
    server_dockerfile("echo baseline > /etc/bench-run")
    quiet([str(KILN), "bake", "-f", str(WORK / "vm/factory/kiln.toml")], env=kiln.env)


def workload_floor(run, rep):
    os.sync()
    secs, kib = timed([[str(FLOOR), str(WORK / "large/data")]])
    run.record("floor", "large COPY floor (read + sha256 + gzip)", rep, secs, kib)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated: " + ", ".join(WORKLOADS))
    ap.add_argument("--table", metavar="TSV", help="only print the table of an earlier run")
    ap.add_argument("--settle", type=float, default=61,
                    help="seconds to wait after each cleanup before cold runs (default 61)")
    args = ap.parse_args()
    if args.table:
        print(table(Path(args.table)))
        return
    only = set(args.only.split(","))
    if only - set(WORKLOADS):
        sys.exit(f"unknown workloads: {', '.join(sorted(only - set(WORKLOADS)))}")
    if "publish" in only:
        only |= {"chain", "large"}  # publish pushes what those built, forgets it, pulls it back
    WORK.mkdir(parents=True, exist_ok=True)
    apt_cache()
    make_inputs()
    make_vm_inputs()
    bases_registry = Registry(BASES_PORT)
    bases_registry.start()
    registries = {name: Registry(port) for name, port in PUBLISH_PORTS.items()}
    kiln = Kiln(WORK / "kiln-store")
    buildah = Buildah(WORK / "buildah")
    buildkit = BuildKit(engine())
    tools = [kiln, buildah, buildkit]
    try:
        import_bases(kiln, buildah, buildkit)
        run = Run()
        (WORK / "gaps.tsv").write_text("")
        for rep in range(1, args.reps + 1):
            log(f"--- repetition {rep} of {args.reps}")
            # Each phase: every tool forgets, the disk settles, then each
            # tool in turn.
            if "chain" in only or "bake" in only:
                for tool in tools:
                    tool.forget(everything(tool))
                baker = bake_forget() if "bake" in only else None
                settle(args.settle)
                if "chain" in only:
                    for tool in tools:
                        workload_chain(run, tool, rep)
                if baker:
                    workload_bake(run, baker, rep)
            if "large" in only:
                phase(tools, ["bench/large:1"], args.settle, lambda t: workload_large(run, t, rep))
            if "publish" in only:
                for tool in tools:
                    workload_push(run, tool, rep, registries[tool.name])
                phase(tools, None, args.settle, lambda t: workload_pull(run, t, rep))
                for r in registries.values():
                    r.stop()
            if "floor" in only:
                workload_floor(run, rep)
            if "multistage" in only:
                phase(tools, ["bench/hello:1"], args.settle, lambda t: workload_multistage(run, t, rep))
            if "aptbuild" in only:
                phase(tools, ["bench/apthello:1"], args.settle, lambda t: workload_aptbuild(run, t, rep))
                step_gap(kiln)
            if "cross" in only:
                phase(tools, ["bench/prog-emulated:1", "bench/prog-cross:1"], args.settle,
                      lambda t: workload_cross(run, t, rep))
            if "vm" in only:
                vm_baseline(kiln)
                settle(args.settle)
                workload_vm(run, kiln, rep)
    finally:
        bases_registry.stop()
        for r in registries.values():
            r.stop()
    # a partial run (--only) keeps the full table and writes its own beside it
    partial = set(WORKLOADS) - only
    text = header(args.reps, "" if not partial else f" --only {','.join(sorted(only))}") + table(run.results)
    name = "results.md" if not partial else f"results-{'-'.join(sorted(only))}.md"
    (REPO / "bench" / name).write_text(text)
    print(text)


def header(reps, only=""):
    def version(cmd):
        try:
            return subprocess.check_output(cmd, text=True, stderr=subprocess.DEVNULL).splitlines()[0].strip()
        except (OSError, subprocess.CalledProcessError, IndexError):
            return "?"

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    mem = int(next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal"))) / (1 << 20)
    commit = version(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    return (
        f"Measured {time.strftime('%Y-%m-%d')} with `bench/run.sh {reps}{only}` ({reps} repetitions, interleaved), "
        f"kiln {commit}, {version(['buildah', '--version'])}, {version([DOCKER, 'version', '-f', 'Docker engine {{.Server.Version}}'])}.\n"
        f"Machine: {os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {platform.system()} {platform.release()}, "
        f"{version(['sh', '-c', '. /etc/os-release && echo $PRETTY_NAME'])}.\n\n"
    )


def table(tsv):
    """Markdown: per workload, each tool's median (min-max) and peak memory,
    and kiln's median as a ratio to each peer's."""
    rows = {}
    for line in Path(tsv).read_text().splitlines():
        tool, workload, _rep, secs, kib = line.split("\t")
        r = rows.setdefault(workload, {}).setdefault(tool, {"secs": [], "kib": []})
        r["secs"].append(float(secs))
        r["kib"].append(int(kib))

    # Workload 5 compares kiln bake with the peers building the four images
    # of the chain one after another: their "chain" runs of the same run.
    for mode, chain_row in [("cold", "chain: cold"), ("nothing changed", "chain: warm, nothing changed"),
                            ("one app file changed", "chain: one app file changed")]:
        bake = rows.get(f"bake: {mode}")
        if bake:
            for peer in ["buildah", "buildkit"]:
                if peer in rows.get(chain_row, {}):
                    bake[peer] = rows[chain_row][peer]

    def med(workload, tool):
        r = rows.get(workload, {}).get(tool)
        return statistics.median(r["secs"]) if r else None

    def cell(workload, tool):
        r = rows.get(workload, {}).get(tool)
        if not r:
            return "–"
        s = r["secs"]
        return f"{statistics.median(s):.2f}s ({min(s):.2f}–{max(s):.2f}), {max(r['kib']) // 1024} MiB"

    out = ["| workload | kiln | buildah | BuildKit | kiln/buildah | kiln/BuildKit |", "|---|---|---|---|---|---|"]
    for workload in rows:
        if workload.startswith("large COPY floor") or workload == VM_ROW:
            continue
        ratios = []
        for peer in ["buildah", "buildkit"]:
            k, p = med(workload, "kiln"), med(workload, peer)
            ratios.append(f"{k / p:.2f}" if k and p else "–")
        out.append(f"| {workload} | {cell(workload, 'kiln')} | {cell(workload, 'buildah')} | "
                   f"{cell(workload, 'buildkit')} | {' | '.join(ratios)} |")

    if len(out) == 2:
        out = []  # a run of the VM workload alone
    notes = []
    large, push = "large COPY (1 GiB, 1500 files): cold build", "push: large image"
    floor = next((w for w in rows if w.startswith("large COPY floor")), None)
    if floor:
        f = med(floor, "floor")
        notes.append(f"Floor of the large COPY on this machine (every file read once, sha256, gzip at kiln's level on every core "
                     f"as kiln compresses, no writes; `floor` in crates/kiln-oci/examples): {cell(floor, 'floor')}.")
        build_push = {t: (med(large, t) or 0) + (med(push, t) or 0) for t in TOOLS}
        if build_push["kiln"]:
            parts = ", ".join(f"{t} {build_push[t]:.2f}s ({build_push[t] / f:.2f}x)" for t in TOOLS if build_push[t])
            notes.append(f"Large COPY build + push, medians, and as a multiple of the floor: {parts}.")
    size = du(WORK / "large/data") if (WORK / "large/data").exists() else None
    if size and rows.get(push):
        parts = ", ".join(f"{t} {size / (1 << 20) / med(push, t):.0f} MiB/s" for t in TOOLS if med(push, t))
        notes.append(f"Push throughput of the large image (its {size / (1 << 30):.2f} GiB of files per second "
                     f"of push): {parts}.")
    emu, crs = "arm64 C program, emulated: cold", "arm64 C program, cross: cold"
    if rows.get(emu) and rows.get(crs):
        parts = ", ".join(f"{t} {med(emu, t) / med(crs, t):.1f}x" for t in TOOLS if med(emu, t) and med(crs, t))
        notes.append("The same arm64 program, emulated (gcc of an arm64 Debian under QEMU user emulation) against "
                     f"cross-compiled (aarch64-linux-gnu-gcc in a $BUILDPLATFORM stage): emulated/cross {parts}. "
                     "buildah 1.28 runs only the emulated path: under --platform linux/arm64 it does not find the "
                     "local $BUILDPLATFORM base (\"image not known\").")
    gaps = [float(x) for x in (WORK / "gaps.tsv").read_text().split()] if (WORK / "gaps.tsv").exists() else []
    if gaps and rows.get(APTBUILD_ROW):
        notes.append("Step gap in kiln's aptbuild build (from the apt RUN's last output line to the next step's "
                     f"first line, one cold build per repetition): median {statistics.median(gaps):.2f}s "
                     f"({min(gaps):.2f}–{max(gaps):.2f}).")
    if rows.get(VM_ROW):
        k, p = med(VM_ROW, "kiln"), med(VM_ROW, "packer-style")
        ratio = f"{k / p:.2f}" if k and p else "–"
        out += ["", "| workload | kiln bake | Packer-style loop | kiln/Packer-style |", "|---|---|---|---|",
                f"| {VM_ROW} | {cell(VM_ROW, 'kiln')} | {cell(VM_ROW, 'packer-style')} | {ratio} |"]
        notes.append(f"VM image: kiln bake after the server image's Dockerfile gains `{VM_PACKAGE}` — the image "
                     "rebuilt (apt-get on this machine), the disk written from its layers, converted to qcow2 and "
                     "boot-tested in QEMU until multi-user with the package checked inside — against the "
                     "Packer-style loop on the same base disk: boot it in QEMU, wait for SSH, apt-get install "
                     "inside it, power off, convert to qcow2 (not boot-tested again). Both under software "
                     "emulation (TCG), the same apt cache.")
    notes.append("Peak memory: the largest resident set of the tool's processes; for BuildKit, the Docker "
                 "engine's process tree (sampled every 50 ms) plus the client. kiln bake is compared with the "
                 "peers' chain runs (the four images built one after another).")
    return "\n".join(out) + "\n\n" + "\n\n".join(notes) + "\n"


def du(path):
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


if __name__ == "__main__":
    try:
        main()
    except Failed as e:
        sys.exit(f"benchmark failed: {e}")
