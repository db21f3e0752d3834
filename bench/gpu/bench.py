"""Drives bench/gpu/run: one `plinth serve`, one service per (model, providers, batching), the load
generator (`plinth-bench load`) at concurrency 1 and 32, and a table in bench/RESULTS.md form."""
import json
import os
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
PLINTH = pathlib.Path(os.environ.get("PLINTH_BIN", ROOT / "target/release/plinth"))
LOAD = pathlib.Path(os.environ.get("PLINTH_BENCH_BIN", ROOT / "target/release/plinth-bench"))
SECS = sys.argv[1] if len(sys.argv) > 1 else "5"

MODELS = {m: w for m, w in {"mlp": 256, "mlp4096": 1024}.items() if (ROOT / "bench/models" / m).is_dir()}
PROVIDERS = [["cpu"], ["cuda"], ["tensorrt", "cuda"]]


def body(width):
    row = ",".join(f"{((i * 0.37) % 2) - 1:.4f}" for i in range(width))
    return f'{{"data": [[{row}]]}}'


def main():
    ws = pathlib.Path(tempfile.mkdtemp(prefix="plinth-gpu-bench-"))
    env = dict(os.environ, PLINTH_WORKSPACE=str(ws), PLINTH_LOG="warn")
    host = subprocess.Popen(
        [str(PLINTH), "serve", "--listen", "127.0.0.1:0", "--workspace", str(ws)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    try:
        line = host.stdout.readline()
        url = next(w for w in line.split() if w.startswith("http://"))
        env["PLINTH_HOST"] = url
        addr = url.removeprefix("http://").rstrip("/")

        def cli(*args, check=True):
            r = subprocess.run([str(PLINTH), *args], env=env, capture_output=True, text=True)
            if check and r.returncode != 0:
                raise RuntimeError(f"plinth {' '.join(args)}: {r.stderr.strip()}")
            return r

        for name in MODELS:
            cli("model", "register", "--name", name, "--path", str(ROOT / "bench/models" / name))
        rows = []
        for model, width in MODELS.items():
            for providers in PROVIDERS:
                for batching in (False, True):
                    service = f"{model}-{'-'.join(providers)}{'-b' if batching else ''}"
                    dc = {
                        "numReplicas": 1,
                        "maxConcurrentRequestsPerContainer": 8,
                        "maxQueueWaitMs": 30000,
                        "authEnabled": False,
                        "containerResourceRequirements": {"cpu": min(4, os.cpu_count() or 1), "memoryInGB": 4},
                        "executionProviders": providers,
                    }
                    if batching:
                        dc["maxBatchSize"] = 32
                        dc["maxBatchDelayMicros"] = 1000
                    path = ws / f"{service}.json"
                    path.write_text(json.dumps(dc))
                    r = cli("deploy", "--overwrite", "-m", f"{model}:1", "-n", service, "--dc", str(path), check=False)
                    label = ",".join(providers)
                    if r.returncode != 0:
                        err = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "deploy failed"
                        rows.append((model, label, batching, None, None, err))
                        continue
                    show = json.loads(cli("service", "show", service, "-o", "json").stdout)
                    served = show["versions"][0]["providers"][0]
                    serving = served["provider"] + (" (fallback)" if served.get("fallback") else "")
                    for c in (1, 32):
                        out = subprocess.run(
                            [str(LOAD), "load", addr, f"/api/v1/service/{service}/score", str(c), SECS, body(width)],
                            capture_output=True,
                            text=True,
                            check=True,
                        )
                        rows.append((model, label, batching, c, json.loads(out.stdout), serving))
                    # One service at a time holds the host's cores and GPU.
                    cli("service", "delete", service)
        print_table(rows)
    finally:
        host.terminate()
        host.wait()


def print_table(rows):
    cpu = {(m, b, c): r for (m, p, b, c, r, _) in rows if p == "cpu" and r}
    print("| model | executionProviders | serves on | batching | c | req/s | p50 µs | p99 µs | errors | vs cpu |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for model, providers, batching, c, r, serving in rows:
        b = "32 / 1 ms" if batching else "off"
        if r is None:
            print(f"| {model} | {providers} | refused: {serving} | {b} | | | | | | |")
            continue
        base = cpu.get((model, batching, c))
        ratio = f"{r['rps'] / base['rps']:.2f}×" if base and base["rps"] else ""
        print(
            f"| {model} | {providers} | {serving} | {b} | {c} | {r['rps']:.0f} | {r['p50_us']} | {r['p99_us']} "
            f"| {r['errors']} | {ratio} |"
        )


if __name__ == "__main__":
    main()
