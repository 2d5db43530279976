"""Startup benchmark of the local platform, measured as a user sees it, beside what a user would do without it.

Each run starts a fresh LocalPlatform (temp data dir, own ports) and measures, by section (`--sections`):

  spawn    platform start → healthy, with the moment each component answered; login → spawn form (headless
           Chromium through the provider's form); from clicking Start (cpu profile): the hub API reports the
           server ready, /user/<name>/lab answers 200, the JupyterLab launcher is rendered — with the spawn's
           breakdown from the hub's log (the single-user server logs there too, with timestamps):
             hub: Start → options applied       the POST, the form read back, quota and budget checks
             hub: options → process started     pre-spawn (the team's MLflow experiment is made meanwhile),
                                                the server's environment, the process started
             server: interpreter and imports    → the server's first log line
             server: extensions → listening     extensions linked and loaded, the port bound
             hub: listening → spawn done        the hub sees it up, adds the proxy route
             hub API reports it ready           (this bench polls every 0.2 s)
             /lab: OAuth with the hub → 200     the server's OAuth with the hub, the page itself
             browser: JupyterLab → launcher     scripts, settings, extensions until the launcher is drawn
           then the server's stop. `CPU s <phase>: <part>` rows: CPU seconds each part used in the login, from Start
           to ready and from ready to the launcher (this bench's Chromium, the hub, the provider, the proxy, the
           user's server): wall-clock figures follow the machine's load, these much less. Then the same user
           starts a server again in the same browser (its cache warm, as for a returning user): Start → launcher.
  spark    the same word count (a generated text) through the platform's local Spark backend
           (`mlplatform.spark`'s LocalSparkBackend: submit → COMPLETED, its status polled every 0.1 s) and
           with a bare `spark-submit` of the same script, arguments, master and driver memory; their ratio.
  memory   as after `mlplatform-local up` (the Ray head started with the platform), two users' servers
           (alice, bob) and one model deployed from alice's server environment with the platform's own
           `mlplatform.serving.deploy`; after a settle, RSS (and PSS, which counts shared pages once) per
           component: hub, proxy, platform service, idle culler, OIDC provider, MLflow, S3, Git server, each
           user's server, the Ray head's processes by kind (GCS, raylet, dashboard, Serve controller, proxy,
           replicas, ...); sums with and without Ray.

Figures are medians over `--runs` with their spread (min–max).

    .venv/bin/python bench/startup.py --runs 3 --port-base 60000
    .venv/bin/python bench/startup.py --runs 5 --port-base 60000 --sections spawn

Ports: hub = port base; +1 proxy API, +80 provider, +81 hub API, +82 platform service, +83 Git server,
+300..+307 S3, +500 MLflow, +600..+799 Ray. Everything started is stopped at the end of each run, also on
errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hub_config.local.platform import LocalPlatform, Ports  # noqa: E402
from tests.support.hub import PASSWORDS, HubClient  # noqa: E402
from tests.support.spark_jobs import WORDCOUNT  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
# As in tests/browser: Debian's chromium, no sandbox (containers), no background traffic.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

USER = "alice"
PROFILE = "team-vision/cpu"  # the spawn itself is what is measured; a GPU profile starts the same process
POLL = 0.2
SECTIONS = ("spawn", "spark", "memory")


def poll(what: str, check, timeout: float, interval: float = POLL) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


def new_platform(port_base: int, data_dir: Path) -> LocalPlatform:
    return LocalPlatform(data_dir=data_dir, ports=Ports(hub=port_base, sso=port_base + 80, mlflow=port_base + 500))


def platform_start(platform: LocalPlatform, r: dict[str, float]) -> None:
    t = time.perf_counter()
    platform.start()
    r["platform start → healthy"] = time.perf_counter() - t
    for name in ("sso", "git", "s3", "hub", "mlflow"):  # all start at once; the hub after the provider answered
        r[f"  {name} ready after start"] = platform.ready_after[name]


# --- spawn -------------------------------------------------------------------------------------------------

LOG_LINE = re.compile(r"^\[\w (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) (\S+?)[\] ]")
SERVER_LOGGERS = ("ServerApp", "JupyterHubSingleUser", "LabApp")


def log_marks(log: Path, user: str, since: float) -> dict[str, float]:
    """Wall-clock times of the spawn's steps in the hub's log (the single-user server writes to it too)."""
    marks: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        m = LOG_LINE.match(line)
        if not m:
            continue
        at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        if at < since - 0.002:  # the log's milliseconds are truncated
            continue
        logger = m.group(2)
        if "Applied profile" in line and f" to {user} " in line:
            marks.setdefault("applied", at)
        elif "Spawning " in line and "jupyterhub-singleuser" in line:
            marks.setdefault("spawning", at)
        elif logger in SERVER_LOGGERS and "spawning" in marks:
            marks.setdefault("server first line", at)
            if "is running at" in line:
                marks.setdefault("listening", at)
        elif f"User {user} took" in line:
            marks.setdefault("spawn done", at)
    return marks


def spawn_breakdown(marks: dict[str, float], clicked: float, ready: float) -> dict[str, float]:
    steps = [("  hub: Start → options applied", "clicked", "applied"),
             ("  hub: options → process started", "applied", "spawning"),
             ("  server: interpreter and imports", "spawning", "server first line"),
             ("  server: extensions → listening", "server first line", "listening"),
             ("  hub: listening → spawn done", "listening", "spawn done"),
             ("  hub API reports it ready", "spawn done", "ready")]
    at = {**marks, "clicked": clicked, "ready": ready}
    return {name: at[b] - at[a] for name, a, b in steps if a in at and b in at}


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process (0 for one that is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def spawn_cpu(platform: LocalPlatform) -> dict[str, float]:
    """CPU seconds so far of what a login and a spawn keep busy: the hub's processes by part (hub_part), the OIDC
    provider, and this bench's headless Chromium (every process of it). On a shared machine the wall-clock
    figures depend on the load; these do much less. Processes that ended meanwhile are not counted."""
    tree = children_of()
    parts: dict[str, float] = {}
    for pid in descendants(platform.processes["hub"].pid, tree):
        part = hub_part(pid)
        part = "server" if part.startswith("server of") else part
        parts[part] = parts.get(part, 0.0) + cpu_seconds(pid)
    parts["OIDC provider"] = sum(cpu_seconds(pid) for pid in descendants(platform.processes["sso"].pid, tree))
    parts["browser"] = sum(cpu_seconds(pid) for pid in descendants(os.getpid(), tree) if "chromium" in cmdline(pid))
    return parts


def cpu_rows(phase: str, before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    rows = {f"  CPU s {phase}: {part}": after.get(part, 0.0) - before.get(part, 0.0)
            for part in ("browser", "hub", "OIDC provider", "proxy", "server")}
    return {name: value for name, value in rows.items() if value > 0 or "server" not in name}


def spawn_section(platform: LocalPlatform, browser, r: dict[str, float]) -> None:
    context = browser.new_context(base_url=platform.hub_url)
    try:
        page = context.new_page()
        page.set_default_timeout(60_000)
        api = context.request  # shares the browser's cookies: the hub API as the logged-in user

        def hub_headers() -> dict:
            # The hub's own XSRF cookie (JupyterLab sets another one under /user/<name>/).
            xsrf = [c["value"] for c in context.cookies(platform.hub_url + "/hub/") if c["name"] == "_xsrf"
                    and c["path"].startswith("/hub")]
            return {"X-XSRFToken": xsrf[0] if xsrf else ""}

        def user_model() -> dict:
            resp = api.get(f"/hub/api/users/{USER}", headers=hub_headers())
            assert resp.ok, f"hub API: {resp.status} {resp.text()[:200]}"
            return resp.json()

        cpu = spawn_cpu(platform)
        t = time.perf_counter()
        page.goto("/hub/login")
        page.fill("#kc-form-login input[name=username]", USER)
        page.fill("#kc-form-login input[name=password]", PASSWORDS[USER])
        page.click("#kc-login")
        page.wait_for_selector("#spawn_form input[name=profile]")
        r["login → spawn form"] = time.perf_counter() - t
        cpu, before = spawn_cpu(platform), cpu
        r.update(cpu_rows("login", before, cpu))

        page.check(f"#spawn_form input[name=profile][value='{PROFILE}']")
        clicked, t = time.time(), time.perf_counter()
        page.click("#spawn_form button[type=submit]")
        poll("server ready in the hub API", lambda: (user_model()["servers"].get("") or {}).get("ready"), 120)
        ready = time.time()
        r["Start → server ready (hub API)"] = time.perf_counter() - t
        cpu, before = spawn_cpu(platform), cpu
        r.update(cpu_rows("Start → ready", before, cpu))
        r.update(spawn_breakdown(log_marks(platform.logs / "hub.log", USER, clicked), clicked, ready))
        poll(f"/user/{USER}/lab 200", lambda: api.get(f"/user/{USER}/lab").status == 200, 60)
        r[f"Start → /user/{USER}/lab 200"] = time.perf_counter() - t
        page.wait_for_url(re.compile(rf"/user/{USER}/lab"), timeout=120_000)
        page.wait_for_selector(".jp-LauncherCard", timeout=120_000)
        r["Start → JupyterLab launcher shown"] = time.perf_counter() - t
        cpu, before = spawn_cpu(platform), cpu
        r.update(cpu_rows("ready → launcher", before, cpu))
        r["  /lab: OAuth with the hub → 200"] = r[f"Start → /user/{USER}/lab 200"] - r["Start → server ready (hub API)"]
        r["  browser: JupyterLab → launcher"] = r["Start → JupyterLab launcher shown"] - r[f"Start → /user/{USER}/lab 200"]

        def stop() -> float:
            t = time.perf_counter()
            resp = api.delete(f"/hub/api/users/{USER}/server", headers=hub_headers())
            assert resp.status in (202, 204), f"stop: {resp.status} {resp.text()[:200]}"
            poll("server stopped", lambda: not user_model()["servers"], 60)
            return time.perf_counter() - t

        r["server stop"] = stop()

        # The same user starts a server again in the same browser: what a returning user sees. The figures above
        # are a first visit (a new browser profile: JupyterLab's ~5 MB of scripts fetched and compiled afresh);
        # here the browser's cache holds them (same URLs: /user/<name>/static/...).
        page.goto("/hub/spawn")
        page.check(f"#spawn_form input[name=profile][value='{PROFILE}']")
        cpu, t = spawn_cpu(platform), time.perf_counter()
        page.click("#spawn_form button[type=submit]")
        page.wait_for_url(re.compile(rf"/user/{USER}/lab"), timeout=120_000)
        page.wait_for_selector(".jp-LauncherCard", timeout=120_000)
        r["Start → launcher again (browser cache warm)"] = time.perf_counter() - t
        cpu, before = spawn_cpu(platform), cpu
        r["  CPU s again: browser"] = cpu["browser"] - before.get("browser", 0.0)
        r["  CPU s again: server"] = cpu.get("server", 0.0) - before.get("server", 0.0)
        stop()
    finally:
        context.close()


# --- spark -------------------------------------------------------------------------------------------------

SPARK_JOB = {"executors": 2, "driver_memory": "512m"}  # local[2] on a 2-core machine


def spark_inputs(folder: Path, megabytes: int) -> Path:
    """The job and its input: `megabytes` MB of words drawn from a 5000-word vocabulary (seeded)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "wordcount.py").write_text(textwrap.dedent(WORDCOUNT))
    rng = random.Random(13)
    vocabulary = [f"w{i}" for i in range(5000)]
    with open(folder / "words.txt", "w") as f:
        while f.tell() < megabytes * 2**20:
            f.write(" ".join(rng.choices(vocabulary, k=2000)) + "\n")
    return folder


