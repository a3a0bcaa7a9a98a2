"""Ask a running JupyterLab what it serves: start one, read its REST API, stop it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Sequence


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def query(command: Sequence[str | os.PathLike], paths: Sequence[str], *, cwd: Path, env: dict,
          timeout_s: float = 300) -> dict[str, dict]:
    """Start `command` (a `jupyter lab` without port or token options) and return {path: JSON reply}."""
    port, token = free_port(), 'fl-course-test'
    argv = [str(c) for c in command] + ['--no-browser', f'--port={port}', '--ServerApp.port_retries=0',
                                        f'--IdentityProvider.token={token}']
    if os.getuid() == 0:
        argv.append('--allow-root')
    server = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)

    def get(path: str) -> dict:
        request = urllib.request.Request(f'http://127.0.0.1:{port}{path}',
                                         headers={'Authorization': f'token {token}'})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)

    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                get('/api/status')
                break
            except OSError:
                if server.poll() is not None:
                    raise RuntimeError(f'{argv} exited:\n{server.stderr.read()}') from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f'{argv} did not answer in {timeout_s} s') from None
                time.sleep(0.5)
        return {path: get(path) for path in paths}
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def effective_settings(reply: dict) -> dict:
    """Return a plugin's settings as JupyterLab applies them (a /lab/api/settings/<id> reply): the user's
    settings over the schema's defaults, which the environment's overrides.json has already replaced."""
    defaults = {k: v.get('default') for k, v in reply['schema']['properties'].items()}
    return {**defaults, **reply['settings']}
