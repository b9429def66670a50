"""Ray job entry point of the hub survey: the same code and arguments as ``hubscan survey``.

    ray job submit --address http://HEAD:8265 --working-dir . -- python jobs/survey.py \\
        --source hf --filter timm --limit 500 --out s3://bucket/hubscan
    ray submit deploy/cluster.yaml jobs/survey.py --source timm --out s3://bucket/hubscan

Inside a Ray job ``RAY_ADDRESS`` is set and the survey joins that cluster; elsewhere (``ray submit``
runs this on the head node) it joins the cluster running on this machine (``--address auto``) unless
``--address`` says otherwise.
"""

import os
import sys

from hubscan.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--address" not in args and not os.environ.get("RAY_ADDRESS"):
        args = ["--address", "auto", *args]
    sys.exit(main(["survey", *args]))
