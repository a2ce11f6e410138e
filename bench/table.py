"""Turns bench/run.sh's measurements (tool, workload, repetition, seconds,
peak KiB) into a Markdown table: per workload and tool the median time, the
spread (min-max), the peak memory, and kiln's time as a ratio to each peer."""
import statistics
import sys
from collections import defaultdict

rows = defaultdict(list)
order = []
for line in open(sys.argv[1]):
    tool, workload, _rep, secs, kb = line.rstrip("\n").split("\t")
    if workload not in order:
        order.append(workload)
    rows[(workload, tool)].append((float(secs), int(kb)))

tools = ["kiln", "buildah", "buildkit"]
print("| workload | " + " | ".join(f"{t} median (min-max), peak" for t in tools)
      + " | kiln/buildah | kiln/buildkit |")
print("|---" * (len(tools) + 3) + "|")
for w in order:
    cells, med = [], {}
    for t in tools:
        m = rows.get((w, t))
        if not m:
            cells.append("-")
            continue
        secs = [s for s, _ in m]
        med[t] = statistics.median(secs)
        peak = max(k for _, k in m) / 1024
        cells.append(f"{med[t]:.2f}s ({min(secs):.2f}-{max(secs):.2f}), {peak:.0f} MiB")
    ratios = [f"{med['kiln'] / med[p]:.2f}" if "kiln" in med and med.get(p) else "-"
              for p in ("buildah", "buildkit")]
    print(f"| {w} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
print()
print("Peak memory is the client process's (for BuildKit the work happens in dockerd,"
      " so its figure understates BuildKit's memory).")