def bare_spark_submit(folder: Path, target: str) -> float:
    """The same job as a user would run it by hand: spark-submit, on loopback, with a free UI port as the
    platform's backend uses."""
    from mlplatform.spark.local import _free_port, default_spark_submit

    command = [str(default_spark_submit()), "--master", f"local[{SPARK_JOB['executors']}]",
               "--driver-memory", SPARK_JOB["driver_memory"], "--conf", f"spark.ui.port={_free_port()}",
               "wordcount.py", "words.txt", target]
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
           "PYSPARK_DRIVER_PYTHON": sys.executable}
    t = time.perf_counter()
    subprocess.run(command, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t


def platform_spark(folder: Path, state: Path, target: str) -> float:
    from mlplatform import spark
    from mlplatform.spark import LocalSparkBackend

    backend = LocalSparkBackend(state, user="bench", cwd=folder)
    t = time.perf_counter()
    app_id = backend.submit(spark.SparkJob(name="wordcount", main_file="wordcount.py",
                                           arguments=["words.txt", target], **SPARK_JOB))["app_id"]
    poll("the word count", lambda: backend.status(app_id)["state"] in ("COMPLETED", "FAILED"), 300, 0.1)
    took = time.perf_counter() - t
    assert backend.status(app_id)["state"] == "COMPLETED", backend.logs(app_id, tail=30)["text"]
    return took


def spark_section(tmp: Path, megabytes: int, run: int, r: dict[str, float]) -> None:
    folder = spark_inputs(tmp / "spark", megabytes)
    first, second = (bare_spark_submit, platform_spark) if run % 2 == 0 else (platform_spark, bare_spark_submit)
    for job in (first, second):  # the order alternates between runs
        if job is bare_spark_submit:
            r["spark: bare spark-submit → exit"] = job(folder, f"out-bare-{run}")
        else:
            r["spark: platform submit → COMPLETED"] = job(folder, tmp / "spark-state", f"out-platform-{run}")
    r["spark: platform / bare (ratio)"] = r["spark: platform submit → COMPLETED"] / r["spark: bare spark-submit → exit"]


# --- memory ------------------------------------------------------------------------------------------------

DEPLOY = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, sys.argv[1])
    from mlplatform import serving
    from tests.support.mlflow_models import register_model, unique_name
    version = register_model(os.environ["MLFLOW_TRACKING_URI"], unique_name("bench-iris"),
                             experiment=os.environ["MLFLOW_EXPERIMENT_NAME"])
    status = serving.deploy("bench-iris", version.uri, cpus=0.5, wait=True, timeout=300)
    assert status["state"] == "running", status
