"""Write this node's secrets from AWS SSM Parameter Store into the files Ray and huggingface_hub read.

Run by ``deploy/cluster.yaml``'s setup_commands on every node, inside the container, before
``ray start``; credentials come from the node's instance profile, the region from ``AWS_REGION``.

    /hubscan/ray-auth-token  ->  ~/.ray/auth_token            required (the cluster runs RAY_AUTH_MODE=token)
    /hubscan/hf-token        ->  ~/.cache/huggingface/token   optional (gated / private repos)

Files are written with mode 0600 and never printed. ``--prefix`` changes ``/hubscan``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _hf_token_path() -> Path:
    # huggingface_hub's own rule: $HF_TOKEN_PATH, else $HF_HOME/token, else ~/.cache/huggingface/token
    if os.environ.get("HF_TOKEN_PATH"):
        return Path(os.environ["HF_TOKEN_PATH"])
    return Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "token"


def secrets(prefix: str) -> list[tuple[str, Path, bool]]:
    """(parameter name, destination file, required) for each secret."""
    prefix = "/" + prefix.strip("/")
    return [
        (f"{prefix}/ray-auth-token", Path.home() / ".ray" / "auth_token", True),
        (f"{prefix}/hf-token", _hf_token_path(), False),
    ]


def write_secret(path: Path, value: str) -> None:
    """Write ``value`` to ``path`` readable by this user only (created 0600, never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value.strip())
    os.replace(tmp, path)


def fetch(client, prefix: str = "/hubscan") -> int:
    """Fetch every secret with ``client`` (a boto3 SSM client); 0 when all required ones were written."""
    status = 0
    for name, path, required in secrets(prefix):
        try:
            value = client.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
        except client.exceptions.ParameterNotFound:
            if required:
                print(f"fetch_secrets: SSM parameter {name} not found (required)", file=sys.stderr)
                status = 1
            else:
                print(f"fetch_secrets: no {name}: skipped")
            continue
        write_secret(path, value)
        print(f"fetch_secrets: {name} -> {path}")
    return status


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prefix", default="/hubscan", help="SSM parameter path prefix (default /hubscan)")
    p.add_argument("--region", default=None, help="default: $AWS_REGION / $AWS_DEFAULT_REGION")
    args = p.parse_args(argv)
    import boto3
    return fetch(boto3.client("ssm", region_name=args.region), args.prefix)


if __name__ == "__main__":
    sys.exit(main())
