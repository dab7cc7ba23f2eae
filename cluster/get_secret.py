#!/usr/bin/env python
"""Print one secret to stdout, for cluster start commands (installed in the image as `gmparse-secret`).

    RAY_AUTH_TOKEN="$(gmparse-secret gmparse/ray-auth-token)"

The backend comes from GMPARSE_SECRET_BACKEND (or --backend):

* aws  -- AWS Secrets Manager (boto3; region from AWS_DEFAULT_REGION / instance metadata)
* gcp  -- GCP Secret Manager, latest version (google-cloud-secret-manager; project from
          GMPARSE_GCP_PROJECT / GOOGLE_CLOUD_PROJECT or --project)
* env  -- the environment variable NAME (for local tests)
* file -- the file NAME (e.g. a mounted K8s Secret)

The value is only ever written to stdout; it is never logged or stored. Exit code 1 with a
message on stderr when the secret is missing or empty, so `VAR="$(gmparse-secret x)" && ...`
stops the node from starting without credentials.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _aws(name: str, project: str | None) -> str:
    import boto3

    return boto3.client("secretsmanager").get_secret_value(SecretId=name)["SecretString"]


def _gcp(name: str, project: str | None) -> str:
    from google.cloud import secretmanager

    project = project or os.environ.get("GMPARSE_GCP_PROJECT") or os.environ.get("GOOGLE_CLOUD_PROJECT")
    if not project:
        raise RuntimeError("set GMPARSE_GCP_PROJECT or pass --project")
    client = secretmanager.SecretManagerServiceClient()
    path = f"projects/{project}/secrets/{name}/versions/latest"
    return client.access_secret_version(request={"name": path}).payload.data.decode()


def _env(name: str, project: str | None) -> str:
    return os.environ.get(name, "")


def _file(name: str, project: str | None) -> str:
    return Path(name).read_text()


BACKENDS = {"aws": _aws, "gcp": _gcp, "env": _env, "file": _file}


def get_secret(name: str, backend: str, project: str | None = None) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown secret backend {backend!r}; choose from {sorted(BACKENDS)}")
    value = BACKENDS[backend](name, project).strip()
    if not value:
        raise RuntimeError(f"secret {name!r} ({backend}) is empty")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="secret id / name (env: variable name, file: path)")
    parser.add_argument(
        "--backend", default=os.environ.get("GMPARSE_SECRET_BACKEND", "env"), choices=sorted(BACKENDS)
    )
    parser.add_argument("--project", default=None, help="GCP project (gcp backend)")
    args = parser.parse_args(argv)
    try:
        value = get_secret(args.name, args.backend, args.project)
    except Exception as e:  # noqa: BLE001 -- report any backend failure as one line, never the value
        print(
            f"gmparse-secret: cannot read {args.name!r} from {args.backend}: {type(e).__name__}: {e}",
            file=sys.stderr,
        )
        return 1
    sys.stdout.write(value)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
