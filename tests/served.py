"""A real ``tvstore serve`` in a subprocess on a free port, for the server and remote-client tests.

``Served`` knows the registry's own location (to run admin commands directly,
as the person who runs the server would) and a set of tokens of every kind,
and runs the installed ``tvstore`` CLI through the server with any of them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tvstore import Registry
from tvstore.remote import RemoteRegistry

from conftest import pg_schema as conftest_pg_schema, tvstore_executable
from s3_server import DUMMY_CREDENTIALS, MotoServer, free_port

START_TIMEOUT_S = 60.0


@dataclass
class Served:
    url: str
    env: dict[str, str]  # the registry's own location (admin commands run directly)
    workdir: Path
    tokens: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    log: Path | None = None

    def run(self, *args: str, env: dict[str, str], expect: int | None = 0, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([tvstore_executable(), *map(str, args)], env=env, cwd=self.workdir, capture_output=True,
                              text=True, timeout=300, input=stdin)
        if expect is not None:
            assert proc.returncode == expect, (
                f"tvstore {' '.join(map(str, args))} exited {proc.returncode}, wanted {expect}\nstdout: {proc.stdout}\n"
                f"stderr: {proc.stderr}\nserver log: {self.log_tail()}"
            )
        return proc

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log and self.log.exists() else "(none)"

    def local(self, *args: str, expect: int | None = 0) -> subprocess.CompletedProcess[str]:
        """The CLI on the registry itself (the administrator's side)."""
        return self.run(*args, env=self.env, expect=expect)

    def remote_env(self, token: str | None) -> dict[str, str]:
        env = {k: v for k, v in self.env.items() if k not in ("TVSTORE_DATABASE_URL", "TVSTORE_BLOB_URL", "TVSTORE_HOME")}
        env["TVSTORE_REMOTE"] = self.url
        env["TVSTORE_DATABASE_URL"] = "sqlite:////nonexistent/remote-clients-never-touch-the-database.db"
        if token is not None:
            env["TVSTORE_TOKEN"] = self.tokens.get(token, token)
        return env

    def remote(self, *args: str, token: str | None = "admin", expect: int | None = 0) -> subprocess.CompletedProcess[str]:
        """The CLI through the server with one of :attr:`tokens` (or a literal secret, or none)."""
        return self.run(*args, env=self.remote_env(token), expect=expect)

    @contextlib.contextmanager
    def registry(self) -> Iterator[Registry]:
        """The registry itself, in this process: the administrator's side without a CLI start-up per call."""
        aws = {k: v for k, v in self.env.items() if k.startswith("AWS_") or k == "TVSTORE_CACHE_DIR"}
        with pytest.MonkeyPatch.context() as patch:
            for key, value in aws.items():
                patch.setenv(key, value)
            with Registry.open(database_url=self.env["TVSTORE_DATABASE_URL"], blob_url=self.env["TVSTORE_BLOB_URL"]) as reg:
                yield reg

    def client(self, token: str | None = "admin") -> RemoteRegistry:
        """``Registry.open(remote=...)`` in this process, with one of :attr:`tokens`."""
        return Registry.open(remote=self.url, token=self.tokens.get(token, token) if token else None)

    def http(self, token: str | None = "admin") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens.get(token, token)}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def start(self, *serve_args: str) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = self.workdir / f"serve-{port}.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen([tvstore_executable(), "serve", "--port", str(port), *serve_args],
                                            env=self.env, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"tvstore serve exited {self.process.returncode}: {self.log.read_text()[-2000:]}")
            try:
                httpx.get(f"{self.url}/api/schema", timeout=2)
                return
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()
        pytest.fail(f"tvstore serve did not answer within {START_TIMEOUT_S:.0f}s: {self.log.read_text()[-2000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def make_tokens(served: Served) -> None:
    """admin, writer, reader, team-a (write, names team-a-*), revoked, expired (made in-process: fast)."""
    with Registry.open(database_url=served.env["TVSTORE_DATABASE_URL"], blob_url=str(served.workdir / "unused")) as reg:
        for name, scope, names, expires in [("admin", "admin", [], None), ("writer", "write", [], None),
                                            ("reader", "read", [], None), ("team-a", "write", ["team-a-*"], None),
                                            ("revoked", "read", [], None), ("expired", "read", [], 0.001)]:
            served.tokens[name] = reg.create_token(name, scope, names, expires)[1]
        reg.revoke_token("revoked")


def pg_schema() -> contextlib.AbstractContextManager[str]:
    """A fresh PostgreSQL schema for a module's server (the fixtures' own helper, another prefix)."""
    return conftest_pg_schema("s")


def s3_backend_env(moto: MotoServer, tmp: Path) -> tuple[str, dict[str, str]]:
    """A fresh bucket on the moto server, and the environment that reaches it."""
    import boto3

    bucket = f"tvstore-serve-{uuid.uuid4().hex[:12]}"
    env = {**DUMMY_CREDENTIALS, "AWS_ENDPOINT_URL": moto.endpoint, "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"), "TVSTORE_CACHE_DIR": str(tmp / "cache")}
    boto3.client("s3", endpoint_url=moto.endpoint, **{k.lower(): v for k, v in DUMMY_CREDENTIALS.items()
                                                      if k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")},
                 region_name="us-east-1").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/reg", env


def base_env(database_url: str, blob_url: str, extra: dict[str, str]) -> dict[str, str]:
    env = {**os.environ, **extra, "TVSTORE_DATABASE_URL": database_url, "TVSTORE_BLOB_URL": blob_url}
    for name in ("TVSTORE_HOME", "TVSTORE_REMOTE", "TVSTORE_TOKEN", "AWS_PROFILE"):
        env.pop(name, None)
    return env