""")
# The first marker found in a Ray process's command line names its kind (agents before the dashboard).
RAY_KINDS = (("gcs_server", "GCS"), ("raylet", "raylet"), ("ray::DashboardAgent", "dashboard agent"),
             ("dashboard/agent.py", "dashboard agent"), ("ray::RuntimeEnvAgent", "runtime env agent"),
             ("runtime_env/agent", "runtime env agent"), ("ray-dashboard-", "dashboard module"),
             ("dashboard", "dashboard"), ("ServeController", "Serve controller"), ("ProxyActor", "Serve proxy"),
             ("HAProxyManager", "Serve HAProxy manager"), ("gateway/haproxy.cfg", "rollout gateway (HAProxy)"),
             ("haproxy", "HAProxy"),
             ("ServeReplica:spare.", "Serve warm spare"), ("ServeReplica", "Serve replica"),
             ("ray::IDLE", "idle worker"), ("log_monitor", "log monitor"), ("monitor.py", "monitor"))


def memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in kB; (0, 0) for a process that is gone."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return 0, 0
    values = {line.split(":")[0]: int(line.split()[1]) for line in rollup[1:] if line.split()[-1] == "kB"}
    return values.get("Rss", 0), values.get("Pss", 0)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def children_of() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int, tree: dict[int, list[int]]) -> list[int]:
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(tree.get(p, []))
    return found


def hub_part(pid: int) -> str:
    command = cmdline(pid)
    if "configurable-http-proxy" in command:
        return "proxy"
    if "jupyterhub-singleuser" in command or "ipykernel" in command:
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            user = next(e.split(b"=", 1)[1].decode() for e in environ if e.startswith(b"JUPYTERHUB_USER="))
        except (OSError, StopIteration):
            user = "?"
        return f"server of {user}"
    if "mlplatform-service" in command or "mlplatform_service" in command:
        return "platform service"
    if "idle_culler" in command:
        return "idle culler"
    return "hub"


def ray_part(pid: int) -> str:
    command = cmdline(pid)
    return "Ray: " + next((kind for marker, kind in RAY_KINDS if marker in command), "other")


def memory_by_component(platform: LocalPlatform) -> dict[str, tuple[int, int, int]]:
    """{component: (RSS kB, PSS kB, processes)}."""
    from mlplatform.serving.local import LocalRayConfig, LocalRayHead

    tree = children_of()
    parts: dict[str, list[int]] = {}
    names = {"sso": "OIDC provider", "mlflow": "MLflow", "s3": "S3 (SeaweedFS)", "git": "Git server"}
    for name, proc in platform.processes.items():
        for pid in descendants(proc.pid, tree):
            parts.setdefault(hub_part(pid) if name == "hub" else names[name], []).append(pid)
    head = LocalRayHead(LocalRayConfig(port=platform.ports.ray, root=platform.ray_dir))
    for pid in head.processes():
        parts.setdefault(ray_part(pid), []).append(pid)
    result = {}
    for part, pids in parts.items():
        sizes = [memory_kb(pid) for pid in set(pids)]
        result[part] = (sum(s[0] for s in sizes), sum(s[1] for s in sizes), len(pids))
    return result


def memory_section(platform: LocalPlatform, settle: float, r: dict[str, float]) -> None:
    platform.start_ray_head()  # as `mlplatform-local up` does
    hub = HubClient(platform)
    try:
        _, alice = hub.start_server("alice")
        hub.start_server("bob")
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", DEPLOY, str(REPO)], env=alice, cwd=alice["HOME"], check=True,
                       stdout=subprocess.DEVNULL, timeout=400)
        r["memory: deploy (model registered, running)"] = time.perf_counter() - t
        time.sleep(settle)
        parts = memory_by_component(platform)
        for part, (rss, pss, count) in sorted(parts.items(), key=lambda kv: kv[0].startswith("Ray")):
            r[f"  RSS MB {part} ({count} proc.)"] = rss / 1024
        for label, ray in (("with Ray", True), ("without Ray", False)):
            chosen = [v for k, v in parts.items() if ray or not k.startswith("Ray")]
            r[f"memory: RSS MB, {label}"] = sum(v[0] for v in chosen) / 1024
            r[f"memory: PSS MB, {label}"] = sum(v[1] for v in chosen) / 1024
            r[f"memory: processes, {label}"] = sum(v[2] for v in chosen)
        r["memory: RSS MB, Ray alone"] = sum(v[0] for k, v in parts.items() if k.startswith("Ray")) / 1024
        r["memory: PSS MB, Ray alone"] = sum(v[1] for k, v in parts.items() if k.startswith("Ray")) / 1024
        # Ray's own processes (the head's and Serve's system actors), without the model's replica and the spare, and
        # without the platform's rollout gateway, a process of the head that is not Ray's.
        own = [v for k, v in parts.items() if k.startswith("Ray") and not any(
            other in k for other in ("Serve replica", "warm spare", "rollout gateway"))]
        r["memory: RSS MB, Ray's own processes (no replicas)"] = sum(v[0] for v in own) / 1024
        r["memory: PSS MB, Ray's own processes (no replicas)"] = sum(v[1] for v in own) / 1024
    finally:
        hub.stop_all()


# --- the runs ----------------------------------------------------------------------------------------------

def one_run(args, run: int, browser) -> dict[str, float]:
    r: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="mlplatform-bench-") as tmp:
        if "spark" in args.sections:  # before the platform: the jobs alone on the machine
            spark_section(Path(tmp), args.spark_mb, run, r)
        if {"spawn", "memory"} & set(args.sections):
            platform = new_platform(args.port_base, Path(tmp) / "platform")
            try:
                platform_start(platform, r)
                if "spawn" in args.sections:
                    spawn_section(platform, browser, r)
                if "memory" in args.sections:
                    memory_section(platform, args.settle, r)
            finally:
                t = time.perf_counter()
                platform.stop()
                r["platform stop"] = time.perf_counter() - t
    return r


def table(runs: list[dict[str, float]]) -> str:
    names = list(dict.fromkeys(name for run in runs for name in run))  # first-seen order
    width = max(map(len, names))
    lines = [f"{'measure (s unless named)':<{width}}  {'median':>8}  {'spread (min–max)':>17}  n={len(runs)}"]
    for name in names:
        values = [run[name] for run in runs if name in run]
        lines.append(f"{name:<{width}}  {statistics.median(values):8.2f}  {min(values):8.2f}–{max(values):<8.2f}"
                     f"{'' if len(values) == len(runs) else f'  (n={len(values)})'}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="fresh platforms to start (default 3)")
    p.add_argument("--port-base", type=int, default=38000,
                   help="hub port; the others from it (see above; default 38000)")
    p.add_argument("--sections", type=lambda s: s.split(","), default=list(SECTIONS),
                   help=f"comma-separated, of {', '.join(SECTIONS)} (default: all)")
    p.add_argument("--spark-mb", type=int, default=10, help="size of the word count's input (default 10 MB)")
    p.add_argument("--settle", type=float, default=15, help="seconds idle before memory is read (default 15)")
    args = p.parse_args(argv)
    if unknown := set(args.sections) - set(SECTIONS):
        p.error(f"unknown sections {sorted(unknown)}; allowed: {', '.join(SECTIONS)}")

    def terminated(signum, frame):
        raise KeyboardInterrupt  # so the finally blocks stop every process

    signal.signal(signal.SIGTERM, terminated)
    runs: list[dict[str, float]] = []
    try:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS) if "spawn" in args.sections else None
            try:
                for i in range(args.runs):
                    runs.append(one_run(args, i, browser))
                    print(f"run {i + 1}/{args.runs}: " + ", ".join(f"{k.strip()} {v:.2f}"
                                                                  for k, v in runs[-1].items()), flush=True)
            finally:
                if browser is not None:
                    browser.close()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    except Exception as e:  # report what was measured so far; the platform is already stopped
        print(f"run {len(runs) + 1} failed: {type(e).__name__}: {e}", file=sys.stderr)
    if runs:
        print()
        print(table(runs))
    return 0 if len(runs) == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
