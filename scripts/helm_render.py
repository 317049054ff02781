"""`helm template` of the chart as release `vela`, parsed: what helm_check.py, helm_smoke.py and
render_k8s.py all start from."""
import subprocess
import sys
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parent.parent / "deploy" / "helm" / "vela"


def template(helm, namespace, *args):
    """The chart's objects rendered into `namespace` with `args` (`--set …`, `-f FILE`); exits
    with helm's output when it fails."""
    cmd = [str(helm), "template", "vela", str(CHART), "--namespace", namespace, *map(str, args)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return [o for o in yaml.safe_load_all(done.stdout) if o]
